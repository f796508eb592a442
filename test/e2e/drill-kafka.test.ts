/**
 * Issue #15's failure drills on Kafka: a broker of the file's own (test/helpers/drill-kafka.ts,
 * started by scripts/brokers.sh on free ports; the shared 9092 is never touched) is killed with
 * SIGKILL in the middle of each run and started again on the same data. Each run is checked by an
 * independent reader, plain kafkajs: nothing acknowledged is missing, the counts add up exactly,
 * redeliveries show up as duplicates, never as losses.
 *
 * A restart takes 20–60 s on a loaded machine, so runs are paced (--rate) to span it and timeouts
 * are generous; nothing is timed. Each test prints one `drill figures:` line (events acknowledged,
 * failed, unconfirmed, found by the reader, and the outage: kill → broker answering again).
 */
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, Driver, OutgoingMessage, Subscription } from '../../src/drivers/types.js';
import { parseScenario } from '../../src/events/scenario.js';
import { brokersRequired, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { DrillKafka, drillKafkaAvailable } from '../helpers/drill-kafka.js';
import { declareLayout } from '../helpers/layout.js';
import { startCli, type Background } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import { unfinishedPayments } from '../helpers/drill.js';

/** A broker start or restart under load (the script itself gives up after 240 s). */
const BROKER_START_MS = 300_000;
/** Long enough for a run that spans a restart, the restart included. */
const DRILL_MS = 420_000;
/** Readers must not take the outage for the end of the stream. */
const IDLE = '60s';

interface Stored {
  partition: number;
  offset: string;
  id: string;
  event: string;
  payment: string;
}

let broker: DrillKafka | undefined;
let kafka: Kafka;

function client(): Kafka {
  return new Kafka({ clientId: 'payq-drill-reader', brokers: [broker!.bootstrap], logLevel: logLevel.NOTHING, retry: { retries: 8 } });
}

async function withAdmin<T>(fn: (admin: Admin) => Promise<T>): Promise<T> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    return await fn(admin);
  } finally {
    await admin.disconnect();
  }
}

/** Records on the topic now (0 while it does not exist or the broker is away). */
async function storedCount(topic: string): Promise<number> {
  return withAdmin(async (admin) => {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  }).catch(() => 0);
}

/** Every record of the topic, read from the beginning by a plain kafkajs consumer: the independent reader. */
async function readAll(topic: string): Promise<Stored[]> {
  const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
  const left = new Map(ends.filter((p) => Number(p.high) > Number(p.low)).map((p) => [p.partition, BigInt(p.high)]));
  const out: Stored[] = [];
  if (left.size === 0) return out;
  const consumer = kafka.consumer({ groupId: uniqueName('drill-reader'), sessionTimeout: 10_000, heartbeatInterval: 1_000 });
  await consumer.connect();
  try {
    let done!: () => void;
    const finished = new Promise<void>((resolve) => (done = resolve));
    await consumer.subscribe({ topics: [topic], fromBeginning: true });
    await consumer.run({
      autoCommit: false,
      eachBatch: async ({ batch }) => {
        for (const m of batch.messages) {
          const body = JSON.parse(m.value!.toString('utf8')) as { id: string; event: string; payment_id: string };
          out.push({ partition: batch.partition, offset: m.offset, id: body.id, event: body.event, payment: body.payment_id });
          const end = left.get(batch.partition);
          if (end !== undefined && BigInt(m.offset) + 1n >= end) left.delete(batch.partition);
        }
        if (left.size === 0) done();
      },
    });
    await Promise.race([finished, new Promise((_, reject) => setTimeout(() => reject(new Error(`reader: ${topic} not read to its end within 120 s`)), 120_000))]);
  } finally {
    await consumer.disconnect();
  }
  return out;
}

/** What a group has committed on a topic, per partition (-1: nothing). */
async function committed(group: string, topic: string): Promise<Map<number, bigint>> {
  return withAdmin(async (admin) => {
    const [t] = await admin.fetchOffsets({ groupId: group, topics: [topic] });
    return new Map((t?.partitions ?? []).map((p) => [p.partition, BigInt(p.offset)]));
  });
}

/** A copy of checkout with destinations and a name of its own, written where the CLI can read it. */
function scenarioFile(prefix: string, failures: Record<string, { transient: number; permanent: number }>): { file: string; destinations: string[] } {
  let text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replaceAll('checkout.', `${prefix}.`);
  text = text.replace(/^name: checkout$/m, `name: drill-${prefix.slice(-6)}`);
  for (const [stage, f] of Object.entries(failures)) {
    text = text.replace(new RegExp(`(- name: ${stage}\\n(?:.*\\n)*?\\s+failures: )\\{[^}]*\\}`), `$1{ transient: ${f.transient}, permanent: ${f.permanent} }`);
  }
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'payq-drill-')), 'checkout.yaml');
  writeFileSync(file, text);
  return { file, destinations: parseScenario(text, file).destinations };
}

const ids = (rows: Stored[]) => rows.map((r) => r.id);
const duplicates = (values: string[]) => values.length - new Set(values).size;
const seconds = (ms: number) => (ms / 1000).toFixed(1);

const background: Background[] = [];
const drivers: Driver[] = [];
afterEach(async () => {
  for (const b of background.splice(0)) if (b.child.exitCode === null) b.child.kill('SIGKILL');
  for (const d of drivers.splice(0)) await d.close().catch(() => undefined);
});

/** A payq driver on the drill broker that waits out a restart (which takes up to a minute or more here). */
async function drillDriver(): Promise<Driver> {
  const driver = await createDriver(broker!.url, { reconnectTimeoutMs: BROKER_START_MS });
  drivers.push(driver);
  await driver.connect();
  return driver;
}

function messages(from: number, n: number): OutgoingMessage[] {
  return Array.from({ length: n }, (_, i) => ({ key: `k${(from + i) % 97}`, type: 'order_placed', value: Buffer.from(JSON.stringify({ id: `e${from + i}` })), headers: {} }));
}

const idOf = (d: Delivery) => (JSON.parse(d.value.toString('utf8')) as { id: string }).id;

const available = drillKafkaAvailable();
if (!available && brokersRequired) throw new Error('the Kafka drills need the Kafka jars: run scripts/brokers.sh up first');

describe.skipIf(!available)('Kafka failure drills (a broker of the file’s own, SIGKILLed and restarted on the same data)', () => {
  beforeAll(async () => {
    broker = await DrillKafka.start();
    kafka = client();
  }, BROKER_START_MS);
  afterAll(async () => {
    await broker?.stop();
  }, 60_000);

  it('driver: a tap and a group ride out the restart from their committed positions, acks held across it count, a subscribe during the outage waits for the broker; link() tells it', async () => {
    const topic = uniqueName('drill-sub');
    const driver = await drillDriver();
    await driver.declare([{ name: topic, partitions: 3 }]);
    const group = `${topic}.group`;
    const tapSeen: string[] = [];
    const groupSeen: string[] = [];
    const held: Delivery[] = [];
    const subscriptions: Subscription[] = [];
    subscriptions.push(
      await driver.subscribe({ destinations: [topic], group: '', fromBeginning: false, prefetch: 100, tap: true }, (ds) => {
        for (const d of ds) {
          tapSeen.push(idOf(d));
          d.ack();
        }
      }),
      // The group keeps its first 30 deliveries unsettled until after the restart.
      await driver.subscribe({ destinations: [topic], group, fromBeginning: false, prefetch: 100 }, (ds) => {
        for (const d of ds) {
          groupSeen.push(idOf(d));
          if (held.length < 30 && !d.redelivered) held.push(d);
          else d.ack();
        }
      }),
    );
    await driver.send(topic, messages(0, 500));
    await waitFor(() => new Set(tapSeen).size >= 500 && new Set(groupSeen).size >= 500, 120_000, () => `tap ${tapSeen.length}, group ${groupSeen.length} of 500`);
    expect(held).toHaveLength(30);

    // Killed: sends go on (they wait), and a second driver subscribes while the broker is away.
    let sending: Promise<void> | undefined;
    let lateTap: Promise<Subscription> | undefined;
    const lateSeen: string[] = [];
    const late = await createDriver(broker!.url, { reconnectTimeoutMs: BROKER_START_MS });
    drivers.push(late);
    await late.connect();
    const outage = await broker!.restart(2, () => {
      sending = (async () => {
        for (let b = 0; b < 5; b++) await driver.send(topic, messages(500 + b * 100, 100));
      })();
      lateTap = late.subscribe({ destinations: [topic], group: '', fromBeginning: false, prefetch: 100, tap: true }, (ds) => {
        for (const d of ds) {
          lateSeen.push(idOf(d));
          d.ack();
        }
      });
    });
    expect(driver.link().connected === false || driver.link().reconnects >= 1).toBe(true);
    await sending;
    const lateSubscription = await lateTap!;
    subscriptions.push(lateSubscription);
    // Acks of deliveries from before the outage: no crash, and they count.
    for (const d of held) d.ack();
    await driver.send(topic, messages(1_000, 500));
    const all = Array.from({ length: 1_500 }, (_, i) => `e${i}`);
    const missing = (seen: string[]) => {
      const got = new Set(seen);
      return all.filter((id) => !got.has(id));
    };
    await waitFor(() => missing(tapSeen).length === 0 && missing(groupSeen).length === 0, 180_000, () => `tap missing ${missing(tapSeen).length}, group missing ${missing(groupSeen).length}`);
    await waitFor(() => lateSeen.filter((id) => Number(id.slice(1)) >= 1_000).length >= 500, 180_000, () => `late tap ${lateSeen.length}`);
    expect(missing(tapSeen)).toEqual([]);
    expect(missing(groupSeen)).toEqual([]);
    const link = driver.link();
    expect(link.connected).toBe(true);
    expect(link.reconnects).toBeGreaterThanOrEqual(1);
    expect(link.downMs).toBeGreaterThan(0);
    for (const sub of subscriptions) await sub.close();
    // Everything the group acked is committed, the held ones included: the independent reader's view.
    const at = await committed(group, topic);
    const ends = await withAdmin((admin) => admin.fetchTopicOffsets(topic));
    expect(ends.map((p) => [p.partition, at.get(p.partition)?.toString()])).toEqual(ends.map((p) => [p.partition, p.high]));
    console.log(
      `drill figures: kafka driver subscriptions: sent 1500 (500 of them while the broker was away), tap saw ${tapSeen.length} (${duplicates(tapSeen)} duplicates), group saw ${groupSeen.length} (${duplicates(groupSeen)} duplicates), late tap saw ${lateSeen.length}; link down ${seconds(link.downMs)} s, reconnects ${link.reconnects}; outage ${seconds(outage)} s`,
    );
  }, DRILL_MS);

  it('payq produce --rate across a restart: every event acknowledged or failed; the topic holds exactly the acknowledged plus at most the failed', async () => {
    const topic = uniqueName('drill-produce');
    const COUNT = 6_000;
    const producing = runCli(['produce', '--broker', broker!.url, '--topic', topic, '--count', String(COUNT), '--rate', '150', '--seed', '15', '--json'], { timeoutMs: DRILL_MS });
    await waitFor(async () => (await storedCount(topic)) >= 1_000, 120_000, 'the first 1,000 events stored');
    const outage = await broker!.restart();
    const r = await producing;

    expect([0, 4], r.stderr).toContain(r.code);
    const summary = JSON.parse(r.stdout) as { sent: number; acked: number; failed: number; unconfirmed?: number; errors: string[]; stopped_early: boolean };
    expect(summary.acked + summary.failed, r.stdout).toBe(COUNT);
    if (summary.failed > 0) expect(r.code).toBe(4);
    else expect(r.code).toBe(0);

    const stored = await readAll(topic);
    const expected = (await runCli(['produce', '--dry-run', '--count', String(COUNT), '--seed', '15'])).stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    expect(expected).toHaveLength(COUNT);
    const known = new Set(expected);
    const found = ids(stored);
    // Nothing but produce's events, none twice (the idempotent producer), none acknowledged lost.
    expect(found.filter((id) => !known.has(id))).toEqual([]);
    expect(duplicates(found)).toBe(0);
    expect(stored.length).toBeGreaterThanOrEqual(summary.acked);
    expect(stored.length).toBeLessThanOrEqual(summary.acked + summary.failed);
    // produce does not say which events failed: the ones beyond the acknowledged are failed ones the broker stored.
    const unconfirmed = stored.length - summary.acked;
    if (summary.unconfirmed !== undefined) expect(unconfirmed).toBeLessThanOrEqual(summary.unconfirmed);
    console.log(
      `drill figures: kafka payq produce: acknowledged ${summary.acked}, failed ${summary.failed}, unconfirmed (failed but stored) ${unconfirmed}, found by the reader ${stored.length} of ${COUNT}; outage ${seconds(outage)} s; errors ${JSON.stringify(summary.errors)}`,
    );
  }, DRILL_MS);

  it('payq worker + payq trace across a restart: every payment completes; redeliveries are duplicates, not losses', async () => {
    const prefix = uniqueName('drill-pipe');
    const none = { transient: 0, permanent: 0 };
    const { file, destinations } = scenarioFile(prefix, { 'payment-service': none, 'capture-service': none, 'fulfilment-service': none, 'refund-service': none });
    await declareLayout(broker!.url, destinations);
    const PAYMENTS = 1_500;
    const tracer = startCli(['trace', '--broker', broker!.url, '--scenario', file, '--idle-timeout', IDLE, '--stuck-after', '300s', '--json', '-v']);
    background.push(tracer);
    await tracer.waitForStderr('trace: watching', BROKER_START_MS);
    const worker = startCli(['worker', '--broker', broker!.url, '--scenario', file, '--time-scale', '0', '--idle-timeout', IDLE, '--json']);
    background.push(worker);
    const producing = runCli(['produce', '--broker', broker!.url, '--scenario', file, '--count', String(PAYMENTS), '--rate', '50', '--seed', '16', '--json'], { timeoutMs: DRILL_MS });
    const sink = destinations.find((d) => d.endsWith('.events'))!;
    await waitFor(async () => (await storedCount(sink)) >= 200, 120_000, 'the first 200 events at the end of the pipeline');
    const outage = await broker!.restart();
    const p = await producing;
    expect([0, 4], p.stderr).toContain(p.code);
    const produced = JSON.parse(p.stdout) as { acked: number; failed: number };
    expect(produced.acked + produced.failed).toBe(PAYMENTS);
    expect(await worker.exited, worker.stderr()).toBe(0);
    expect(await tracer.exited, tracer.stderr()).toBe(0);

    // The independent reader: the payments that entered, and how each ended.
    const entry = destinations.find((d) => d.endsWith('.orders'))!;
    const entered = await readAll(entry);
    const ended = await readAll(sink);
    expect(duplicates(ids(entered))).toBe(0);
    expect(entered.length).toBeGreaterThanOrEqual(produced.acked);
    expect(entered.length).toBeLessThanOrEqual(PAYMENTS);
    const { unfinished, refundsOpen } = unfinishedPayments(entered, ended);
    expect(unfinished).toEqual([]);
    expect(refundsOpen).toEqual([]);

    const t = JSON.parse(tracer.stdout()) as { payments: { seen: number; finished: number; stuck: number; in_flight: number; by_class: Record<string, number> }; events: { duplicates: number; missing_steps: number } };
    expect(t.payments).toMatchObject({ seen: entered.length, finished: entered.length, stuck: 0, in_flight: 0 });
    expect(t.payments.by_class['dead-lettered'] ?? 0).toBe(0);
    expect(t.events.missing_steps).toBe(0);
    console.log(
      `drill figures: kafka payq worker + trace: produced acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed (entered beyond acknowledged) ${entered.length - produced.acked}; payments entered (reader) ${entered.length}, finished (trace) ${t.payments.finished}, finished (reader) ${entered.length - unfinished.length}; duplicates seen by trace ${t.events.duplicates}, duplicate ends stored ${duplicates(ids(ended))}; outage ${seconds(outage)} s`,
    );
  }, DRILL_MS);

  it('payq replay-dlq across a restart: resumes, nothing lost, a dead letter leaves the DLQ only once its republish is stored', async () => {
    const prefix = uniqueName('drill-replay');
    const none = { transient: 0, permanent: 0 };
    const { file, destinations } = scenarioFile(prefix, {
      'payment-service': none,
      'capture-service': { transient: 0, permanent: 1 },
      'fulfilment-service': none,
      'refund-service': none,
    });
    const capture = destinations.find((d) => d.endsWith('.authorizations'))!;
    const dlq = `${capture}.dlq`;
    // replay-dlq's group (core/replay.ts REPLAY_DEFAULTS): this broker is the file's own.
    const group = 'payq-replay';
    // 1. Fill the DLQ: every authorised payment fails permanently at capture-service.
    const filled = await runCli(['produce', '--broker', broker!.url, '--scenario', file, '--count', '600', '--seed', '17', '--json']);
    expect(filled.code, filled.stderr).toBe(0);
    const worker = startCli(['worker', '--broker', broker!.url, '--scenario', file, '--stage', 'payment-service,capture-service', '--time-scale', '0', '--idle-timeout', '5s']);
    background.push(worker);
    expect(await worker.exited, worker.stderr()).toBe(0);
    const dead = await readAll(dlq);
    expect(dead.length).toBeGreaterThan(400);
    expect(duplicates(ids(dead))).toBe(0);
    const before = await storedCount(capture);

    // 2. Replay, paced so the run spans the outage.
    const replayArgs = ['replay-dlq', '--broker', broker!.url, '--dlq', dlq, '--json'];
    const replaying = runCli([...replayArgs, '--rate', '8', '--idle-timeout', IDLE], { timeoutMs: DRILL_MS });
    await waitFor(async () => (await storedCount(capture)) >= before + 40, 120_000, 'the first 40 replayed');
    const outage = await broker!.restart();
    // While the first run goes on: what the group has committed on the DLQ was republished.
    const first = await replaying;
    expect([0, 4], first.stderr).toContain(first.code);
    const r1 = JSON.parse(first.stdout) as { seen: number; replayed: number; failed: number; left: number };
    await expectCommittedRepublished(group, dlq, capture, dead);

    // 3. Run again: it resumes with what the first run did not finish.
    const again = await runCli([...replayArgs, '--idle-timeout', '10s'], { timeoutMs: DRILL_MS });
    expect(again.code, again.stderr).toBe(0);
    const r2 = JSON.parse(again.stdout) as { seen: number; replayed: number; failed: number };
    const after = await runCli([...replayArgs, '--dry-run', '--idle-timeout', '5s'], { timeoutMs: DRILL_MS });
    expect(after.code, after.stderr).toBe(0);
    expect((JSON.parse(after.stdout) as { seen: number }).seen).toBe(0);
    await expectCommittedRepublished(group, dlq, capture, dead);

    // The independent reader: every dead letter is back at its origin (its first time there plus a replay).
    const origin = await readAll(capture);
    const times = new Map<string, number>();
    for (const m of origin) times.set(m.id, (times.get(m.id) ?? 0) + 1);
    expect(dead.filter((d) => (times.get(d.id) ?? 0) < 2).map((d) => d.id)).toEqual([]);
    const deadIds = new Set(ids(dead));
    const replays = [...times].filter(([id]) => deadIds.has(id)).reduce((n, [, c]) => n + c - 1, 0);
    expect(replays).toBeGreaterThanOrEqual(dead.length);
    expect(r1.replayed + r2.replayed).toBeGreaterThanOrEqual(dead.length);
    console.log(
      `drill figures: kafka payq replay-dlq: dead letters ${dead.length}; first run (exit ${first.code}) seen ${r1.seen}, replayed ${r1.replayed}, failed ${r1.failed}, left ${r1.left}; second run replayed ${r2.replayed}; found back at the origin ${dead.length - dead.filter((d) => (times.get(d.id) ?? 0) < 2).length} of ${dead.length} (${replays - dead.length} republished twice); outage ${seconds(outage)} s`,
    );
  }, DRILL_MS * 2);
});

/** Every DLQ record below the group's committed offset has been republished to its origin. */
async function expectCommittedRepublished(group: string, dlq: string, origin: string, dead: Stored[]): Promise<void> {
  const at = await committed(group, dlq);
  const gone = dead.filter((d) => BigInt(d.offset) < (at.get(d.partition) ?? -1n));
  const onOrigin = new Map<string, number>();
  for (const m of await readAll(origin)) onOrigin.set(m.id, (onOrigin.get(m.id) ?? 0) + 1);
  expect(gone.filter((d) => (onOrigin.get(d.id) ?? 0) < 2).map((d) => `${d.partition}@${d.offset} ${d.id}`)).toEqual([]);
}
