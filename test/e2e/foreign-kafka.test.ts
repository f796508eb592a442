/**
 * Kafka topics payq did not create (issue 12), set up with plain kafkajs: a topic created
 * beforehand with 3 partitions keeps its 3 partitions (and gets no `.dlq`) after trace and
 * consume; a topic that does not exist still does not exist after trace and consume, which wait
 * for it (--start-timeout) and exit 3 naming it. And the README tour in its documented order
 * (trace first, then worker, then produce) leaves every topic of the pipeline with the documented
 * 6 partitions: the tap no longer creates them.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { createTopicsAndWait } from '../helpers/kafka.js';
import { startCli } from '../helpers/spawn.js';

const up = await brokerAvailable(KAFKA_URL);
const kafka = new Kafka({ clientId: 'payq-test-foreign', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
const EVENTS = 12;
const seedEvent = (i: number) => JSON.stringify({ event: 'order_placed', data: { order_id: 7000 + i } });
const lines = (text: string) => text.split('\n').filter((l) => l !== '');
const topics: string[] = [];
const groups: string[] = [];
let admin: Admin;

async function partitions(topic: string): Promise<number> {
  const { topics: meta } = await admin.fetchTopicMetadata({ topics: [topic] });
  return meta[0]!.partitions.length;
}

describe.skipIf(!up)('Kafka topics payq did not create', () => {
  beforeAll(async () => {
    admin = kafka.admin();
    await admin.connect();
  });
  afterAll(async () => {
    await admin?.disconnect();
    await deleteDestinations(KAFKA_URL, topics, { groups });
  });

  it('a topic created with 3 partitions keeps them, and gets no .dlq, after trace and consume read all of it', async () => {
    const topic = uniqueName('foreign3');
    topics.push(topic);
    await createTopicsAndWait(admin, [{ topic, numPartitions: 3 }]);
    const producer = kafka.producer();
    await producer.connect();
    await producer.send({ topic, messages: Array.from({ length: EVENTS }, (_, i) => ({ key: `k${i}`, value: seedEvent(i) })) });
    await producer.disconnect();

    const traced = await runCli([
      'trace', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--type-field', 'event', '--correlate', 'data.order_id',
      '--expect', 'order_placed', '--idle-timeout', '3s', '--json',
    ]);
    expect(traced.code, traced.stderr).toBe(0);
    expect(lines(traced.stderr)[0]).toMatch(/^trace: watching .* \(tap: observing, taking nothing\) — a consumer group of its own/);
    const report = JSON.parse(traced.stdout);
    // Every event was read: each payment passed. A rebalance while the tap's group starts can hand
    // a partition over before its offsets were committed, so some are read twice (at least once;
    // these foreign events carry no id that would tell a duplicate).
    expect(report).toMatchObject({ expectation: { passed: EVENTS, failed: 0 } });
    expect(report.events.seen).toBeGreaterThanOrEqual(EVENTS);

    const consumed = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--idle-timeout', '3s', '--json']);
    expect(consumed.code, consumed.stderr).toBe(0);
    expect(lines(consumed.stdout).sort()).toEqual(Array.from({ length: EVENTS }, (_, i) => seedEvent(i)).sort());

    expect(await partitions(topic)).toBe(3);
    const all = new Set(await admin.listTopics());
    expect(all.has(`${topic}.dlq`)).toBe(false);
  });

  it('a topic that does not exist: trace and consume wait --start-timeout, exit 3 naming it, and it still does not exist', async () => {
    const topic = uniqueName('never-created');
    topics.push(topic);
    for (const command of ['trace', 'consume']) {
      const r = await runCli([command, '--broker', KAFKA_URL, '--topic', topic, '--start-timeout', '2s', '--idle-timeout', '1s']);
      expect(r.code, r.stderr).toBe(3);
      expectOneErrorLine(r.stderr, new RegExp(`no such destination on kafka://127\\.0\\.0\\.1:9092: ${topic.replace(/\./g, '\\.')} \\(waited`));
    }
    const all = new Set(await admin.listTopics());
    expect(all.has(topic)).toBe(false);
    expect(all.has(`${topic}.dlq`)).toBe(false);
  });

  it('the README tour in its order (trace, then worker, then produce) leaves every topic with the documented 6 partitions', async () => {
    // The checkout scenario under names of this test's own, so the shared broker's checkout.* don't matter.
    const prefix = uniqueName('tour');
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-tour-'));
    const scenarioFile = path.join(dir, 'tour.yaml');
    // Its own name too: the worker's groups are named after the scenario.
    const scenarioName = `tour-${prefix.split('.').slice(-2).join('-')}`;
    const text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replace(/checkout\./g, `${prefix}.`).replace(/^name: checkout$/m, `name: ${scenarioName}`);
    groups.push(...['payment-service', 'capture-service', 'fulfilment-service', 'refund-service'].map((stage) => `payq-worker.${scenarioName}.${stage}`));
    writeFileSync(scenarioFile, text);
    const names = ['orders', 'authorizations', 'captures', 'refunds', 'events'].map((n) => `${prefix}.${n}`);
    topics.push(...names);

    const tracer = startCli(['trace', '--broker', KAFKA_URL, '--scenario', scenarioFile, '--expect', 'order_placed,order_completed|payment_declined', '--within', '60s', '--idle-timeout', '8s', '--start-timeout', '90s']);
    // trace waits for the pipeline's topics (it never creates them): started first, as the README says.
    await new Promise((r) => setTimeout(r, 1500));
    expect(tracer.child.exitCode).toBe(null);
    const worker = startCli(['worker', '--broker', KAFKA_URL, '--scenario', scenarioFile, '--failures', 'off', '--time-scale', '0', '--idle-timeout', '10s']);
    try {
      const produced = await runCli(['produce', '--broker', KAFKA_URL, '--scenario', scenarioFile, '--count', '20', '--seed', '9']);
      expect(produced.code, produced.stderr).toBe(0);
      expect(await tracer.exited, tracer.stderr()).toBe(0);
      expect(tracer.stderr()).toMatch(/expectation\s+│\s+20 passed/);
    } finally {
      await worker.exited;
    }
    for (const name of names) {
      expect(await partitions(name), name).toBe(6);
      expect(await partitions(`${name}.dlq`), `${name}.dlq`).toBe(6);
    }
  });
});
