import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { trace, type TraceOptions } from '../../src/core/trace.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { OutgoingMessage } from '../../src/drivers/types.js';
import { toMessage } from '../../src/events/codec.js';
import { EventGenerator } from '../../src/events/generator.js';
import { PayqHeader } from '../../src/events/headers.js';
import { loadScenario } from '../../src/events/scenario.js';

const checkout = loadScenario('checkout');

function traceOptions(destinations: string[], extra: Partial<TraceOptions> = {}): TraceOptions {
  return {
    scenario: checkout,
    destinations,
    decode: { typeField: 'event', correlate: 'payment_id' },
    stuckAfterMs: 30_000,
    expect: undefined,
    withinMs: undefined,
    payment: undefined,
    runId: undefined,
    fromBeginning: true,
    idleTimeoutMs: 2_000,
    durationMs: 60_000,
    untilFinished: undefined,
    ...extra,
  };
}

async function produceLifecycle(url: string, topic: string, payments: number, seed: number) {
  const driver = await createDriver(url);
  await driver.connect();
  await driver.declare([{ name: topic, deadLetter: true }]);
  const result = await produce(
    { destination: topic, encode: { binding: 'kafka', sourcePrefix: '/payq/checkout', runId: 'r1' } },
    { driver, source: generatedSource(new EventGenerator({ scenario: checkout, seed, payments, lifecycle: true })), clock: systemClock },
  );
  return { driver, result };
}

describe('trace on memory://', () => {
  it('accounts for every payment of a lifecycle stream exactly once, by class', async () => {
    const url = `memory://trace-${Date.now()}`;
    const { driver, result } = await produceLifecycle(url, 'orders', 3000, 11);
    const expected = { completed: 0, declined: 0, refunded: 0 };
    for (const e of new EventGenerator({ scenario: checkout, seed: 11, payments: 3000, lifecycle: true })) {
      if (e.type === 'order_completed') expected.completed++;
      if (e.type === 'payment_declined') expected.declined++;
      if (e.type === 'refund_completed') expected.refunded++;
    }
    expected.completed -= expected.refunded;
    const r = await trace(traceOptions(['orders'], { untilFinished: 3000 }), { driver, clock: systemClock });
    await driver.close();
    expect(r.events.seen).toBe(result.acked);
    expect(r.payments).toMatchObject({ seen: 3000, finished: 3000, in_flight: 0, stuck: 0 });
    expect(r.payments.by_class).toMatchObject({ ...expected, 'dead-lettered': 0 });
    expect(r.events).toMatchObject({ duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 });
  });
});

const ENCODE = { binding: 'kafka' as const, sourcePrefix: '/payq/checkout', runId: 'r1' };
const TIMING = { publishedUs: String(Date.now() * 1000), startUs: String(Date.now() * 1000) };
/** The dead-lettered copy of a message, as the worker sends it to <destination>.dlq. */
const dead = (m: OutgoingMessage): OutgoingMessage => ({ ...m, headers: { ...m.headers, [PayqHeader.dlqReason]: 'permanent-failure' } });

/** Traces 'orders' on a fresh memory broker while `sends` go out one by one, 20 ms apart (the last after `lastAfterMs`). */
async function traceSends(name: string, idleTimeoutMs: number, sends: ReadonlyArray<readonly [string, OutgoingMessage]>, lastAfterMs = 20) {
  const driver = await createDriver(`memory://${name}-${Date.now()}`);
  await driver.connect();
  // The pipeline's layout exists before trace starts: trace only reads (it never creates).
  await driver.declare([{ name: 'orders', deadLetter: true }]);
  let ready!: () => void;
  const subscribed = new Promise<void>((r) => (ready = r));
  const tracing = trace(traceOptions(['orders'], { fromBeginning: false, idleTimeoutMs }), { driver, clock: systemClock, onReady: () => ready() });
  await subscribed;
  for (const [i, [destination, m]] of sends.entries()) {
    if (i === sends.length - 1 && lastAfterMs > 20) await new Promise((r) => setTimeout(r, lastAfterMs));
    await driver.send(destination, [m]);
    await new Promise((r) => setTimeout(r, 20));
  }
  const r = await tracing;
  await driver.close();
  return r;
}

describe('trace and dead letters', () => {
  it('keeps an event dead-lettered when its DLQ copy is seen before the event itself', async () => {
    // Trace reads a destination and its DLQ independently: under load a dead letter can come
    // first. Here a refund request is dead-lettered, and its sibling (order_completed) comes last,
    // so the payment is still open when the refund request itself arrives after its dead letter.
    const events = [...new EventGenerator({ scenario: checkout, seed: 5, payments: 2000, lifecycle: true })];
    const refund = events.find((e) => e.type === 'refund_requested')!;
    const payment = events.filter((e) => e.paymentId === refund.paymentId);
    const sibling = payment.find((e) => e.type === 'order_completed' && e.parentId === refund.parentId)!;
    const before = payment.filter((e) => payment.indexOf(e) < payment.indexOf(refund) && e !== sibling);
    const message = (e: (typeof events)[number]) => toMessage(e, ENCODE, TIMING);
    const r = await traceSends('trace-dlq', 1_000, [
      ...before.map((e) => ['orders', message(e)] as const),
      ['orders.dlq', dead(message(refund))],
      ['orders', message(refund)],
      ['orders', message(sibling)],
    ]);
    expect(r.payments).toMatchObject({ seen: 1, finished: 1, in_flight: 0 });
    expect(r.payments.by_class['dead-lettered']).toBe(1);
    expect(r.events.duplicates).toBe(0);
  });

  it('does not take the late original of a dead letter for a duplicate of a finished payment', async () => {
    // order_placed, then the dead letter of its child, then the child itself: the dead letter
    // settles the payment, but trace waits a moment for the original before finishing it.
    const events = [...new EventGenerator({ scenario: checkout, seed: 6, payments: 1, lifecycle: true })];
    const [placed, child] = events;
    expect(child!.parentId).toBe(placed!.id);
    const childMessage = toMessage(child!, ENCODE, TIMING);
    const r = await traceSends('trace-late', 2_000, [
      ['orders', toMessage(placed!, ENCODE, TIMING)],
      ['orders.dlq', dead(childMessage)],
      ['orders', childMessage],
    ]);
    expect(r.payments).toMatchObject({ seen: 1, finished: 1, in_flight: 0 });
    expect(r.payments.by_class['dead-lettered']).toBe(1);
    expect(r.events.duplicates).toBe(0);
  });
});

describe('trace and a destination read late', () => {
  it('a parent read after its payment was settled without it is a late event, not a missing step', async () => {
    // After a broker restart a tap catches up on each partition at its own pace: a payment's
    // later events can come first, and its entry event seconds later.
    const events = [...new EventGenerator({ scenario: checkout, seed: 6, payments: 1, lifecycle: true })];
    const [placed, ...rest] = events;
    const m = (e: (typeof events)[number]) => toMessage(e, ENCODE, TIMING);
    const r = await traceSends('trace-late-parent', 3_000, [...rest.map((e) => ['orders', m(e)] as const), ['orders', m(placed!)]], 1_500);
    expect(r.payments).toMatchObject({ seen: 1, finished: 1, in_flight: 0 });
    expect(r.events).toMatchObject({ missing_steps: 0, duplicates: 0 });
  });
});
