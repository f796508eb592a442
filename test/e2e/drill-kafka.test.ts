/**
 * Issue #15's failure drills on Kafka: a broker of the file's own (test/helpers/drill-kafka.ts,
 * started by scripts/brokers.sh on free ports; the shared 9092 is never touched) is killed with
 * SIGKILL in the middle of the runs and started again on the same data. Each run is checked by an
 * independent reader, plain kafkajs: nothing acknowledged is missing, the counts add up exactly,
 * redeliveries show up as duplicates, never as losses.
 *
 * One restart serves every drill (test/helpers/drill.ts acrossOneRestart): beforeAll starts the
 * broker, sets every drill up at once and starts its runs, restarts the broker once every drill is
 * mid-flight, and each drill's checks then run concurrently, as a promise its own test awaits.
 * A restart takes 20–60 s on a loaded machine: the runs are paced (--rate) and end on a condition
 * (Ctrl-C once the broker is back and the run went on past it; bench's --duration outlasts the
 * slowest restart), so each spans the outage however long it takes; nothing is timed. Each test
 * prints one `drill figures:` line (what was acknowledged, failed, unconfirmed, found by the
 * reader, and the outage: kill → broker answering again).
 */
import { Kafka, logLevel, type Admin } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import type { Delivery, OutgoingMessage, Subscription } from '../../src/drivers/types.js';
import { brokersRequired, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { DrillKafka, drillKafkaAvailable } from '../helpers/drill-kafka.js';
import { declareLayout } from '../helpers/layout.js';
import type { Background } from '../helpers/spawn.js';
import { waitFor } from '../helpers/wait.js';
import {
  benchDrill as benchAcross,
  drillTests,
  DrillRuns,
  duplicates,
  ENDLESS,
  endPipeline,
  filledDlq,
  interruptOnceResumed,
  NO_FAILURES,
  seconds,
  unfinishedPayments,
  type OutageHooks,
  type ProduceSummary,
} from '../helpers/drill.js';
import { scenarioCopy } from '../helpers/scenario-file.js';
import { rideOutBrokerGone } from '../helpers/broker-gone.js';

/** A broker start or restart under load (the script itself gives up after 240 s). */
const BROKER_START_MS = 300_000;
/** Long enough for a run that spans a restart, the restart included. */
const DRILL_MS = 420_000;
/** Readers must not take the outage for the end of the stream. */
const IDLE = '60s';
/**
 * worker and trace end this long after the pipeline's last event. Their idle clock stops while
 * the broker is away, and their input ends only once the pipeline worked again after the restart
 * (its sink grew): this covers a group still settling after that (a rejoin waits out the old
 * member's 10 s session at most), not the outage.
 */
const PIPELINE_IDLE = '30s';

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

/** Records on the topic now; throws while it does not exist or the broker is away. */
async function offsetsCount(topic: string): Promise<number> {
  return withAdmin(async (admin) => {
    const offsets = await admin.fetchTopicOffsets(topic);
    return offsets.reduce((n, p) => n + Number(p.high) - Number(p.low), 0);
  });
}

/** The same, 0 while it does not exist or the broker is away. */
const storedCount = (topic: string) => offsetsCount(topic).catch(() => 0);

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

const ids = (rows: Stored[]) => rows.map((r) => r.id);

/** Every process and driver a drill starts; each drill ends its own, afterAll whatever is left. */
const runs = new DrillRuns();
const start = (args: string[]) => runs.start(args);
const stop = (...list: Background[]) => runs.stop(...list);

/** A payq driver on the drill broker that waits out a restart (which takes up to a minute or more here). */
const drillDriver = () => runs.driver(broker!.url, { reconnectTimeoutMs: BROKER_START_MS });

function messages(from: number, n: number): OutgoingMessage[] {
  return Array.from({ length: n }, (_, i) => ({ key: `k${(from + i) % 97}`, type: 'order_placed', value: Buffer.from(JSON.stringify({ id: `e${from + i}` })), headers: {} }));
}

const idOf = (d: Delivery) => (JSON.parse(d.value.toString('utf8')) as { id: string }).id;

/** Records on the topic now, asked until the broker answers (storedCount says 0 when it does not). */
async function storedNow(topic: string): Promise<number> {
  let n: number | undefined;
  await waitFor(async () => (n = await offsetsCount(topic).catch(() => undefined)) !== undefined, 120_000, `the offsets of ${topic}`);
  return n!;
}

/** Common flags of every payq run here: its broker, waited for through the slowest restart. */
const on = () => ['--broker', broker!.url, '--reconnect-timeout', `${BROKER_START_MS / 1000}s`];

const available = drillKafkaAvailable();
if (!available && brokersRequired) throw new Error('the Kafka drills need the Kafka jars: run scripts/brokers.sh up first');

/** Driver level: a tap and a group across the restart, a send and a subscribe during it. */
async function subscriptionsDrill(outage: OutageHooks): Promise<string> {
  const topic = uniqueName('drill-sub');
  const driver = await drillDriver();
  const late = await drillDriver();
  try {
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
    const outageMs = await outage.midFlight(() => {
      sending = (async () => {
        for (let b = 0; b < 5; b++) await driver.send(topic, messages(500 + b * 100, 100));
      })();
      lateTap = late.subscribe({ destinations: [topic], group: '', fromBeginning: false, prefetch: 100, tap: true }, (ds) => {
        for (const d of ds) {
          lateSeen.push(idOf(d));
          d.ack();
        }
      });
      // Awaited below; not unhandled meanwhile.
      sending.catch(() => undefined);
      lateTap.catch(() => undefined);
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
    return `drill figures: kafka driver subscriptions: sent 1500 (500 of them while the broker was away), tap saw ${tapSeen.length} (${duplicates(tapSeen)} duplicates), group saw ${groupSeen.length} (${duplicates(groupSeen)} duplicates), late tap saw ${lateSeen.length}; link down ${seconds(link.downMs)} s, reconnects ${link.reconnects}; outage ${seconds(outageMs)} s`;
  } finally {
    await runs.close(driver, late);
  }
}

/** payq produce, paced, across the restart; Ctrl-C once it went on past the outage. */
async function produceDrill(outage: OutageHooks): Promise<string> {
  const topic = uniqueName('drill-produce');
  const producing = start(['produce', ...on(), '--topic', topic, '--count', String(ENDLESS), '--rate', '100', '--seed', '15', '--json']);
  try {
    await waitFor(async () => (await storedCount(topic)) >= 500, 120_000, 'the first 500 events stored');
    const outageMs = await outage.midFlight();
    const code = await interruptOnceResumed(producing, () => offsetsCount(topic), 500);

    // Ctrl-C (README "Exit codes"): what was sent is settled, the summary printed, exit 130.
    expect(code, `${producing.stderr()}\n${producing.stdout()}`).toBe(130);
    expect(producing.stderr()).toMatch(/interrupted: [\d,]+ of [\d,]+ sent events acknowledged/);
    const summary = JSON.parse(producing.stdout()) as ProduceSummary;
    expect(summary.interrupted).toBe(true);
    expect(summary.acked + summary.failed, producing.stdout()).toBe(summary.sent);
    expect(summary.not_sent).toBe(ENDLESS - summary.sent);
    // It rode out the outage: it lost the broker and found it again.
    expect(summary.reconnects).toBeGreaterThanOrEqual(1);
    expect(summary.unavailable_s).toBeGreaterThan(0);

    const stored = await readAll(topic);
    // The events a seeded run sends come in the stream's order: those sent are its first `sent`.
    const expected = (await runCli(['produce', '--dry-run', '--count', String(summary.sent), '--seed', '15'])).stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    expect(expected).toHaveLength(summary.sent);
    const known = new Set(expected);
    const found = ids(stored);
    // Nothing but produce's events, none twice (the idempotent producer), none acknowledged lost.
    expect(found.filter((id) => !known.has(id))).toEqual([]);
    expect(duplicates(found)).toBe(0);
    expect(stored.length).toBeGreaterThanOrEqual(summary.acked);
    expect(stored.length).toBeLessThanOrEqual(summary.acked + summary.failed);
    // produce does not say which events failed: the ones beyond the acknowledged are failed ones the broker stored.
    const unconfirmed = stored.length - summary.acked;
    expect(unconfirmed).toBeLessThanOrEqual(summary.unconfirmed);
    return `drill figures: kafka payq produce: sent ${summary.sent}, acknowledged ${summary.acked}, failed ${summary.failed}, unconfirmed (failed but stored) ${unconfirmed}, found by the reader ${stored.length} of ${summary.sent}; broker away ${summary.unavailable_s} s, reconnects ${summary.reconnects}; outage ${seconds(outageMs)} s; errors ${JSON.stringify(summary.errors)}`;
  } finally {
    stop(producing);
  }
}

/** payq worker + payq trace across the restart, fed by a paced produce that Ctrl-C ends. */
async function pipelineDrill(outage: OutageHooks): Promise<string> {
  const { file, destinations } = scenarioCopy(uniqueName('drill-pipe'), { failures: NO_FAILURES });
  await declareLayout(broker!.url, destinations);
  const tracer = start(['trace', ...on(), '--scenario', file, '--idle-timeout', PIPELINE_IDLE, '--stuck-after', '300s', '--json', '-v']);
  const started = [tracer];
  try {
    await tracer.waitForStderr('trace: watching', BROKER_START_MS);
    const worker = start(['worker', ...on(), '--scenario', file, '--time-scale', '0', '--idle-timeout', PIPELINE_IDLE, '--json']);
    const producing = start(['produce', ...on(), '--scenario', file, '--count', String(ENDLESS), '--rate', '30', '--seed', '16', '--json']);
    started.push(worker, producing);
    const sink = destinations.find((d) => d.endsWith('.events'))!;
    await waitFor(async () => (await storedCount(sink)) >= 200, 120_000, 'the first 200 events at the end of the pipeline');
    const outageMs = await outage.midFlight();
    // Produced until the pipeline's end has 200 more events: every stage works again.
    const produced = await endPipeline({ producing, worker, tracer }, () => offsetsCount(sink), 200, DRILL_MS);

    // The independent reader: the payments that entered, and how each ended.
    const entry = destinations.find((d) => d.endsWith('.orders'))!;
    const entered = await readAll(entry);
    const ended = await readAll(sink);
    expect(duplicates(ids(entered))).toBe(0);
    expect(entered.length).toBeGreaterThanOrEqual(produced.acked);
    expect(entered.length).toBeLessThanOrEqual(produced.sent);
    const { unfinished, refundsOpen } = unfinishedPayments(entered, ended);
    expect(unfinished).toEqual([]);
    expect(refundsOpen).toEqual([]);

    const t = JSON.parse(tracer.stdout()) as { payments: { seen: number; finished: number; stuck: number; in_flight: number; by_class: Record<string, number> }; events: { duplicates: number; missing_steps: number } };
    expect(t.payments).toMatchObject({ seen: entered.length, finished: entered.length, stuck: 0, in_flight: 0 });
    expect(t.payments.by_class['dead-lettered'] ?? 0).toBe(0);
    expect(t.events.missing_steps).toBe(0);
    return `drill figures: kafka payq worker + trace: produced sent ${produced.sent}, acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed (entered beyond acknowledged) ${entered.length - produced.acked}; payments entered (reader) ${entered.length}, finished (trace) ${t.payments.finished}, finished (reader) ${entered.length - unfinished.length}; duplicates seen by trace ${t.events.duplicates}, duplicate ends stored ${duplicates(ids(ended))}; outage ${seconds(outageMs)} s`;
  } finally {
    stop(...started);
  }
}

/** payq replay-dlq across the restart (Ctrl-C once it went on past it), then a second run resumes. */
async function replayDrill(outage: OutageHooks): Promise<string> {
  // replay-dlq's group (core/replay.ts REPLAY_DEFAULTS): this broker is the file's own.
  const group = 'payq-replay';
  const started: Background[] = [];
  try {
    // 1. Fill the DLQ: every authorised payment fails permanently at capture-service.
    const { origin: capture, dlq } = await filledDlq(on(), { prefix: uniqueName('drill-replay'), payments: 600, seed: 17, idle: '5s', timeoutMs: DRILL_MS });
    const dead = await readAll(dlq);
    expect(dead.length).toBeGreaterThan(400);
    expect(duplicates(ids(dead))).toBe(0);
    const before = await storedNow(capture);

    // 2. Replay, paced so the run is still replaying when the broker comes back (5/s: 80 s and more).
    const replayArgs = ['replay-dlq', ...on(), '--dlq', dlq, '--json'];
    const replaying = start([...replayArgs, '--rate', '5', '--idle-timeout', IDLE]);
    started.push(replaying);
    await waitFor(async () => (await storedCount(capture)) >= before + 25, 120_000, 'the first 25 replayed');
    const outageMs = await outage.midFlight();
    const code = await interruptOnceResumed(replaying, () => offsetsCount(capture), 20);
    expect(code, `${replaying.stderr()}\n${replaying.stdout()}`).toBe(130);
    expect(replaying.stderr()).toMatch(/interrupted: [\d,]+ replayed and [\d,]+ parked; the rest stay in the DLQ/);
    const r1 = JSON.parse(replaying.stdout()) as { seen: number; replayed: number; failed: number; left: number };
    // What the group has committed on the DLQ was republished.
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
    return `drill figures: kafka payq replay-dlq: dead letters ${dead.length}; first run (exit ${code}, Ctrl-C after the restart) seen ${r1.seen}, replayed ${r1.replayed}, failed ${r1.failed}, left ${r1.left}; second run replayed ${r2.replayed}; found back at the origin ${dead.length - dead.filter((d) => (times.get(d.id) ?? 0) < 2).length} of ${dead.length} (${replays - dead.length} republished twice); outage ${seconds(outageMs)} s`;
  } finally {
    stop(...started);
  }
}

/**
 * How long bench runs: it starts once the other drills are mid-flight, so this is its own start,
 * the slowest restart (60 s) and a margin: it still produces for a while once the broker is back
 * and its stages are consuming again (a group's rejoin after a Kafka restart can wait for the
 * old member's 10 s session timeout). Not longer than the other drills take after the restart.
 */
const BENCH_DURATION_S = 90;

/** payq bench across the restart: loss 0 (acks=all), and the report says the broker was away. */
const benchDrill = (outage: OutageHooks) =>
  benchAcross(outage, runs, {
    on: on(),
    durationS: BENCH_DURATION_S,
    timeoutMs: DRILL_MS,
    broker: 'kafka',
    unconfirmed: false,
    reachedEnd: (sink, bench) => waitFor(async () => (await storedCount(sink)) >= 20 || bench.child.exitCode !== null, 120_000, 'the first 20 events at the end of the bench pipeline'),
  });

const drills = {
  subscriptions: { title: 'driver: a tap and a group ride out the restart from their committed positions, acks held across it count, a subscribe during the outage waits for the broker; link() tells it', drill: subscriptionsDrill },
  produce: { title: 'payq produce --rate across a restart: every event acknowledged or failed; the topic holds exactly the acknowledged plus at most the failed', drill: produceDrill },
  pipeline: { title: 'payq worker + payq trace across a restart: every payment completes; redeliveries are duplicates, not losses', drill: pipelineDrill },
  replay: { title: 'payq replay-dlq across a restart: resumes, nothing lost, a dead letter leaves the DLQ only once its republish is stored', drill: replayDrill },
  bench: { title: 'payq bench across a restart: loss 0, availability drops for the seconds the broker was away, the report counts the reconnect', drill: benchDrill },
};

describe.skipIf(!available)('Kafka failure drills (a broker of the file’s own, SIGKILLed once and restarted on the same data, every drill in flight)', () => {
  const outcomes = drillTests(
    runs,
    {
      start: async () => {
        broker = await DrillKafka.start();
        kafka = client();
      },
      restart: (onKilled) => broker!.restart(2, onKilled),
      stop: async () => {
        await broker?.stop();
      },
    },
    drills,
    { startMs: BROKER_START_MS * 2, drillMs: DRILL_MS },
  );

  // Last: the broker is stopped for good; every drill is done with it first.
  it('payq consume, worker, trace, replay-dlq and bench end once the broker is gone for good: exit 3, one line, nothing counted as lost', async () => {
    await Promise.allSettled(Object.values(outcomes()));
    await runs.stopAll();
    await rideOutBrokerGone(
      {
        url: broker!.url,
        held: async (topics) => (await Promise.all(topics.map((t) => storedCount(t)))).reduce((a, b) => a + b, 0),
        stopForGood: () => broker!.stop(),
      },
      'kafka',
      { readyMs: 180_000 },
    );
  }, DRILL_MS);
});

/** Every DLQ record below the group's committed offset has been republished to its origin. */
async function expectCommittedRepublished(group: string, dlq: string, origin: string, dead: Stored[]): Promise<void> {
  const at = await committed(group, dlq);
  const gone = dead.filter((d) => BigInt(d.offset) < (at.get(d.partition) ?? -1n));
  const onOrigin = new Map<string, number>();
  for (const m of await readAll(origin)) onOrigin.set(m.id, (onOrigin.get(m.id) ?? 0) + 1);
  expect(gone.filter((d) => (onOrigin.get(d.id) ?? 0) < 2).map((d) => `${d.partition}@${d.offset} ${d.id}`)).toEqual([]);
}
