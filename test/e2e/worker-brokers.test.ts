/**
 * `payq worker` against the real brokers. The checkout pipeline (a copy with unique destination
 * names) carries 2000 seeded payments with failures on; then a separate reader counts the sink and
 * the DLQs: every payment must end exactly once, in a terminal event or a dead letter. The CLI is
 * run too, on Kafka, and must end by itself (--idle-timeout) with exit 0 and JSON statistics.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { childrenOf, planHandling, runWorker, workerGroup, type WorkerProgress } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Headers } from '../../src/drivers/types.js';
import { EventGenerator } from '../../src/events/generator.js';
import { PayqHeader } from '../../src/events/headers.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

const PAYMENTS = 2000;
const SEED = 11;
const tmp = mkdtempSync(path.join(tmpdir(), 'payq-worker-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

/** The checkout scenario under a unique name, with unique destinations; written to a file too. */
function uniqueCheckout(): { scenario: Scenario; file: string } {
  const config = parseYaml(readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')) as {
    name: string;
    sink: string;
    stages: { name: string; destination: string }[];
  };
  const base = uniqueName('worker');
  config.name = `wk-${Date.now().toString(36)}-${randomBytes(3).toString('hex')}`;
  config.sink = `${base}.events`;
  for (const stage of config.stages) stage.destination = `${base}.${stage.name}`;
  const text = stringifyYaml(config);
  const file = path.join(tmp, `${config.name}.yaml`);
  writeFileSync(file, text);
  return { scenario: parseScenario(text, file), file };
}

interface Read {
  destination: string;
  headers: Headers;
}

const attr = (h: Headers, name: string) => h[`ce_${name}`] ?? h[`cloudEvents_${name}`];

/**
 * Where each payment must end, from the worker's pure decisions (planHandling, childrenOf): every
 * branch of it in one terminal event in the sink or one dead letter. `destination|event id` → payment.
 */
function expectedEndings(scenario: Scenario): Map<string, string> {
  const endings = new Map<string, string>();
  const policy = { seed: 0, failures: true, timeScale: 0 };
  for (const entry of new EventGenerator({ scenario, seed: SEED, payments: PAYMENTS, lifecycle: false })) {
    const queue = [{ id: entry.id, type: entry.type }];
    while (queue.length > 0) {
      const { id, type } = queue.shift()!;
      const stage = scenario.stageFor.get(type);
      if (!stage) {
        endings.set(`${scenario.sink}|${id}`, entry.paymentId);
        continue;
      }
      const plan = planHandling(stage, id, policy);
      if (plan.kind === 'dead-letter') endings.set(`${stage.destination}.dlq|${id}`, entry.paymentId);
      else queue.push(...childrenOf(stage, id, plan.outcome));
    }
  }
  return endings;
}

/** Runs the whole pipeline in-process, waits until it is quiet, reads the sink and DLQs with the driver. */
async function pipelineOn(url: string, scenario: Scenario, readerGroup: string): Promise<void> {
  const driver = await createDriver(url);
  await driver.connect();
  const entry = scenario.destinationFor(scenario.entry);
  try {
    await driver.declare([{ name: entry, partitions: 3, deadLetter: true }]);
    const generator = new EventGenerator({ scenario, seed: SEED, payments: PAYMENTS, lifecycle: false });
    const produced = await produce(
      { destination: entry, encode: { binding: driver.headerBinding, sourcePrefix: `/payq/${scenario.name}`, runId: 'e2e' } },
      { driver, source: generatedSource(generator), clock: systemClock },
    );
    expect(produced.acked).toBe(PAYMENTS);

    const controller = new AbortController();
    let latest: WorkerProgress | undefined;
    const running = runWorker(
      { scenario, timeScale: 0, partitions: 3 },
      { driver, clock: systemClock, signal: controller.signal, onProgress: (p) => (latest = p) },
    );
    running.catch(() => undefined);
    const toStages = (p: WorkerProgress) =>
      p.stages.reduce((n, s) => n + Object.entries(s.emitted_by_type).reduce((m, [t, k]) => m + (scenario.stageFor.has(t) ? k : 0), 0), 0);
    // Quiet: every message that reached a stage destination (the entries and the confirmed
    // emitted events of consumed types) was handled or dead-lettered, and nothing is in flight.
    await waitFor(
      () => latest !== undefined && latest.inFlight === 0 && latest.handled + latest.deadLettered >= PAYMENTS + toStages(latest),
      90_000,
      () => `a quiet pipeline: ${JSON.stringify(latest && { handled: latest.handled, dead: latest.deadLettered, inFlight: latest.inFlight })}`,
    );

    // An independent group reads the sink and every DLQ. The worker keeps running meanwhile: on
    // RabbitMQ a dead letter reaches its DLQ through the stage queue.
    const expected = expectedEndings(scenario);
    const reader = await createDriver(url);
    await reader.connect();
    const read: Read[] = [];
    const got = new Set<string>();
    const sub = await reader.subscribe(
      { destinations: [scenario.sink, ...scenario.stages.map((s) => `${s.destination}.dlq`)], group: readerGroup, fromBeginning: true, prefetch: 1000 },
      (batch) => {
        for (const d of batch) {
          read.push({ destination: d.destination, headers: d.headers });
          got.add(`${d.destination}|${attr(d.headers, 'id')}`);
          d.ack();
        }
      },
    );
    await waitFor(
      () => [...expected.keys()].every((k) => got.has(k)),
      60_000,
      () => `every expected ending in the sink or a DLQ (missing ${[...expected.keys()].filter((k) => !got.has(k)).length} of ${expected.size})`,
    );
    await sub.close();
    await reader.close();
    controller.abort();
    const result = await running;
    expect(result.interrupted).toBe(true);
    expect(result.totals.undecodable).toBe(0);

    // Exactly the expected endings (copies of one event, same id, count once) ...
    expect([...got].filter((k) => !expected.has(k)).slice(0, 5)).toEqual([]);
    // ... so each payment's main branch ends once, and each refund it requested ends once.
    const refundDest = scenario.stages.find((s) => s.name === 'refund-service')!.destination;
    const main = new Map<string, number>();
    let dead = 0;
    let refunds = 0;
    const typeOf = new Map(read.map((r) => [`${r.destination}|${attr(r.headers, 'id')}`, attr(r.headers, 'type')]));
    for (const [key, payment] of expected) {
      const destination = key.slice(0, key.indexOf('|'));
      const isRefund = destination === `${refundDest}.dlq` || typeOf.get(key) === 'refund_completed';
      if (destination.endsWith('.dlq')) dead++;
      if (isRefund) refunds++;
      else main.set(payment, (main.get(payment) ?? 0) + 1);
    }
    expect(main.size).toBe(PAYMENTS);
    expect([...main.values()].every((n) => n === 1)).toBe(true);
    expect(dead).toBeGreaterThan(0);
    expect(refunds).toBeGreaterThan(0);

    // Dead letters carry the provenance headers.
    for (const r of read.filter((x) => x.destination.endsWith('.dlq'))) {
      for (const h of [PayqHeader.dlqReason, PayqHeader.dlqError, PayqHeader.originalDestination, PayqHeader.attempts, PayqHeader.firstFailedAt, PayqHeader.stage]) {
        expect(r.headers[h], `${h} on a dead letter in ${r.destination}`).toBeTruthy();
      }
      expect(r.headers[PayqHeader.originalDestination]).toBe(r.destination.slice(0, -'.dlq'.length));
      expect(['permanent-failure', 'retries-exhausted']).toContain(r.headers[PayqHeader.dlqReason]);
    }
  } finally {
    await driver.close();
  }
}

async function deleteKafka(scenario: Scenario, groups: string[] = []): Promise<void> {
  const kafka = new Kafka({ clientId: 'payq-test-cleanup', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  const topics = scenario.destinations.flatMap((d) => [d, `${d}.dlq`]);
  await admin.deleteTopics({ topics }).catch(() => undefined);
  await admin.deleteGroups([...scenario.stages.map((s) => workerGroup(scenario, s)), ...groups]).catch(() => undefined);
  await admin.disconnect();
}

async function deleteRabbit(scenario: Scenario): Promise<void> {
  const conn = await amqplib.connect(AMQP_URL);
  const ch = await conn.createChannel();
  for (const d of scenario.destinations) {
    await ch.deleteQueue(d);
    await ch.deleteQueue(`${d}.dlq`);
  }
  await conn.close();
}

describe('payq worker on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);

  it.skipIf(!up)(`carries ${PAYMENTS} payments to exactly one ending each (sink or DLQ)`, async () => {
    const { scenario } = uniqueCheckout();
    const reader = uniqueName('reader');
    try {
      await pipelineOn(KAFKA_URL, scenario, reader);
    } finally {
      await deleteKafka(scenario, [reader]);
    }
  });

  it.skipIf(!up)('the CLI ends by itself with --idle-timeout, exit 0 and JSON statistics', async () => {
    const { scenario, file } = uniqueCheckout();
    try {
      const p = await runCli(['produce', '--broker', KAFKA_URL, '--scenario', file, '--count', '300', '--seed', '4', '--partitions', '3', '--json']);
      expect(p.code, p.stderr).toBe(0);
      const r = await runCli(['worker', '--broker', KAFKA_URL, '--scenario', file, '--idle-timeout', '3s', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout);
      expect(s).toMatchObject({ schema: 'payq.worker/v1', scenario: scenario.name, stopped_by: 'idle', interrupted: false, seed: 0, failures: true });
      expect(s.stages.map((x: { stage: string }) => x.stage)).toEqual(scenario.stages.map((x) => x.name));
      const orders = s.stages[0];
      expect(orders.group).toBe(`payq-worker.${scenario.name}.payment-service`);
      expect(orders.handled + orders.dead_lettered_total).toBeGreaterThanOrEqual(300);
      expect(orders.processing_time.count).toBe(orders.handled);
      expect(orders.processing_time.p50_ms).toBeGreaterThan(1);
      expect(typeof orders.processing_histogram).toBe('string');
      expect(s.totals.handled).toBe(s.stages.reduce((n: number, x: { handled: number }) => n + x.handled, 0));
      expect(s.totals.apt_ms).toBeGreaterThan(0);
      expect(r.stdout).not.toContain('guest:guest');
    } finally {
      await deleteKafka(scenario);
    }
  });
});

describe('payq worker on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);

  it.skipIf(!up)(`carries ${PAYMENTS} payments to exactly one ending each (sink or DLQ)`, async () => {
    const { scenario } = uniqueCheckout();
    try {
      await pipelineOn(AMQP_URL, scenario, uniqueName('reader'));
    } finally {
      await deleteRabbit(scenario);
    }
  });
});

