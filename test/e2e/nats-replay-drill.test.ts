/**
 * Issue #4's DLQ drill on NATS JetStream, as test/e2e/replay-drill.test.ts runs it on the other
 * brokers: 2,000 payments, capture-service failing 5% permanently, the DLQ fills; `replay-dlq
 * --dry-run` counts it right and changes nothing (twice, same order; the DLQ stream and the
 * replay group's consumer unchanged, checked with the NATS client itself); failures off,
 * replay-dlq empties the DLQ for the group and trace sees every dead-lettered payment finish.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect } from '@nats-io/transport-node';
import { readFileSync } from 'node:fs';
import { parse, stringify } from 'yaml';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { replayDlq, type ReplayResult } from '../../src/core/replay.js';
import { generatedSource } from '../../src/core/sources.js';
import { trace, type TraceResult } from '../../src/core/trace.js';
import { runWorker } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver } from '../../src/drivers/types.js';
import { EventGenerator } from '../../src/events/generator.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';

const PAYMENTS = 2_000;
const SEED = 404;
const FAILING_STAGE = 'capture-service';
const up = await brokerAvailable(NATS_URL);

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
  const done = trace(
    {
      scenario, destinations: scenario.destinations, decode: { typeField: 'event', correlate: 'payment_id' },
      stuckAfterMs: 30_000, expect: undefined, withinMs: undefined, payment: undefined, runId: undefined,
      fromBeginning: false, idleTimeoutMs: 15_000, durationMs: 45_000, untilFinished,
    },
    { driver, clock: systemClock, onReady: () => ready() },
  );
  return { ready: tapped, done };
}

/** Messages in the DLQ's stream, and what the replay group has acked there (JetStream's view). */
async function dlqState(dlq: string, group: string): Promise<{ messages: number; acked: number | undefined }> {
  const nc = await connect({ servers: NATS_URL.replace('nats://', '') });
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

describe.skipIf(!up)('DLQ drill on NATS JetStream', () => {
  it(`${PAYMENTS} payments, 5% dead-lettered at ${FAILING_STAGE}: dry run changes nothing, replay empties the DLQ, every payment completes`, async () => {
    const prefix = uniqueName('drill');
    const scenario = drillScenario(prefix);
    const group = `${prefix}.replay`;
    const capture = scenario.stages.find((s) => s.name === FAILING_STAGE)!.destination;
    const dlqs = scenario.destinations.map((d) => `${d}.dlq`);
    const driver = await createDriver(NATS_URL);
    await driver.connect();
    const phase1 = new AbortController();
    const phase2 = new AbortController();
    const replay = (dryRun: boolean): Promise<ReplayResult> =>
      replayDlq({ dlqs, dryRun, filter: {}, group, idleTimeoutMs: 2000, listMessages: dryRun }, { driver, clock: systemClock });
    try {
      const traced1 = startTrace(driver, scenario, PAYMENTS);
      await traced1.ready;
      const working1 = runWorker({ scenario, timeScale: 0, seed: 9, prefetch: 200 }, { driver, clock: systemClock, signal: phase1.signal });
      const produced = await produce(
        { destination: scenario.destinationFor(scenario.entry), encode: { binding: driver.capabilities.headerBinding, sourcePrefix: '/payq/drill', runId: prefix } },
        { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario, seed: SEED, payments: PAYMENTS, lifecycle: false })) },
      );
      expect(produced.acked).toBe(PAYMENTS);
      const t1 = await traced1.done;
      phase1.abort();
      const w1 = await working1;
      const dead = w1.totals.dead_lettered_total;
      expect(t1.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, stuck: 0 });
      expect(t1.payments.by_class['dead-lettered']).toBe(dead);
      expect(dead).toBeGreaterThan(PAYMENTS * 0.93 * 0.05 * 0.6);

      // Dry run, twice: the right counts, the same messages in the same order, nothing changed.
      const dry1 = await replay(true);
      expect(dry1).toMatchObject({ seen: dead, replayed: dead, parked: 0, unresolved: 0, invalid: 0, failed: 0, window_full: false });
      expect(dry1.rows).toEqual([{ origin: capture, reason: 'permanent-failure', type: 'payment_authorized', outcome: 'replayed', count: dead }]);
      const dry2 = await replay(true);
      expect(dry2.messages!.map((m) => m.event_id)).toEqual(dry1.messages!.map((m) => m.event_id));
      expect(await dlqState(`${capture}.dlq`, group)).toEqual({ messages: dead, acked: 0 });

      // Failures off, replay: the DLQ empties (for the group) and every replayed payment completes.
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
      expect((t2.payments.by_class['completed'] ?? 0) + (t2.payments.by_class['refunded'] ?? 0)).toBe(dead);

      expect((await replay(true)).seen).toBe(0);
      // JetStream keeps the stream (limits retention, like a Kafka topic); the group acked it all.
      expect(await dlqState(`${capture}.dlq`, group)).toEqual({ messages: dead, acked: dead });
    } finally {
      phase1.abort();
      phase2.abort();
      await driver.close();
      await deleteDestinations(NATS_URL, scenario.destinations);
    }
  }, 60_000);
});
