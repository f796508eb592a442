/**
 * `--procs N` on real brokers (README "Every core: --procs"): consume --procs 2 in a group reads
 * every event a plain kafkajs producer wrote exactly once across its threads; worker --procs 2
 * handles every payment with the same counts as one process with the same seed; bench --procs 2
 * loses nothing and reports the payments of a --procs 1 run with the same seed and count.
 */
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import type { Scenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { createTopicsAndWait } from '../helpers/kafka.js';
import { scenarioCopy } from '../helpers/scenario-file.js';
import { startCli } from '../helpers/spawn.js';

const kafkaUp = await brokerAvailable(KAFKA_URL);
const amqpUp = await brokerAvailable(AMQP_URL);
const work = mkdtempSync(path.join(tmpdir(), 'payq-procs-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(work, { recursive: true, force: true });
});

const lines = (text: string) => text.split('\n').filter((l) => l !== '');

/** checkout with destinations, groups and a name of its own (test/helpers/scenario-file.ts), deleted after. */
function scenarioFor(url: string, prefix: string): { file: string; scenario: Scenario } {
  const copy = scenarioCopy(prefix);
  cleanups.push(() => deleteDestinations(url, [...copy.destinations, copy.scenario.sink], { groups: copy.groups }));
  return copy;
}

describe.skipIf(!kafkaUp)('consume --procs 2 on Kafka', () => {
  it('reads every event a plain producer wrote exactly once, across its threads, whole lines only', async () => {
    const topic = uniqueName('procs-consume');
    const group = uniqueName('procs-group');
    cleanups.push(() => deleteDestinations(KAFKA_URL, [topic], { groups: [group] }));
    const kafka = new Kafka({ clientId: 'payq-test-procs', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    await createTopicsAndWait(admin, [{ topic, numPartitions: 6 }]);
    await admin.disconnect();
    const written = Array.from({ length: 6000 }, (_, i) => JSON.stringify({ event: 'order_placed', payment_id: `pay_${i}`, n: i }));
    const producer = kafka.producer();
    await producer.connect();
    for (let i = 0; i < written.length; i += 1000) {
      await producer.send({ topic, messages: written.slice(i, i + 1000).map((value, j) => ({ key: `pay_${i + j}`, value })) });
    }
    await producer.disconnect();

    const r = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', group, '--from-beginning', '--procs', '2', '--idle-timeout', '3s', '--json', '-v']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(/consuming .* \(group .*\) · 2 threads/);
    // Every line whole (no two threads' output interleaved inside a line), each event once.
    const got = lines(r.stdout);
    expect(got.length).toBe(written.length);
    expect([...got].sort()).toEqual([...written].sort());
    // The threads' counts add up to the summary's.
    const each = [...r.stderr.matchAll(/thread (\d): consumed (\d+), printed (\d+)/g)].map((m) => Number(m[2]));
    expect(each).toHaveLength(2);
    expect(each[0]! + each[1]!).toBe(written.length);
    expect(r.stderr).toMatch(/consumed\s*│\s*6,000/);
  });
});

interface WorkerJson {
  procs: number;
  stopped_by: string;
  stages: { stage: string; received: number; redelivered: number; handled: number; attempts: number; retries: number; dead_lettered_total: number; emitted: number; emitted_by_type: Record<string, number> }[];
  totals: { handled: number; emitted: number };
}

/** Starts `payq worker --procs N`, waits until every thread is subscribed, produces `count` payments, and returns its --json. */
async function workerRun(url: string, procs: number, count: number): Promise<{ json: WorkerJson; scenario: Scenario }> {
  const { file, scenario } = scenarioFor(url, uniqueName(`procs-w${procs}`));
  const worker = startCli(['worker', '--broker', url, '--scenario', file, '--procs', String(procs), '--time-scale', '0', '--seed', '5', '--idle-timeout', '10s', '--json', '-v']);
  await worker.waitForStderr(/worker: subscribed/);
  const produced = await runCli(['produce', '--broker', url, '--scenario', file, '--count', String(count), '--seed', '21', '--json']);
  expect(produced.code, produced.stderr).toBe(0);
  expect(await worker.exited, worker.stderr()).toBe(0);
  return { json: JSON.parse(worker.stdout()) as WorkerJson, scenario };
}

describe.skipIf(!amqpUp)('worker --procs 2 on RabbitMQ', () => {
  it('handles every payment, with the counts of one process with the same seed', async () => {
    const count = 300;
    const two = await workerRun(AMQP_URL, 2, count);
    const one = await workerRun(AMQP_URL, 1, count);
    expect(two.json.procs).toBe(2);
    expect(two.json.stopped_by).toBe('idle');
    // Every event reached the end of its stage: handled or dead-lettered, each once.
    const { scenario } = two;
    for (const stage of scenario.stages) {
      const s = two.json.stages.find((x) => x.stage === stage.name)!;
      const arrived =
        stage.input.includes(scenario.entry)
          ? count
          : two.json.stages.reduce((n, other) => n + stage.input.reduce((m, type) => m + (other.emitted_by_type[type] ?? 0), 0), 0);
      expect(s.redelivered, stage.name).toBe(0);
      expect(s.received, stage.name).toBe(arrived);
      expect(s.handled + s.dead_lettered_total, stage.name).toBe(arrived);
    }
    // The decisions are seeded per event: the same outcomes whichever thread handled an event.
    const counts = (j: WorkerJson) => j.stages.map(({ stage, received, handled, attempts, retries, dead_lettered_total, emitted, emitted_by_type }) => ({ stage, received, handled, attempts, retries, dead_lettered_total, emitted, emitted_by_type }));
    expect(counts(two.json)).toEqual(counts(one.json));
    expect(two.json.totals.handled).toBeGreaterThanOrEqual(count);
  });
});

interface ReportJson {
  settings: { procs?: number };
  loss: number;
  events: { acknowledged: number; consumed: number; lost: number; in_flight: number; not_drained: number };
  payments: { produced: number; finished: number; in_flight: number; stuck: number; by_class: Record<string, number> };
  dlq: { by_reason: Record<string, number> };
}

describe.skipIf(!kafkaUp)('bench --procs 2 on Kafka', () => {
  it('loses nothing and reports the payments of a --procs 1 run with the same seed and count', async () => {
    const bench = async (procs: number): Promise<ReportJson> => {
      const { file } = scenarioFor(KAFKA_URL, uniqueName(`procs-b${procs}`));
      const json = path.join(work, `bench-${procs}.json`);
      const r = await runCli(['bench', '--broker', KAFKA_URL, '--scenario', file, '--procs', String(procs), '--count', '400', '--rate', '200', '--seed', '13', '--warmup', '0', '--json', json]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(readFileSync(json, 'utf8')) as ReportJson;
    };
    const two = await bench(2);
    const one = await bench(1);
    expect(two.settings.procs).toBe(2);
    expect(one.settings.procs).toBe(1);
    expect(two.loss).toBe(0);
    expect(two.events.lost).toBe(0);
    expect(two.events.in_flight + two.events.not_drained).toBe(0);
    expect(two.events.consumed).toBe(two.events.acknowledged);
    expect(two.payments.produced).toBe(400);
    expect(two.payments.finished).toBe(400);
    expect(two.payments).toEqual(one.payments);
    expect(two.dlq.by_reason).toEqual(one.dlq.by_reason);
    expect(two.events.acknowledged).toBe(one.events.acknowledged);
  });
});
