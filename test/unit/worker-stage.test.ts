/**
 * One stage's handler (StageRunner) with a clock whose sleeps end only when the test says so: a
 * handler call does not hold the driver for its deliveries' processing times (no delivery waits
 * behind a slower one that arrived first), it holds at most `prefetch` deliveries at work, and
 * after drain() a call waits for its own deliveries again, so closing a subscription finishes
 * the work under way. No timing is asserted: the order of events is.
 */
import { describe, expect, it } from 'vitest';
import { systemClock, type Clock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { ErrorLog, StageRunner } from '../../src/core/worker-stage.js';
import { runWorker, type WorkerProgress } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { toMessage } from '../../src/events/codec.js';
import { EventGenerator } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';
import { uniqueName } from '../helpers/brokers.js';
import { waitFor } from '../helpers/wait.js';

const checkout = loadScenario('checkout');
const stage = checkout.stages[0]!;

/** A clock whose sleeps are released by the test, one by one. */
function manualClock(): Clock & { sleeping: (() => void)[] } {
  const sleeping: (() => void)[] = [];
  return {
    sleeping,
    nowUs: () => performance.timeOrigin * 1000 + performance.now() * 1000,
    sleep: () => new Promise<void>((resolve) => sleeping.push(resolve)),
  };
}

function fakeDriver(sent: OutgoingMessage[]): Driver {
  return {
    name: 'fake',
    capabilities: {},
    headerBinding: 'kafka',
    tuning: { sendBatchSize: 100, sendMaxInFlight: 1 },
    link: () => ({ connected: true, reconnects: 0, downMs: 0, gone: false }),
    send: (_destination: string, messages: OutgoingMessage[]) => {
      sent.push(...messages);
      return Promise.resolve();
    },
  } as unknown as Driver;
}

interface Tracked extends Delivery {
  settled: 'ack' | 'nack' | 'dead-letter' | undefined;
  id: string;
}

/** Deliveries of the entry stage's first `n` entry events. */
function deliveries(n: number): Tracked[] {
  const gen = new EventGenerator({ scenario: checkout, seed: 3, payments: n, lifecycle: false });
  const out: Tracked[] = [];
  for (let e = gen.next(); e !== undefined && out.length < n; e = gen.next()) {
    if (e.type !== checkout.entry) continue;
    const now = String(Math.round(performance.timeOrigin * 1000 + performance.now() * 1000));
    const m = toMessage(e, { binding: 'kafka', sourcePrefix: '/payq/checkout', runId: 'r' }, { publishedUs: now, startUs: now });
    const d: Tracked = {
      id: e.id,
      settled: undefined,
      destination: stage.destination,
      key: m.key,
      value: m.value,
      headers: m.headers,
      partition: undefined,
      offset: undefined,
      redelivered: false,
      settleable: true,
      ack: () => void (d.settled ??= 'ack'),
      nack: () => void (d.settled ??= 'nack'),
      deadLetter: () => {
        d.settled ??= 'dead-letter';
        return Promise.resolve();
      },
    };
    out.push(d);
  }
  return out;
}

function runner(clock: Clock, sent: OutgoingMessage[], prefetch: number | undefined): StageRunner {
  return new StageRunner({
    scenario: checkout,
    stage,
    group: 'g',
    driver: fakeDriver(sent),
    clock,
    policy: { seed: 0, failures: false, timeScale: 1 },
    errors: new ErrorLog(),
    signal: undefined,
    prefetch,
  });
}

/**
 * Lets promise callbacks and the emit's setImmediate run: a few turns of the event loop after a
 * short wait. A timer alone is not enough: on a loaded machine it can be due before the check phase
 * that runs the emit's setImmediate, and the test would look before the handling ended.
 */
async function settle(): Promise<void> {
  await new Promise<void>((resolve) => setTimeout(resolve, 5));
  for (let turn = 0; turn < 10; turn++) await new Promise<void>((resolve) => setImmediate(resolve));
}

describe('StageRunner', () => {
  it('returns from a handler call while its delivery is still working, and a later delivery finishes first', async () => {
    const clock = manualClock();
    const sent: OutgoingMessage[] = [];
    const r = runner(clock, sent, 64);
    const [first, second] = deliveries(2);
    await r.handle([first!]);
    expect(first!.settled).toBeUndefined();
    expect(r.inFlight).toBe(1);
    await r.handle([second!]);
    expect(clock.sleeping).toHaveLength(2);
    // The second delivery's processing ends first: it is emitted and acked, the first still works.
    clock.sleeping[1]!();
    await settle();
    expect(second!.settled).toBe('ack');
    expect(first!.settled).toBeUndefined();
    expect(sent.map((m) => m.headers['payq-parent-id'])).toEqual([second!.id]);
    clock.sleeping[0]!();
    await settle();
    expect(first!.settled).toBe('ack');
    expect(r.inFlight).toBe(0);
    expect(r.counters.handled).toBe(2);
  });

  it('holds at most prefetch deliveries at work: the call that reaches it returns once one ends', async () => {
    const clock = manualClock();
    const r = runner(clock, [], 2);
    const [a, b] = deliveries(2);
    let returned = false;
    const call = r.handle([a!, b!]).then(() => (returned = true));
    await settle();
    expect(returned).toBe(false);
    clock.sleeping[0]!();
    await call;
    expect(returned).toBe(true);
    expect(r.inFlight).toBe(1);
    clock.sleeping[1]!();
    await settle();
    expect(r.inFlight).toBe(0);
  });

  it('after drain() a call waits for its own deliveries, and drain() waits for the work detached before', async () => {
    const clock = manualClock();
    const r = runner(clock, [], 64);
    const [early, late] = deliveries(2);
    await r.handle([early!]);
    let drained = false;
    const draining = r.drain().then(() => (drained = true));
    let returned = false;
    const call = r.handle([late!]).then(() => (returned = true));
    await settle();
    expect(drained).toBe(false);
    expect(returned).toBe(false);
    clock.sleeping[0]!();
    await draining;
    expect(early!.settled).toBe('ack');
    expect(returned).toBe(false);
    clock.sleeping[1]!();
    await call;
    expect(late!.settled).toBe('ack');
  });

  it('a worker stopped while deliveries are working finishes every one of them before it closes (memory://, real processing times)', async () => {
    const driver = await createDriver(`memory://${uniqueName('stop')}`);
    await driver.connect();
    try {
      const entry = checkout.destinationFor(checkout.entry);
      const produced = await produce(
        { destination: entry, encode: { binding: 'kafka', sourcePrefix: '/payq/checkout', runId: 'unit' } },
        { driver, source: generatedSource(new EventGenerator({ scenario: checkout, seed: 4, payments: 2000, lifecycle: false })), clock: systemClock },
      );
      expect(produced.acked).toBe(2000);
      const controller = new AbortController();
      let latest: WorkerProgress | undefined;
      const running = runWorker(
        { scenario: checkout, timeScale: 1, seed: 0, prefetch: 64 },
        { driver, clock: systemClock, signal: controller.signal, onProgress: (p) => (latest = p) },
      );
      await waitFor(() => latest !== undefined && latest.handled > 20 && latest.inFlight > 0, 60_000, () => 'deliveries at work');
      controller.abort();
      const result = await running;
      expect(result.interrupted).toBe(true);
      for (const s of result.stages) {
        // Every delivery handed to a stage ended in an ack or a dead letter, none given back.
        expect(s.handled + s.dead_lettered_total, s.stage).toBe(s.received);
        expect(s.nacked, s.stage).toBe(0);
      }
      expect(result.stages[0]!.received).toBeLessThan(2000);
    } finally {
      await driver.close();
    }
  });
});
