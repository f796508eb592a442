/**
 * Issue #4's DLQ drill, with payq's core functions in this process and real drivers: payments
 * produced, the checkout workers with capture-service failing 5% permanently, the DLQ fills;
 * `replay-dlq --dry-run` counts it right and changes nothing (twice, same order; the broker's own
 * depth / committed offsets / JetStream ack floor unchanged); failures switched off; replay-dlq
 * empties the DLQ; trace sees every dead-lettered payment finish. 10,000 payments on memory; 2,000
 * on Kafka, RabbitMQ and NATS JetStream (the issue asks 10,000: 2,000 gives ~90 dead letters and
 * keeps the CI under its budget).
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { replayDlq, type ReplayResult } from '../../src/core/replay.js';
import { generatedSource } from '../../src/core/sources.js';
import { trace, type TraceResult } from '../../src/core/trace.js';
import { runWorker, workerGroup } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver } from '../../src/drivers/types.js';
import { EventGenerator } from '../../src/events/generator.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';

const SEED = 404;
const FAILING_STAGE = 'capture-service';

/** checkout with destinations and groups of its own; only capture-service fails, 5% permanently. */
function drillScenario(prefix: string): Scenario {
  const config = parse(readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replaceAll('checkout.', `${prefix}.`)) as {
    name: string;
    stages: Array<{ name: string; failures: { transient: number; permanent: number } }>;
  };
  config.name = `drill-${prefix.slice(-12).replace(/[^a-z0-9]/g, '')}`;
  for (const stage of config.stages) stage.failures = { transient: 0, permanent: stage.name === FAILING_STAGE ? 0.05 : 0 };
  return parseScenario(stringify(config), 'checkout (drill copy)');
}

function startTrace(driver: Driver, scenario: Scenario, untilFinished: number): { ready: Promise<void>; done: Promise<TraceResult> } {
  let ready: () => void = () => undefined;
  const tapped = new Promise<void>((r) => (ready = r));
  // The pipeline's layout first, as its workers create it: trace only reads (it never creates).
  const done = driver.declare(scenario.destinations.map((name) => ({ name, partitions: 6, deadLetter: true }))).then(() => trace(
    {
      scenario, destinations: scenario.destinations, decode: { typeField: 'event', correlate: 'payment_id' },
      stuckAfterMs: 60_000, expect: undefined, withinMs: undefined, payment: undefined, runId: undefined,
      fromBeginning: false, idleTimeoutMs: 20_000, durationMs: 180_000, untilFinished,
    },
    { driver, clock: systemClock, onReady: () => ready() },
  ));
  return { ready: tapped, done };
}

async function rabbitDepth(queue: string): Promise<number> {
  const conn = await amqplib.connect(AMQP_URL);
  try {
    const ch = await conn.createChannel();
    return (await ch.checkQueue(queue)).messageCount;
  } finally {
    await conn.close();
  }
}

/** Offsets the group committed on `topic`, per partition (-1: none). */
async function kafkaCommitted(group: string, topic: string): Promise<string[]> {
  const admin = new Kafka({ clientId: 'payq-test', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  try {
    const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return (t?.partitions ?? []).map((p) => p.offset);
  } finally {
    await admin.disconnect();
  }
}

/** Messages in the DLQ's stream, and what the replay group has acked there (JetStream's view). */
async function natsDlq(dlq: string, group: string): Promise<{ messages: number; acked: number | undefined }> {
  const nc = await natsConnect({ servers: NATS_URL.replace('nats://', '') });
  try {
    const jsm = await jetstreamManager(nc);
    const stream = await jsm.streams.find(`payq.${dlq}._`);
    const info = await jsm.streams.info(stream);
    const consumers = [];
    for await (const c of jsm.consumers.list(stream)) consumers.push(c);
    const mine = consumers.find((c) => c.config.description?.includes(`'${group}'`));
    return { messages: info.state.messages, acked: mine?.ack_floor.stream_seq };
  } finally {
    await nc.close();
  }
}

// PAYQ_TEST_DRILL_PAYMENTS=10000 runs the brokers' drills at the issue's full size.
const brokerPayments = process.env['PAYQ_TEST_DRILL_PAYMENTS'] ? Number(process.env['PAYQ_TEST_DRILL_PAYMENTS']) : 2_000;
for (const [name, url, payments] of [
  // The drill reads the DLQs after trace has read them: the memory broker keeps them (retain).
  ['memory', `memory://replay-drill-${process.pid}?retain=1000000`, 10_000],
  ['Kafka', KAFKA_URL, brokerPayments],
  ['RabbitMQ', AMQP_URL, brokerPayments],
  ['NATS', NATS_URL, brokerPayments],
] as const) {
  describe(`DLQ drill on ${name}`, async () => {
    const up = name === 'memory' ? true : await brokerAvailable(url);

    it.skipIf(!up)(`${payments} payments, 5% dead-lettered at ${FAILING_STAGE}: dry run changes nothing, replay empties the DLQ, every payment completes`, async () => {
      const prefix = uniqueName('drill');
      const scenario = drillScenario(prefix);
      const group = `${prefix}.replay`;
      const capture = scenario.stages.find((s) => s.name === FAILING_STAGE)!.destination;
      const dlqs = scenario.destinations.map((d) => `${d}.dlq`);
      const driver = await createDriver(url);
      await driver.connect();
      const phase1 = new AbortController();
      const phase2 = new AbortController();
      const replay = (dryRun: boolean): Promise<ReplayResult> =>
        replayDlq({ dlqs, dryRun, filter: {}, group, idleTimeoutMs: 2000, listMessages: dryRun }, { driver, clock: systemClock });
      try {
        // 1. The pipeline with the failure on; trace accounts for every payment.
        const traced1 = startTrace(driver, scenario, payments);
        await traced1.ready;
        const working1 = runWorker({ scenario, timeScale: 0, seed: 9, prefetch: 200 }, { driver, clock: systemClock, signal: phase1.signal });
        const produced = await produce(
          { destination: scenario.destinationFor(scenario.entry), encode: { binding: driver.headerBinding, sourcePrefix: '/payq/drill', runId: prefix } },
          { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario, seed: SEED, payments, lifecycle: false })) },
        );
        expect(produced.acked).toBe(payments);
        const t1 = await traced1.done;
        phase1.abort();
        const w1 = await working1;
        const dead = w1.totals.dead_lettered_total;
        expect(t1.payments).toMatchObject({ seen: payments, finished: payments, stuck: 0 });
        expect(t1.payments.by_class['dead-lettered']).toBe(dead);
        expect(dead).toBeGreaterThan(payments * 0.93 * 0.05 * 0.6);
        expect(w1.stages.find((s) => s.stage === FAILING_STAGE)!.dead_lettered_total).toBe(dead);

        // 2. Dry run, twice: the right counts, the same messages in the same order, nothing changed.
        const dry1 = await replay(true);
        expect(dry1).toMatchObject({ seen: dead, replayed: dead, parked: 0, unresolved: 0, invalid: 0, failed: 0, window_full: false });
        expect(dry1.rows).toEqual([{ origin: capture, reason: 'permanent-failure', type: 'payment_authorized', outcome: 'replayed', count: dead }]);
        const dry2 = await replay(true);
        expect(dry2.seen).toBe(dead);
        const order = (r: ReplayResult) => r.messages!.map((m) => `${m.partition ?? ''}:${m.event_id}`);
        if (name === 'Kafka') expect(order(dry2).sort()).toEqual(order(dry1).sort());
        else expect(order(dry2)).toEqual(order(dry1));
        if (name === 'RabbitMQ') expect(await rabbitDepth(`${capture}.dlq`)).toBe(dead);
        // The driver may commit the position the group started from (0 on a new group): no progress.
        if (name === 'Kafka') expect((await kafkaCommitted(group, `${capture}.dlq`)).filter((o) => o !== '-1' && o !== '0')).toEqual([]);
        if (name === 'NATS') expect(await natsDlq(`${capture}.dlq`, group)).toEqual({ messages: dead, acked: 0 });

        // 3. The failure switched off, replay: the DLQ empties and every replayed payment completes.
        const traced2 = startTrace(driver, scenario, dead);
        await traced2.ready;
        const working2 = runWorker({ scenario, timeScale: 0, seed: 9, prefetch: 200, failures: false }, { driver, clock: systemClock, signal: phase2.signal });
        const real = await replay(false);
        expect(real).toMatchObject({ seen: dead, replayed: dead, parked: 0, left: 0, failed: 0, stopped_by: 'idle' });
        const t2 = await traced2.done;
        phase2.abort();
        const w2 = await working2;
        expect(w2.totals.dead_lettered_total).toBe(0);
        expect(t2.payments).toMatchObject({ seen: dead, finished: dead, stuck: 0, in_flight: 0 });
        expect(t2.payments.by_class['dead-lettered']).toBe(0);
        expect((t2.payments.by_class['completed'] ?? 0) + (t2.payments.by_class['refunded'] ?? 0)).toBe(dead);
        // Both phases together: every payment ended completed, declined or refunded.
        const all = { ...t1.payments.by_class };
        all['dead-lettered'] = 0;
        for (const [cls, count] of Object.entries(t2.payments.by_class)) all[cls] = (all[cls] ?? 0) + count;
        expect(Object.values(all).reduce((a, b) => a + b, 0)).toBe(payments);
        expect(Object.entries(all).filter(([, c]) => c > 0).map(([k]) => k).sort()).toEqual(['completed', 'declined', 'refunded']);

        const after = await replay(true);
        expect(after.seen).toBe(0);
        if (name === 'RabbitMQ') expect(await rabbitDepth(`${capture}.dlq`)).toBe(0);
        // JetStream keeps the stream (limits retention, like a Kafka topic); the group acked it all.
        if (name === 'NATS') expect(await natsDlq(`${capture}.dlq`, group)).toEqual({ messages: dead, acked: dead });
      } finally {
        phase1.abort();
        phase2.abort();
        await driver.close();
        await deleteDestinations(url, scenario.destinations, { groups: [group, ...scenario.stages.map((s) => workerGroup(scenario, s))] });
      }
    });
  });
}
