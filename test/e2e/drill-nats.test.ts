/**
 * Issue #15's failure drills on NATS JetStream: a nats-server of the file's own
 * (test/helpers/drill-nats.ts; the machine's 4222 is never touched) is killed with SIGKILL once,
 * while every drill is in flight, and started again on the same store and port a few seconds later
 * (test/helpers/drill.ts acrossOneRestart: beforeAll sets every drill up at once, restarts the
 * server once each is mid-flight, and each drill's checks then run concurrently, as a promise its
 * own test awaits). Each run is checked by an independent reader, a plain @nats-io/jetstream
 * client: nothing acknowledged is missing, the counts add up exactly, redeliveries show up as
 * duplicates, never as losses. The runs that are not bounded end on a condition (Ctrl-C once the
 * server is back and the run went on past it), so each spans the outage however long it takes.
 *
 * Duplicates vary from run to run: nats-server 2.9 writes a durable consumer's acks to its store
 * lazily, so after a SIGKILL it may hand out again what was acked in the last moments (up to a
 * whole run's worth for a short replay). They are re-handled with the same ids: never losses.
 *
 * Each test prints one `drill figures:` line (events acknowledged, failed, unconfirmed, found by
 * the reader, and the time down as an observing payq driver's link() measured it).
 */
import { jetstream, jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect, type NatsConnection } from '@nats-io/transport-node';
import { afterEach, describe, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { BrokerUnavailableError, DeliveryError, isPayqError } from '../../src/errors.js';
import { uniqueName } from '../helpers/brokers.js';
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
  unfinishedPayments,
  type OutageHooks,
  type ProduceSummary,
} from '../helpers/drill.js';
import { scenarioCopy } from '../helpers/scenario-file.js';
import { DrillNats, natsServerAvailable } from '../helpers/drill-nats.js';
import { declareLayout } from '../helpers/layout.js';
import { sleep, waitFor, withTimeout } from '../helpers/wait.js';

/** How long the server stays down: longer than the giving-up driver's reconnect timeout. */
const DOWN_MS = 4_000;
/** What payq waits for the server through. */
const RECONNECT_MS = 60_000;
/** Long enough for a drill's run that spans the restart, the restart included. */
const DRILL_MS = 180_000;

interface Stored {
  seq: number;
  id: string;
  event: string;
  payment: string;
  replayCount: number;
}

let server: DrillNats | undefined;
/** A payq driver that only watches the link, to time the outage as payq sees it. */
let watch: Driver | undefined;
const runs = new DrillRuns();

/** Common flags of every payq run here: its server (with URL parameters), waited for through the restart. */
const on = (params = '') => ['--broker', `${server!.url}${params}`, '--reconnect-timeout', `${RECONNECT_MS / 1000}s`];

async function withNats<T>(fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await natsConnect({ servers: `127.0.0.1:${server!.port}`, maxReconnectAttempts: 0 });
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

/** Messages now in the stream holding payq's destination; throws while the server does not answer or there is no such stream. */
async function streamCount(destination: string): Promise<number> {
  return withNats(async (nc) => {
    const jsm = await jetstreamManager(nc);
    return (await jsm.streams.info(await jsm.streams.find(`payq.${destination}._`))).state.messages;
  });
}

/** The same, 0 while there is none or the server is away. */
const storedCount = (destination: string) => streamCount(destination).catch(() => 0);

/** Every message of the destination's stream, read with an ordered consumer: the independent reader. */
async function readAll(destination: string): Promise<Stored[]> {
  return withNats(async (nc) => {
    const jsm = await jetstreamManager(nc);
    const stream = await jsm.streams.find(`payq.${destination}._`);
    const total = (await jsm.streams.info(stream)).state.messages;
    const out: Stored[] = [];
    if (total === 0) return out;
    const consumer = await jetstream(nc).consumers.get(stream);
    const messages = await consumer.consume();
    for await (const m of messages) {
      const body = JSON.parse(new TextDecoder().decode(m.data)) as { id: string; event: string; payment_id: string };
      out.push({ seq: m.seq, id: body.id, event: body.event, payment: body.payment_id, replayCount: Number(m.headers?.get('payq-replay-count') || 0) });
      if (out.length >= total) break;
    }
    await messages.close();
    return out;
  });
}

const ids = (rows: Stored[]) => rows.map((r) => r.id);
const down = () => `down ${Math.round(watch!.link().downMs)} ms`;

/** The driver: sends flat out across the restart, four batches at a time. */
async function sendDrill(outage: OutageHooks): Promise<string> {
  const driver = await runs.driver(server!.url, { reconnectTimeoutMs: RECONNECT_MS });
  try {
    const destination = uniqueName('drill-send');
    await driver.declare([{ name: destination }]);
    const PER_BATCH = 100;
    const acked: string[] = [];
    const failed: string[] = [];
    let unconfirmed = 0;
    const otherErrors: unknown[] = [];
    let batch = 0;
    let stopping = false;
    const sender = async () => {
      while (!stopping) {
        const n = batch++;
        const messages: OutgoingMessage[] = [];
        for (let i = 0; i < PER_BATCH; i++) {
          const id = `e-${n}-${i}`;
          messages.push({ key: `pay-${n}-${i}`, type: 'order_placed', value: Buffer.from(JSON.stringify({ id, event: 'order_placed', payment_id: `pay-${n}-${i}` })), headers: {} });
        }
        const batchIds = messages.map((m) => (JSON.parse(m.value.toString()) as { id: string }).id);
        try {
          await driver.send(destination, messages);
          acked.push(...batchIds);
        } catch (err) {
          failed.push(...batchIds);
          if (err instanceof DeliveryError && err.unconfirmed && err.retriable) unconfirmed += batchIds.length;
          else otherErrors.push(err);
        }
        // Paced, so the other drills get the machine too; four senders keep batches in flight.
        await sleep(100);
      }
    };
    // Four batches in flight, as produce sends: the kill may find some awaiting their PubAck.
    const sending = Promise.all([sender(), sender(), sender(), sender()]);
    await waitFor(() => acked.length >= 1_000, 60_000, () => `${acked.length} acknowledged before the kill`);
    let seenDown: Promise<{ startedBefore: number; stillDown: boolean }> | undefined;
    const outageMs = await outage.midFlight(() => {
      seenDown = (async () => {
        await waitFor(() => !driver.link().connected, 5_000, 'the driver to see the link lost');
        const startedBefore = batch;
        await sleep(DOWN_MS / 2);
        return { startedBefore, stillDown: !driver.link().connected };
      })();
      seenDown.catch(() => undefined);
    });
    const { startedBefore, stillDown } = await seenDown!;
    expect(stillDown).toBe(true);
    const ackedBefore = acked.length;
    await waitFor(() => acked.length >= ackedBefore + 1_000, 60_000, () => `${acked.length - ackedBefore} acknowledged after the restart`);
    stopping = true;
    await sending;
    const link = driver.link();

    expect(otherErrors.map(String)).toEqual([]);
    expect(link).toMatchObject({ connected: true, reconnects: 1 });
    expect(link.downMs).toBeGreaterThan(0);
    // Sends started while the server was away (more than the four in flight) waited and went.
    expect(batch).toBeGreaterThan(startedBefore);
    expect(acked.length + failed.length).toBe(batch * PER_BATCH);

    const stored = await readAll(destination);
    const found = new Set(ids(stored));
    expect(duplicates(ids(stored))).toBe(0);
    expect(acked.filter((id) => !found.has(id))).toEqual([]);
    // Only failed messages may be there besides the acknowledged ones, and only unconfirmed ones.
    const ackedIds = new Set(acked);
    const extra = ids(stored).filter((id) => !ackedIds.has(id));
    expect(extra.length).toBeLessThanOrEqual(unconfirmed);
    expect(stored.length).toBe(acked.length + extra.length);
    return `drill figures: nats driver send: acknowledged ${acked.length}, failed ${failed.length}, unconfirmed ${unconfirmed} (${extra.length} of them stored), found ${stored.length}; down ${Math.round(link.downMs)} ms, reconnects ${link.reconnects}; outage ${seconds(outageMs)} s`;
  } finally {
    await runs.close(driver);
  }
}

/** The driver: one whose reconnect timeout the outage outlasts gives up, and stays given up. */
async function goneDrill(outage: OutageHooks): Promise<string> {
  const driver = await runs.driver(server!.url, { reconnectTimeoutMs: 1_500 });
  try {
    const destination = uniqueName('drill-gone');
    await driver.declare([{ name: destination }]);
    let sending: Promise<unknown> | undefined;
    const outageMs = await outage.midFlight(() => {
      sending = (async () => {
        await waitFor(() => !driver.link().connected, 5_000, 'the driver to see the link lost');
        return driver.send(destination, [{ key: 'k', type: 'order_placed', value: Buffer.from('{}'), headers: {} }]).then(
          () => undefined,
          (e: unknown) => e,
        );
      })();
      sending.catch(() => undefined);
    });
    const err = await sending!;
    expect(err).toBeInstanceOf(BrokerUnavailableError);
    expect(isPayqError(err) && err.retriable).toBe(false);
    expect((err as Error).message).toMatch(/unreachable for 1\.\d s: gave up reconnecting \(reconnect timeout 1\.5 s\)/);
    // And it stays given up, with the server back.
    await expect(driver.exists([destination])).rejects.toThrow(/gave up reconnecting/);
    expect(driver.link().connected).toBe(false);
    return `drill figures: nats driver gone: ${(err as Error).message}; outage ${seconds(outageMs)} s`;
  } finally {
    await runs.close(driver);
  }
}

/** payq produce, paced, across the restart; Ctrl-C once it went on past the outage. */
async function produceDrill(outage: OutageHooks): Promise<string> {
  const topic = uniqueName('drill-produce');
  const producing = runs.start(['produce', ...on(), '--topic', topic, '--count', String(ENDLESS), '--rate', '200', '--seed', '15', '--json']);
  try {
    await waitFor(async () => (await storedCount(topic)) >= 500, 60_000, 'the first 500 events stored');
    const outageMs = await outage.midFlight();
    const code = await interruptOnceResumed(producing, () => streamCount(topic), 500);
    expect(code, `${producing.stderr()}\n${producing.stdout()}`).toBe(130);
    const summary = JSON.parse(producing.stdout()) as ProduceSummary;
    expect(summary.not_sent).toBe(ENDLESS - summary.sent);
    expect(summary.acked + summary.failed).toBe(summary.sent);
    // Every failure was a PubAck lost with the connection, none a refusal.
    expect(summary.unconfirmed).toBe(summary.failed);
    expect(summary.reconnects).toBeGreaterThanOrEqual(1);

    const stored = await readAll(topic);
    const expected = new Set((await runCli(['produce', '--dry-run', '--count', String(summary.sent), '--seed', '15'])).stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id));
    expect(stored.filter((s) => !expected.has(s.id))).toEqual([]);
    expect(duplicates(ids(stored))).toBe(0);
    expect(stored.length).toBeGreaterThanOrEqual(summary.acked);
    expect(stored.length).toBeLessThanOrEqual(summary.acked + summary.unconfirmed);
    expect(watch!.link()).toMatchObject({ connected: true, reconnects: 1 });
    return `drill figures: nats payq produce: sent ${summary.sent}, acknowledged ${summary.acked}, failed ${summary.failed}, unconfirmed ${summary.unconfirmed}, found ${stored.length} (${summary.sent - stored.length} not stored); broker away ${summary.unavailable_s} s; ${down()}; outage ${seconds(outageMs)} s; errors ${JSON.stringify(summary.errors)}`;
  } finally {
    runs.stop(producing);
  }
}

/**
 * payq consume (a tap) across the restart, idle sooner than the outage lasts: it reads the stream
 * from its beginning, joining a paced produce that Ctrl-C ends.
 */
async function consumeDrill(outage: OutageHooks): Promise<string> {
  const topic = uniqueName('drill-consume');
  const producing = runs.start(['produce', ...on(), '--topic', topic, '--count', String(ENDLESS), '--rate', '100', '--seed', '18', '--json']);
  const started = [producing];
  try {
    await waitFor(async () => (await storedCount(topic)) >= 100, 60_000, 'the first 100 events stored');
    // Its idle timeout is shorter than the outage: the time the server is away does not count.
    const consumer = runs.start(['consume', ...on(), '--topic', topic, '--from-beginning', '--idle-timeout', '3s', '--json', '-v']);
    started.push(consumer);
    await waitFor(() => consumer.stdout().split('\n').length > 100 || consumer.child.exitCode !== null, 60_000, 'consume printing the first 100 events');
    expect(consumer.child.exitCode, consumer.stderr()).toBeNull();
    const outageMs = await outage.midFlight();
    const code = await interruptOnceResumed(producing, () => streamCount(topic), 300);
    expect(code, producing.stderr()).toBe(130);
    const produced = JSON.parse(producing.stdout()) as ProduceSummary;
    expect(produced.acked + produced.failed).toBe(produced.sent);
    expect(await withTimeout(consumer.exited, DRILL_MS, 'consume'), consumer.stderr()).toBe(0);
    const printed = consumer.stdout().trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    const stored = await readAll(topic);
    const seen = new Set(printed);
    const storedIds = new Set(ids(stored));
    expect(stored.filter((m) => !seen.has(m.id)).map((m) => m.id)).toEqual([]);
    expect(printed.filter((id) => !storedIds.has(id))).toEqual([]);
    return `drill figures: nats payq consume (tap): produced acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed ${produced.unconfirmed}; stored ${stored.length}, printed ${printed.length} (${duplicates(printed)} duplicates); ${down()}; outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(...started);
  }
}

/** payq worker + payq trace across the restart, fed by a paced produce that Ctrl-C ends. */
async function pipelineDrill(outage: OutageHooks): Promise<string> {
  const { file, destinations } = scenarioCopy(uniqueName('drill-pipe'), { failures: NO_FAILURES });
  await declareLayout(server!.url, destinations);
  const tracer = runs.start(['trace', ...on(), '--scenario', file, '--idle-timeout', '15s', '--stuck-after', '60s', '--json', '-v']);
  const started = [tracer];
  try {
    await tracer.waitForStderr('trace: watching');
    // A delivery in transit when the server died is pending on the server but never arrived: it
    // comes again after ack_wait, which a shorter one (10 s) brings within the worker's run.
    const worker = runs.start(['worker', ...on('?ackWait=10'), '--scenario', file, '--time-scale', '0', '--idle-timeout', '15s', '--json']);
    const producing = runs.start(['produce', ...on(), '--scenario', file, '--count', String(ENDLESS), '--rate', '50', '--seed', '16', '--json']);
    started.push(worker, producing);
    const sink = destinationEnding(destinations, '.events');
    await waitFor(async () => (await storedCount(sink)) >= 200, 60_000, 'the first 200 events at the end of the pipeline');
    const outageMs = await outage.midFlight();
    // Produced until the pipeline's end has 200 more events: every stage works again.
    const produced = await endPipeline({ producing, worker, tracer }, () => streamCount(sink), 200, DRILL_MS);
    expect(produced.unconfirmed).toBe(produced.failed);

    // The independent reader: the payments that entered, and how each ended.
    const entered = await readAll(destinationEnding(destinations, '.orders'));
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
    return `drill figures: nats payq worker + trace: produced sent ${produced.sent}, acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed ${produced.unconfirmed}; payments entered ${entered.length}, finished (trace) ${t.payments.finished}, finished (reader) ${entered.length - unfinished.length}; duplicates seen by trace ${t.events.duplicates}, duplicate ends stored ${duplicates(ids(ended))}; ${down()}; outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(...started);
  }
}

/** payq replay-dlq across the restart; a second run resumes with what the first could not finish. */
async function replayDrill(outage: OutageHooks): Promise<string> {
  const { origin, dlq } = await filledDlq(on(), { prefix: uniqueName('drill-replay'), payments: 400, seed: 17, idle: '3s', timeoutMs: 120_000 });
  const dead = await readAll(dlq);
  expect(dead.length).toBeGreaterThan(300);
  const before = await streamCount(origin);
  // An ack written just before the kill is lost with the connection: JetStream redelivers that
  // message after ack_wait, which a shorter one (15 s) brings within the next run. Shorter
  // still, what the run holds (paced by --rate) would pass it during the outage and come twice.
  const replayOn = on('?ackWait=15');
  // A run that ends by itself: it starts just before the kill, paced so it spans the outage.
  await outage.othersMidFlight();
  const replaying = runs.start(['replay-dlq', ...replayOn, '--dlq', dlq, '--rate', '30', '--idle-timeout', '8s', '--json']);
  try {
    await waitFor(async () => (await storedCount(origin)) >= before + 30 || replaying.child.exitCode !== null, 60_000, 'the first 30 replayed');
    expect(replaying.child.exitCode, replaying.stderr()).toBeNull();
    const outageMs = await outage.midFlight();
    const code = await withTimeout(replaying.exited, DRILL_MS, 'replay-dlq');
    expect([0, 4], replaying.stderr()).toContain(code);
    const r1 = JSON.parse(replaying.stdout()) as { seen: number; replayed: number; failed: number; left: number };
    if (code === 4) expect(r1.failed + r1.left).toBeGreaterThan(0);
    // Run again: it resumes with what the first run could not finish (failed, or acked but lost).
    const again = await runCli(['replay-dlq', ...replayOn, '--dlq', dlq, '--idle-timeout', '10s', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const r2 = JSON.parse(again.stdout) as { seen: number; replayed: number; failed: number };
    const after = await runCli(['replay-dlq', ...replayOn, '--dlq', dlq, '--dry-run', '--idle-timeout', '2s', '--json']);
    expect(after.code, after.stderr).toBe(0);
    expect((JSON.parse(after.stdout) as { seen: number }).seen).toBe(0);

    // The independent reader: every dead letter is back at its origin as a replay (once or more).
    const replayed = (await readAll(origin)).filter((m) => m.replayCount > 0);
    const back = new Set(ids(replayed));
    const deadIds = new Set(ids(dead));
    expect(dead.filter((d) => !back.has(d.id)).map((d) => d.id)).toEqual([]);
    expect(replayed.filter((m) => !deadIds.has(m.id))).toEqual([]);
    expect(r1.replayed + r2.replayed).toBeGreaterThanOrEqual(dead.length);
    return `drill figures: nats payq replay-dlq: dead letters ${dead.length}; first run (exit ${code}) replayed ${r1.replayed}, failed ${r1.failed}, left ${r1.left}; second run replayed ${r2.replayed}; found back at the origin ${back.size} (${duplicates(ids(replayed))} duplicates); ${down()}; outage ${seconds(outageMs)} s`;
  } finally {
    runs.stop(replaying);
  }
}

/** payq bench across the restart: loss 0 (JetStream acks), and the report says the server was away. */
const benchDrill = (outage: OutageHooks) =>
  benchAcross(outage, runs, {
    on: on(),
    timeoutMs: DRILL_MS,
    broker: 'nats',
    unconfirmed: true,
    reachedEnd: (sink, bench) => waitFor(async () => (await storedCount(sink)) >= 20 || bench.child.exitCode !== null, 60_000, 'the first 20 events at the end of the bench pipeline'),
  });

const drills = {
  send: { title: 'driver: sends in flight fail unconfirmed, sends during the outage wait and go, link() tells the outage; every acknowledged message is stored', drill: sendDrill },
  gone: { title: 'driver: a server that stays away past the reconnect timeout ends in BrokerUnavailableError, not retriable, saying how long it tried', drill: goneDrill },
  produce: { title: 'payq produce --rate across a restart: every event acknowledged or failed, the stream holds exactly the acknowledged plus at most the unconfirmed', drill: produceDrill },
  consume: { title: 'payq consume (a tap) across a restart: prints every event the stream holds, before and after the restart; the outage is not idleness', drill: consumeDrill },
  pipeline: { title: 'payq worker + payq trace across a restart: every payment completes; redeliveries are duplicates, not losses', drill: pipelineDrill },
  replay: { title: 'payq replay-dlq across a restart: resumes, and every dead letter is back at its origin', drill: replayDrill },
  bench: { title: 'payq bench across a restart: loss 0, availability drops for the seconds the server was away, the report counts the reconnect', drill: benchDrill },
};

describe.skipIf(!natsServerAvailable())('NATS failure drills (a server of the file’s own, SIGKILLed once and restarted on the same store, every drill in flight)', () => {
  drillTests(
    runs,
    {
      start: async () => {
        server = await DrillNats.start();
        watch = await runs.driver(server.url);
      },
      restart: (onKilled) => server!.restart(DOWN_MS, 'SIGKILL', onKilled),
      stop: async () => {
        await server?.dispose();
      },
    },
    drills,
    { startMs: DRILL_MS, drillMs: DRILL_MS },
  );
});

describe.skipIf(!natsServerAvailable())('NATS: a tap whose consumer the server lost (a server of the test’s own)', () => {
  let own: DrillNats | undefined;
  afterEach(async () => {
    await own?.dispose();
  });

  it('driver: a tap whose ephemeral consumer the server lost gets a new one from where it was, seeing each message once', async () => {
    own = await DrillNats.start();
    const driver = await createDriver(own.url);
    await driver.connect();
    try {
      const destination = uniqueName('drill-tap');
      await driver.declare([{ name: destination }]);
      const batch = (from: number): OutgoingMessage[] =>
        Array.from({ length: 100 }, (_, i) => ({ key: `k${from + i}`, type: 'order_placed', value: Buffer.from(JSON.stringify({ id: `e${from + i}` })), headers: {} }));
      const seen: string[] = [];
      const tap = await driver.subscribe({ destinations: [destination], group: '', fromBeginning: false, prefetch: 50, tap: true }, (deliveries) => {
        for (const d of deliveries) {
          seen.push((JSON.parse(d.value.toString()) as { id: string }).id);
          d.ack();
        }
      });
      await driver.send(destination, batch(0));
      await waitFor(() => seen.length >= 100, 20_000, () => `${seen.length} of the first 100 seen by the tap`);
      // The server forgets the tap's consumer (as one that lost it in a restart would).
      const nc = await natsConnect({ servers: `127.0.0.1:${own.port}`, maxReconnectAttempts: 0 });
      try {
        const jsm = await jetstreamManager(nc);
        const stream = await jsm.streams.find(`payq.${destination}._`);
        const consumers = [];
        for await (const c of jsm.consumers.list(stream)) consumers.push(c.name);
        expect(consumers).toHaveLength(1);
        await jsm.consumers.delete(stream, consumers[0]!);
        await driver.send(destination, batch(100));
        await waitFor(() => seen.length >= 200, 20_000, () => `${seen.length} of 200 seen by the tap`);
        await sleep(1_500);
        expect(seen.length).toBe(200);
        expect(new Set(seen).size).toBe(200);
        await tap.close();
        const left = [];
        for await (const c of jsm.consumers.list(stream)) left.push(c.name);
        expect(left).toEqual([]);
      } finally {
        await nc.close();
      }
    } finally {
      await driver.close();
    }
  }, 60_000);
});
