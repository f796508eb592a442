/**
 * Issue #15's failure drills on NATS JetStream: a nats-server of the test's own
 * (test/helpers/drill-nats.ts; the machine's 4222 is never touched) is killed with SIGKILL in the
 * middle of a run and started again on the same store and port a few seconds later. Each run is
 * checked by an independent reader, a plain @nats-io/jetstream client: nothing acknowledged is
 * missing, the counts add up exactly, redeliveries show up as duplicates, never as losses.
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
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { BrokerUnavailableError, DeliveryError, isPayqError } from '../../src/errors.js';
import { parseScenario } from '../../src/events/scenario.js';
import { uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { DrillNats, natsServerAvailable } from '../helpers/drill-nats.js';
import { declareLayout } from '../helpers/layout.js';
import { startCli, type Background } from '../helpers/spawn.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { unfinishedPayments } from '../helpers/drill.js';

/** How long the server stays down in each drill. */
const DOWN_MS = 3_000;

interface Stored {
  seq: number;
  id: string;
  event: string;
  payment: string;
  replayCount: number;
}

async function withNats<T>(server: DrillNats, fn: (nc: NatsConnection) => Promise<T>): Promise<T> {
  const nc = await natsConnect({ servers: `127.0.0.1:${server.port}`, maxReconnectAttempts: 0 });
  try {
    return await fn(nc);
  } finally {
    await nc.close();
  }
}

/** Messages now in the stream holding payq's destination (0 when there is none yet). */
async function storedCount(server: DrillNats, destination: string): Promise<number> {
  return withNats(server, async (nc) => {
    const jsm = await jetstreamManager(nc);
    const stream = await jsm.streams.find(`payq.${destination}._`).catch(() => undefined);
    return stream === undefined ? 0 : (await jsm.streams.info(stream)).state.messages;
  }).catch(() => 0);
}

/** Every message of the destination's stream, read with an ordered consumer: the independent reader. */
async function readAll(server: DrillNats, destination: string): Promise<Stored[]> {
  return withNats(server, async (nc) => {
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

/** A payq driver that only watches the link, to time the outage as payq sees it. */
async function observer(server: DrillNats): Promise<Driver> {
  const driver = await createDriver(server.url);
  await driver.connect();
  return driver;
}

/** A copy of checkout with destinations and a name of its own, written where the CLI can read it. */
function scenarioFile(prefix: string, failures: Record<string, { transient: number; permanent: number }>): { file: string; destinations: string[]; text: string } {
  let text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replaceAll('checkout.', `${prefix}.`);
  text = text.replace(/^name: checkout$/m, `name: drill-${prefix.slice(-6)}`);
  for (const [stage, f] of Object.entries(failures)) {
    text = text.replace(new RegExp(`(- name: ${stage}\\n(?:.*\\n)*?\\s+failures: )\\{[^}]*\\}`), `$1{ transient: ${f.transient}, permanent: ${f.permanent} }`);
  }
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'payq-drill-')), 'checkout.yaml');
  writeFileSync(file, text);
  return { file, destinations: parseScenario(text, file).destinations, text };
}

const ids = (rows: Stored[]) => rows.map((r) => r.id);
const duplicates = (values: string[]) => values.length - new Set(values).size;

const live: Array<DrillNats | Driver | Background> = [];
afterEach(async () => {
  for (const thing of live.splice(0).reverse()) {
    if (thing instanceof DrillNats) await thing.dispose();
    else if ('child' in thing) {
      if (thing.child.exitCode === null) thing.child.kill('SIGKILL');
    } else await thing.close().catch(() => undefined);
  }
});

async function drillServer(): Promise<DrillNats> {
  const server = await DrillNats.start();
  live.push(server);
  return server;
}

describe.skipIf(!natsServerAvailable())('NATS failure drills (a server of the test’s own, killed and restarted on the same store)', () => {
  it('driver: sends in flight fail unconfirmed, sends during the outage wait and go, link() tells the outage; every acknowledged message is stored', async () => {
    const server = await drillServer();
    const driver = await createDriver(server.url, { reconnectTimeoutMs: 30_000 });
    live.push(driver);
    await driver.connect();
    const destination = uniqueName('drill-send');
    await driver.declare([{ name: destination }]);

    const PER_BATCH = 200;
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
      }
    };
    // Four batches in flight, as produce sends: the kill finds some awaiting their PubAck.
    const sending = Promise.all([sender(), sender(), sender(), sender()]);
    await waitFor(() => acked.length >= 2_000, 20_000, () => `${acked.length} acknowledged before the kill`);
    await server.down('SIGKILL');
    await waitFor(() => !driver.link().connected, 5_000, 'the driver to see the link lost');
    const startedBefore = batch;
    await sleep(DOWN_MS);
    expect(driver.link().connected).toBe(false);
    await server.up();
    const ackedBefore = acked.length;
    await waitFor(() => acked.length >= ackedBefore + 2_000, 30_000, () => `${acked.length - ackedBefore} acknowledged after the restart`);
    stopping = true;
    await sending;
    const link = driver.link();

    expect(otherErrors.map(String)).toEqual([]);
    expect(link).toMatchObject({ connected: true, reconnects: 1 });
    expect(link.downMs).toBeGreaterThan(0);
    // Sends started while the server was away (more than the four in flight) waited and went.
    expect(batch).toBeGreaterThan(startedBefore);
    expect(acked.length + failed.length).toBe(batch * PER_BATCH);

    const stored = await readAll(server, destination);
    const found = new Set(ids(stored));
    expect(duplicates(ids(stored))).toBe(0);
    expect(acked.filter((id) => !found.has(id))).toEqual([]);
    // Only failed messages may be there besides the acknowledged ones, and only unconfirmed ones.
    const extra = ids(stored).filter((id) => !acked.includes(id));
    expect(extra.length).toBeLessThanOrEqual(unconfirmed);
    expect(stored.length).toBe(acked.length + extra.length);
    console.log(
      `drill figures: driver send: acknowledged ${acked.length}, failed ${failed.length}, unconfirmed ${unconfirmed} (${extra.length} of them stored), found ${stored.length}; down ${Math.round(link.downMs)} ms, reconnects ${link.reconnects}`,
    );
  }, 60_000);

  it('driver: a server that stays away ends in BrokerUnavailableError, not retriable, saying how long it tried', async () => {
    const server = await drillServer();
    const driver = await createDriver(server.url, { reconnectTimeoutMs: 1_500 });
    live.push(driver);
    await driver.connect();
    const destination = uniqueName('drill-gone');
    await driver.declare([{ name: destination }]);
    await server.down('SIGKILL');
    await waitFor(() => !driver.link().connected, 5_000, 'the driver to see the link lost');
    const err = await driver.send(destination, [{ key: 'k', type: 'order_placed', value: Buffer.from('{}'), headers: {} }]).then(
      () => undefined,
      (e: unknown) => e,
    );
    expect(err).toBeInstanceOf(BrokerUnavailableError);
    expect(isPayqError(err) && err.retriable).toBe(false);
    expect((err as Error).message).toMatch(/unreachable for 1\.\d s: gave up reconnecting \(reconnect timeout 1\.5 s\)/);
    // And it stays given up, even with the server back.
    await server.up();
    await expect(driver.exists([destination])).rejects.toThrow(/gave up reconnecting/);
    expect(driver.link().connected).toBe(false);
  }, 30_000);

  it('driver: a tap whose ephemeral consumer the server lost gets a new one from where it was, seeing each message once', async () => {
    const server = await drillServer();
    const driver = await createDriver(server.url);
    live.push(driver);
    await driver.connect();
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
    const stream = await withNats(server, async (nc) => {
      const jsm = await jetstreamManager(nc);
      const name = await jsm.streams.find(`payq.${destination}._`);
      const consumers = [];
      for await (const c of jsm.consumers.list(name)) consumers.push(c.name);
      expect(consumers).toHaveLength(1);
      await jsm.consumers.delete(name, consumers[0]!);
      return name;
    });
    await driver.send(destination, batch(100));
    await waitFor(() => seen.length >= 200, 20_000, () => `${seen.length} of 200 seen by the tap`);
    await sleep(1_500);
    expect(seen.length).toBe(200);
    expect(new Set(seen).size).toBe(200);
    await tap.close();
    const left = await withNats(server, async (nc) => {
      const names = [];
      for await (const c of (await jetstreamManager(nc)).consumers.list(stream)) names.push(c.name);
      return names;
    });
    expect(left).toEqual([]);
  }, 60_000);

  it('payq produce --rate across a restart: every event acknowledged or failed, the stream holds exactly the acknowledged plus at most the unconfirmed', async () => {
    const server = await drillServer();
    const watch = await observer(server);
    live.push(watch);
    const topic = uniqueName('drill-produce');
    const COUNT = 8_000;
    const producing = runCli(['produce', '--broker', server.url, '--topic', topic, '--count', String(COUNT), '--rate', '2000', '--seed', '15', '--json'], { timeoutMs: 55_000 });
    await waitFor(async () => (await storedCount(server, topic)) >= 2_000, 20_000, 'the first 2,000 events stored');
    await server.restart(DOWN_MS, 'SIGKILL');
    const r = await producing;
    const link = watch.link();

    expect([0, 4], r.stderr).toContain(r.code);
    const summary = JSON.parse(r.stdout) as { sent: number; acked: number; failed: number; unconfirmed: number; not_sent: number; errors: string[]; elapsed_s: number };
    console.log(`drill produce errors: ${JSON.stringify(summary.errors)} elapsed ${summary.elapsed_s} s`);
    expect(summary.sent).toBe(COUNT);
    expect(summary.not_sent).toBe(0);
    expect(summary.acked + summary.failed).toBe(COUNT);
    // Every failure was a PubAck lost with the connection, none a refusal.
    expect(summary.unconfirmed).toBe(summary.failed);
    if (summary.failed > 0) expect(r.code).toBe(4);

    const stored = await readAll(server, topic);
    const expected = new Set((await runCli(['produce', '--dry-run', '--count', String(COUNT), '--seed', '15'])).stdout.trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id));
    expect(stored.filter((s) => !expected.has(s.id))).toEqual([]);
    expect(duplicates(ids(stored))).toBe(0);
    expect(stored.length).toBeGreaterThanOrEqual(summary.acked);
    expect(stored.length).toBeLessThanOrEqual(summary.acked + summary.unconfirmed);
    expect(link).toMatchObject({ connected: true, reconnects: 1 });
    console.log(
      `drill figures: payq produce: acknowledged ${summary.acked}, failed ${summary.failed}, unconfirmed ${summary.unconfirmed}, found ${stored.length} (${COUNT - stored.length} not stored); down ${Math.round(link.downMs)} ms`,
    );
  }, 60_000);

  it('payq consume (a tap) across a restart: prints every event the stream holds, before and after the restart', async () => {
    const server = await drillServer();
    const topic = uniqueName('drill-consume');
    await declareLayout(server.url, [topic]);
    const watch = await observer(server);
    live.push(watch);
    const consumer = startCli(['consume', '--broker', server.url, '--topic', topic, '--idle-timeout', '8s', '--json', '-v']);
    live.push(consumer);
    await waitFor(async () => (await withNats(server, async (nc) => {
      const jsm = await jetstreamManager(nc);
      let n = 0;
      for await (const _ of jsm.consumers.list(await jsm.streams.find(`payq.${topic}._`))) n++;
      return n;
    })) === 1, 20_000, 'the tap’s consumer');
    const producing = runCli(['produce', '--broker', server.url, '--topic', topic, '--count', '4000', '--rate', '1000', '--seed', '18', '--json'], { timeoutMs: 55_000 });
    await waitFor(async () => (await storedCount(server, topic)) >= 1_000, 20_000, 'the first 1,000 events stored');
    await server.restart(DOWN_MS, 'SIGKILL');
    const p = await producing;
    const produced = JSON.parse(p.stdout) as { acked: number; failed: number; unconfirmed: number };
    expect(produced.acked + produced.failed).toBe(4_000);
    expect(await consumer.exited, consumer.stderr()).toBe(0);
    const link = watch.link();
    const printed = consumer.stdout().trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
    const stored = await readAll(server, topic);
    const seen = new Set(printed);
    expect(stored.filter((m) => !seen.has(m.id)).map((m) => m.id)).toEqual([]);
    expect(printed.filter((id) => !stored.some((m) => m.id === id))).toEqual([]);
    console.log(
      `drill figures: payq consume (tap): produced acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed ${produced.unconfirmed}; stored ${stored.length}, printed ${printed.length} (${duplicates(printed)} duplicates); down ${Math.round(link.downMs)} ms`,
    );
  }, 60_000);

  it('payq worker + payq trace across a restart: every payment completes; redeliveries are duplicates, not losses', async () => {
    const server = await drillServer();
    const prefix = uniqueName('drill-pipe');
    const none = { transient: 0, permanent: 0 };
    const { file, destinations } = scenarioFile(prefix, { 'payment-service': none, 'capture-service': none, 'fulfilment-service': none, 'refund-service': none });
    await declareLayout(server.url, destinations);
    const watch = await observer(server);
    live.push(watch);
    const PAYMENTS = 1_000;
    const tracer = startCli(['trace', '--broker', server.url, '--scenario', file, '--idle-timeout', '15s', '--stuck-after', '60s', '--json', '-v']);
    live.push(tracer);
    await tracer.waitForStderr('trace: watching');
    // A delivery in transit when the server died is pending on the server but never arrived: it
    // comes again after ack_wait, which a shorter one (10 s) brings within the worker's run.
    const worker = startCli(['worker', '--broker', `${server.url}?ackWait=10`, '--scenario', file, '--time-scale', '0', '--idle-timeout', '15s', '--json']);
    live.push(worker);
    const producing = runCli(['produce', '--broker', server.url, '--scenario', file, '--count', String(PAYMENTS), '--rate', '250', '--seed', '16', '--json'], { timeoutMs: 55_000 });
    const sink = destinations.find((d) => d.endsWith('.events'))!;
    await waitFor(async () => (await storedCount(server, sink)) >= 200, 20_000, 'the first 200 events at the end of the pipeline');
    await server.restart(DOWN_MS, 'SIGKILL');
    const p = await producing;
    const produced = JSON.parse(p.stdout) as { acked: number; failed: number; unconfirmed: number };
    expect(produced.acked + produced.failed).toBe(PAYMENTS);
    expect(produced.unconfirmed).toBe(produced.failed);
    expect(await worker.exited, worker.stderr()).toBe(0);
    expect(await tracer.exited, tracer.stderr()).toBe(0);
    const link = watch.link();

    // The independent reader: the payments that entered, and how each ended.
    const entry = destinations.find((d) => d.endsWith('.orders'))!;
    const entered = await readAll(server, entry);
    const ended = await readAll(server, sink);
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
    const sinkDuplicates = duplicates(ids(ended));
    console.log(
      `drill figures: payq worker + trace: produced acknowledged ${produced.acked}, failed ${produced.failed}, unconfirmed ${produced.unconfirmed}; payments entered ${entered.length}, finished (trace) ${t.payments.finished}, finished (reader) ${entered.length - unfinished.length}; duplicates seen by trace ${t.events.duplicates}, duplicate ends stored ${sinkDuplicates}; down ${Math.round(link.downMs)} ms`,
    );
  }, 90_000);

  it('payq replay-dlq across a restart: resumes, and every dead letter is back at its origin', async () => {
    const server = await drillServer();
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
    // 1. Fill the DLQ: every authorised payment fails permanently at capture-service.
    const filled = await runCli(['produce', '--broker', server.url, '--scenario', file, '--count', '400', '--seed', '17', '--json']);
    expect(filled.code, filled.stderr).toBe(0);
    const worker = startCli(['worker', '--broker', server.url, '--scenario', file, '--stage', 'payment-service,capture-service', '--time-scale', '0', '--idle-timeout', '3s']);
    live.push(worker);
    expect(await worker.exited, worker.stderr()).toBe(0);
    const dead = await readAll(server, dlq);
    expect(dead.length).toBeGreaterThan(300);
    const before = await storedCount(server, capture);

    // 2. Replay, paced so the run spans the outage; what failed stays in the DLQ for the next run.
    const watch = await observer(server);
    live.push(watch);
    // An ack written just before the kill is lost with the connection: JetStream redelivers that
    // message after ack_wait, which a shorter one (15 s) brings within the next run. Shorter
    // still, what the run holds (paced by --rate) would pass it during the outage and come twice.
    const replayUrl = `${server.url}?ackWait=15`;
    const replaying = runCli(['replay-dlq', '--broker', replayUrl, '--dlq', dlq, '--rate', '100', '--idle-timeout', '8s', '--json'], { timeoutMs: 55_000 });
    await waitFor(async () => (await storedCount(server, capture)) >= before + 100, 20_000, 'the first 100 replayed');
    await server.restart(DOWN_MS, 'SIGKILL');
    const first = await replaying;
    const link = watch.link();
    expect([0, 4], first.stderr).toContain(first.code);
    const r1 = JSON.parse(first.stdout) as { seen: number; replayed: number; failed: number; left: number };
    if (first.code === 4) expect(r1.failed + r1.left).toBeGreaterThan(0);
    // 3. Run again: it resumes with what the first run could not finish (failed, or acked but lost).
    const again = await runCli(['replay-dlq', '--broker', replayUrl, '--dlq', dlq, '--idle-timeout', '10s', '--json']);
    expect(again.code, again.stderr).toBe(0);
    const r2 = JSON.parse(again.stdout) as { seen: number; replayed: number; failed: number };
    const after = await runCli(['replay-dlq', '--broker', replayUrl, '--dlq', dlq, '--dry-run', '--idle-timeout', '2s', '--json']);
    expect(after.code, after.stderr).toBe(0);
    expect((JSON.parse(after.stdout) as { seen: number }).seen).toBe(0);

    // The independent reader: every dead letter is back at its origin as a replay (once or more).
    const origin = await readAll(server, capture);
    const replayed = origin.filter((m) => m.replayCount > 0);
    const back = new Set(ids(replayed));
    expect(dead.filter((d) => !back.has(d.id)).map((d) => d.id)).toEqual([]);
    expect(replayed.filter((m) => !dead.some((d) => d.id === m.id))).toEqual([]);
    expect(r1.replayed + r2.replayed).toBeGreaterThanOrEqual(dead.length);
    console.log(
      `drill figures: payq replay-dlq: dead letters ${dead.length}; first run (exit ${first.code}) replayed ${r1.replayed}, failed ${r1.failed}, left ${r1.left}; second run replayed ${r2.replayed}; found back at the origin ${back.size} (${duplicates(ids(replayed))} duplicates); down ${Math.round(link.downMs)} ms`,
    );
  }, 90_000);
});
