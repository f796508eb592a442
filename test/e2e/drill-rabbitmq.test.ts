/**
 * Issue #15's failure drills on RabbitMQ: a node of the file's own (test/helpers/drill-rabbitmq.ts;
 * the machine's broker on 5672 is never restarted) is stopped once (`rabbitmqctl stop_app`, a few
 * seconds, `start_app`) while every drill is in flight (test/helpers/drill.ts acrossOneRestart:
 * beforeAll sets every drill up at once, restarts the node once each is mid-flight, and each
 * drill's checks then run concurrently, as a promise its own test awaits). A plain amqplib reader
 * checks what the broker holds:
 * - the driver: link() goes down and comes back, a stale ack is a no-op, unconfirmed sends say so,
 *   new sends wait, and a driver whose reconnect timeout the outage outlasts gives up;
 * - `payq produce --rate`: every event acknowledged or failed; the queue holds every acknowledged
 *   event, each once, plus at most the failed ones (sends whose confirm was pending: unconfirmed);
 * - `payq worker` + `payq trace`: every payment completes; redeliveries are duplicates, not losses;
 * - `payq replay-dlq`: the DLQ ends empty, every dead letter is back in its origin queue; extra
 *   copies only of what was in flight at the loss, each counted (`duplicates`, `unconfirmed`);
 * - `payq bench`: loss 0 (publisher confirms), availability drops for the seconds the node was
 *   away, the report counts the reconnect.
 * The runs that are not bounded end on a condition (Ctrl-C once the broker is back and the run
 * went on past it), so each spans the outage however long it takes. Each test prints one
 * `drill figures:` line.
 */
import amqplib from 'amqplib';
import { describe, expect } from 'vitest';
import { descriptorFor } from '../../src/drivers/registry.js';
import type { Delivery, OutgoingMessage } from '../../src/drivers/types.js';
import { BrokerUnavailableError, isPayqError } from '../../src/errors.js';
import { brokersRequired, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import {
  benchDrill as benchAcross,
  destinationEnding,
  drillTests,
  DrillRuns,
  duplicates,
  ENDLESS,
  endPipeline,
  filledDlq,
  interruptOnceResumed,
  NO_FAILURES,
  seconds,
  type OutageHooks,
  type ProduceSummary,
} from '../helpers/drill.js';
import { scenarioCopy } from '../helpers/scenario-file.js';
import { drillRabbitPossible, startDrillRabbit, type DrillRabbit } from '../helpers/drill-rabbitmq.js';
import { sleep, waitFor, withTimeout } from '../helpers/wait.js';

const possible = await drillRabbitPossible();
if (brokersRequired && !possible) throw new Error('CI needs rabbitmq-server to start a drill node of its own');

/** How long the node stays stopped: longer than the giving-up driver's reconnect timeout. */
const PAUSE_MS = 4_000;
/** What payq waits for the node through (a stop_app / start_app under load takes seconds). */
const RECONNECT_MS = 60_000;
/** Long enough for a drill's run that spans the restart, the restart included. */
const DRILL_MS = 180_000;

let rabbit: DrillRabbit | undefined;
const runs = new DrillRuns();

/** Common flags of every payq run here: its node, waited for through the restart. */
const on = () => ['--broker', rabbit!.url, '--reconnect-timeout', `${RECONNECT_MS / 1000}s`];

interface Taken {
  body: Record<string, unknown>;
  headers: Record<string, unknown>;
}

async function withChannel<T>(fn: (ch: amqplib.Channel) => Promise<T>): Promise<T> {
  // A bounded connect: while the node is stopping its port may accept and never answer.
  const conn = await amqplib.connect(rabbit!.url, { timeout: 5_000 });
  conn.on('error', () => undefined);
  try {
    return await fn(await conn.createChannel());
  } finally {
    await conn.close().catch(() => undefined);
  }
}

/** Every message of `queue`, taken with a plain amqplib consumer: the independent reader. */
function drain(queue: string): Promise<Taken[]> {
  return withChannel(async (ch) => {
    const out: Taken[] = [];
    for (;;) {
      const msg = await ch.get(queue, { noAck: true });
      if (msg === false) return out;
      out.push({ body: JSON.parse(msg.content.toString('utf8')) as Record<string, unknown>, headers: (msg.properties.headers ?? {}) as Record<string, unknown> });
    }
  });
}

/** Messages in `queue` now; throws while the node does not answer or the queue does not exist. */
function depth(queue: string): Promise<number> {
  return withChannel(async (ch) => (await ch.checkQueue(queue)).messageCount);
}

const eventId = (m: Taken) => String(m.headers['cloudEvents_id'] ?? m.body['id']);

/** The driver: a group and sends across the restart, and a driver that gives up during it. */
async function driverDrill(outage: OutageHooks): Promise<string> {
  const queue = uniqueName('drilld');
  const driver = await runs.driver(rabbit!.url, { reconnectTimeoutMs: RECONNECT_MS });
  // Gone for longer than its reconnect timeout: the outage outlasts it.
  const short = await runs.driver(rabbit!.url, { reconnectTimeoutMs: 2_000 });
  try {
    const sent = new Set<string>();
    let acked = 0;
    let unconfirmed = 0;
    let otherFailures = 0;
    const seen = new Set<string>();
    let held: Delivery | undefined;
    await driver.declare([{ name: queue }]);
    const sub = await driver.subscribe({ destinations: [queue], group: 'drill', fromBeginning: true, prefetch: 50 }, (deliveries) => {
      for (const d of deliveries) {
        seen.add(d.key ?? '');
        // One delivery kept unsettled across the restart: its late ack must do nothing.
        if (held === undefined) held = d;
        else d.ack();
      }
    });
    let n = 0;
    const batch = (): OutgoingMessage[] =>
      Array.from({ length: 50 }, () => {
        const key = `k${n++}`;
        return { key, type: 'drill', value: Buffer.from(key), headers: { 'message-id': key } };
      });
    await short.send(queue, batch());
    const sends: Promise<void>[] = [];
    let sending = true;
    const loop = (async () => {
      while (sending) {
        const messages = batch();
        const p = driver.send(queue, messages).then(
          () => {
            acked += messages.length;
            for (const m of messages) sent.add(m.key);
          },
          (err: unknown) => {
            if (isPayqError(err) && err.unconfirmed && err.retriable) unconfirmed += messages.length;
            else otherFailures += messages.length;
          },
        );
        sends.push(p);
        await sleep(50);
      }
    })();
    await waitFor(() => acked >= 500, 60_000, () => `${acked} of the first 500 acknowledged`);
    let gaveUp: Promise<{ err: unknown; connected: boolean }> | undefined;
    const outageMs = await outage.midFlight(() => {
      gaveUp = short.send(queue, batch()).then(
        () => ({ err: undefined, connected: short.link().connected }),
        (err: unknown) => ({ err, connected: short.link().connected }),
      );
    });
    // Sends go on after the restart for a while.
    await sleep(1_500);
    sending = false;
    await loop;
    await Promise.all(sends);
    const link = driver.link();
    expect(link).toMatchObject({ connected: true, reconnects: 1 });
    expect(link.downMs).toBeGreaterThan(0);
    // The delivery of the lost channel: acking it now does nothing (no crash, no channel error).
    held!.ack();
    // Every acknowledged send is there to consume (the held one redelivered).
    await waitFor(() => [...sent].every((k) => seen.has(k)), 30_000, () => `${[...sent].filter((k) => !seen.has(k)).length} acknowledged sends not consumed`);
    expect(otherFailures).toBe(0);
    await sub.close();

    // The driver that gave up: its send failed, not retriable, saying how long it tried.
    const failed = await gaveUp!;
    expect(failed.err).toBeInstanceOf(BrokerUnavailableError);
    expect((failed.err as BrokerUnavailableError).retriable).toBe(false);
    expect((failed.err as Error).message).toMatch(/gave up reconnecting after \d+(\.\d)? s/);
    expect(failed.connected).toBe(false);
    return `drill figures: rabbitmq driver: acknowledged ${acked}, unconfirmed ${unconfirmed}, other failures ${otherFailures}, consumed ${seen.size}; link down ${seconds(link.downMs)} s, reconnects ${link.reconnects}; a 2 s reconnect timeout gave up: ${(failed.err as Error).message}; outage ${seconds(outageMs)} s`;
  } finally {
    await runs.close(driver, short);
  }
}

/** payq produce, paced, across the restart; Ctrl-C once it went on past the outage. */
async function produceDrill(outage: OutageHooks): Promise<string> {
  const queue = uniqueName('drillp');
  const producing = runs.start(['produce', ...on(), '--topic', queue, '--count', String(ENDLESS), '--rate', '100', '--seed', '7', '--json']);
  try {
    await waitFor(async () => (await depth(queue).catch(() => 0)) >= 300, 120_000, 'the first 300 events stored');
    const outageMs = await outage.midFlight();
    const code = await interruptOnceResumed(producing, () => depth(queue), 300);

    // Ctrl-C (README "Exit codes"): what was sent is settled, the summary printed, exit 130.
    expect(code, `${producing.stderr()}\n${producing.stdout()}`).toBe(130);
    const summary = JSON.parse(producing.stdout()) as ProduceSummary;
    expect(summary.acked + summary.failed).toBe(summary.sent);
    expect(summary.not_sent).toBe(ENDLESS - summary.sent);
    // It rode it out: it lost the broker and found it again.
    expect(summary.reconnects).toBeGreaterThanOrEqual(1);
    expect(summary.unavailable_s).toBeGreaterThan(0);
    const found = await drain(queue);
    const ids = found.map(eventId);
    // The events a seeded run sends come in the stream's order: those sent are its first `sent`.
    const expected = new Set((await runCli(['produce', '--dry-run', '--count', String(summary.sent), '--seed', '7'])).stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id));
    expect(ids.filter((id) => !expected.has(id))).toEqual([]);
    // payq never sends an unconfirmed event again: each event at most once on the queue.
    expect(duplicates(ids)).toBe(0);
    expect(found.length).toBeGreaterThanOrEqual(summary.acked);
    expect(found.length).toBeLessThanOrEqual(summary.acked + summary.failed);
    // Only the unconfirmed sends may be there besides the acknowledged.
    expect(found.length).toBeLessThanOrEqual(summary.acked + summary.unconfirmed);
    return `drill figures: rabbitmq payq produce: sent ${summary.sent}, acknowledged ${summary.acked}, failed ${summary.failed}, unconfirmed ${summary.unconfirmed} (${found.length - summary.acked} of them stored), found by the reader ${found.length}; broker away ${summary.unavailable_s} s, reconnects ${summary.reconnects}; outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(producing);
  }
}

/** payq worker + payq trace across the restart, fed by a paced produce that Ctrl-C ends. */
async function pipelineDrill(outage: OutageHooks): Promise<string> {
  const { file, destinations } = scenarioCopy(uniqueName('drillw'), { failures: NO_FAILURES });
  const sink = destinationEnding(destinations, '.events');
  const tracer = runs.start(['trace', ...on(), '--scenario', file, '--idle-timeout', '10s', '--stuck-after', '60s', '--json']);
  // trace waits for the layout, which the worker creates.
  const worker = runs.start(['worker', ...on(), '--scenario', file, '--failures', 'off', '--time-scale', '1', '--idle-timeout', '10s', '--json']);
  const started = [tracer, worker];
  try {
    await tracer.waitForStderr('trace: watching', 90_000);
    const producing = runs.start(['produce', ...on(), '--scenario', file, '--count', String(ENDLESS), '--rate', '30', '--seed', '8', '--json']);
    started.push(producing);
    await waitFor(async () => (await depth(sink).catch(() => 0)) >= 100, 120_000, 'the first 100 events at the end of the pipeline');
    const outageMs = await outage.midFlight();
    // Produced until the pipeline's end has 100 more events: every stage works again.
    const produced = await endPipeline({ producing, worker, tracer }, () => depth(sink), 100, DRILL_MS);
    const traced = JSON.parse(tracer.stdout()) as { payments: { seen: number; finished: number; stuck: number; by_class: Record<string, number> }; events: { duplicates: number; missing_steps: number } };
    // Every acknowledged payment completes (a failed send may still have been stored: at most those more).
    expect(traced.payments.finished).toBe(traced.payments.seen);
    expect(traced.payments.stuck).toBe(0);
    expect(traced.payments.seen).toBeGreaterThanOrEqual(produced.acked);
    expect(traced.payments.seen).toBeLessThanOrEqual(produced.acked + produced.failed);
    expect(traced.events.missing_steps).toBe(0);
    // The independent reader: each payment's end in the sink (duplicates allowed, none missing).
    const ended = await drain(sink);
    const ends = new Set(ended.filter((m) => m.body['event'] === 'order_completed' || m.body['event'] === 'payment_declined').map((m) => String(m.body['payment_id'])));
    expect(ends.size).toBe(traced.payments.seen);
    const w = JSON.parse(worker.stdout()) as { totals: { received: number; redelivered: number; handled: number; nacked: number } };
    const { received, redelivered, handled, nacked } = w.totals;
    return `drill figures: rabbitmq payq worker + trace: produced sent ${produced.sent}, acknowledged ${produced.acked}, failed ${produced.failed}; payments finished (trace) ${traced.payments.finished}, ends found by the reader ${ends.size} (sink messages ${ended.length}); duplicates seen by trace ${traced.events.duplicates}; worker received ${received}, redelivered ${redelivered}, handled ${handled}, nacked ${nacked}; outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(...started);
  }
}

/** payq replay-dlq across the restart: one run rides it out and empties the DLQ. */
async function replayDrill(outage: OutageHooks): Promise<string> {
  const { origin, dlq } = await filledDlq(on(), { prefix: uniqueName('drillr'), payments: 400, seed: 9, idle: '3s', timeoutMs: 120_000 });
  const dead = await depth(dlq);
  expect(dead).toBeGreaterThan(300);
  // A run that ends by itself: it starts just before the kill, paced so it spans the outage.
  await outage.othersMidFlight();
  const rate = 20;
  const replaying = runs.start(['replay-dlq', ...on(), '--dlq', dlq, '--rate', String(rate), '--idle-timeout', '5s', '--json']);
  try {
    await waitFor(async () => (await depth(origin).catch(() => 0)) >= 20 || replaying.child.exitCode !== null, 60_000, 'the first 20 replayed');
    expect(replaying.child.exitCode, replaying.stderr()).toBeNull();
    const outageMs = await outage.midFlight();
    const code = await withTimeout(replaying.exited, DRILL_MS, 'replay-dlq');
    const result = JSON.parse(replaying.stdout()) as { seen: number; replayed: number; failed: number; left: number; duplicates: number; unconfirmed: number; elapsed_s: number };
    expect(await depth(dlq)).toBe(0);
    const back = await drain(origin);
    const ids = new Set(back.map(eventId));
    // Each dead letter back in its origin, and nothing left behind: the lost channel's deliveries
    // came back and were replayed then, not counted failed.
    expect(ids.size).toBe(dead);
    expect(code, replaying.stderr()).toBe(0);
    expect(result).toMatchObject({ failed: 0, left: 0 });
    // Counted once each: what the lost channel held was not republished then, nor counted. An ack
    // written just before the loss that the broker never applied is the one copy payq cannot
    // see (replayed, and so seen, twice); so the books balance exactly: the origin holds every
    // replay, each counted duplicate, and at most the unconfirmed republishes besides.
    expect(result.seen).toBe(result.replayed);
    expect(result.replayed).toBeGreaterThanOrEqual(dead);
    expect(back.length).toBeGreaterThanOrEqual(result.replayed + result.duplicates);
    expect(back.length).toBeLessThanOrEqual(result.replayed + result.duplicates + result.unconfirmed);
    // Extra copies only of what was in flight at the loss: at most the sends in flight (batches of
    // rate/10 at this rate, replay.ts), never the run's whole prefetch window.
    const { sendBatchSize, sendMaxInFlight } = descriptorFor('amqp')!.tuning;
    const inFlight = Math.min(sendBatchSize, Math.floor(rate / 10)) * sendMaxInFlight;
    expect(back.length - dead).toBeLessThanOrEqual(inFlight);
    return `drill figures: rabbitmq payq replay-dlq: dead letters ${dead}; seen ${result.seen}, replayed ${result.replayed}, failed ${result.failed}, left ${result.left}, duplicates ${result.duplicates}, unconfirmed ${result.unconfirmed} (exit ${code}); found back in the origin ${back.length} (${ids.size} distinct, ${back.length - ids.size} extra copies); outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(replaying);
  }
}

/** payq bench across the restart: loss 0 (publisher confirms), and the report says the node was away. */
const benchDrill = (outage: OutageHooks) =>
  benchAcross(outage, runs, {
    on: on(),
    timeoutMs: DRILL_MS,
    broker: 'rabbitmq',
    unconfirmed: true,
    reachedEnd: async (sink, bench) => {
      // bench consumes its sink: a queue of the test's own, bound like the sink, sees what reaches it.
      await waitFor(async () => (await depth(sink).then(() => true, () => false)) || bench.child.exitCode !== null, 120_000, 'the bench layout');
      await withChannel(async (ch) => {
        const { queue } = await ch.assertQueue('', { exclusive: true });
        await ch.bindQueue(queue, 'payq', `${sink}.*.*`);
        await waitFor(async () => (await ch.checkQueue(queue)).messageCount >= 20 || bench.child.exitCode !== null, 120_000, 'the first 20 events at the end of the bench pipeline');
      });
    },
  });

const drills = {
  driver: { title: 'the driver: link() goes down and comes back, a stale ack is a no-op, unconfirmed sends say so, new sends wait; one that outlasts its reconnect timeout gives up', drill: driverDrill },
  produce: { title: 'payq produce --rate rides out the restart: every event acknowledged or failed, the queue holds each acknowledged one once', drill: produceDrill },
  pipeline: { title: 'payq worker + payq trace ride out the restart: every payment completes, redeliveries are duplicates', drill: pipelineDrill },
  replay: { title: 'payq replay-dlq rides out the restart: the DLQ ends empty, every dead letter is back in its origin', drill: replayDrill },
  bench: { title: 'payq bench across the restart: loss 0, availability drops for the seconds the node was away, the report counts the reconnect', drill: benchDrill },
};

describe.skipIf(!possible)('RabbitMQ failure drills (a node of the file’s own, stop_app / start_app once, every drill in flight)', () => {
  drillTests(
    runs,
    {
      start: async () => {
        rabbit = await startDrillRabbit();
      },
      restart: (onStopped) => rabbit!.restart(PAUSE_MS, onStopped),
      stop: async () => {
        await rabbit?.stop();
      },
    },
    drills,
    { startMs: DRILL_MS, drillMs: DRILL_MS },
  );
});
