/**
 * trace's verdicts on memory://, fed runs whose truth is known: `--expect` passes a payment only
 * when every expected item was seen for it (no pass for a branch that skipped one, none for a type
 * never seen), and a history read in an adversarial order (children before their parents, the
 * sink first) gives the classes, counts and latencies the events themselves say.
 */
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { producibleTypes, trace, unproducibleExpected, type TraceOptions } from '../../src/core/trace.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { toMessage } from '../../src/events/codec.js';
import { EventGenerator, type GeneratedEvent } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';

const checkout = loadScenario('checkout');
const ENCODE = { binding: 'kafka' as const, sourcePrefix: '/payq/checkout', runId: 'r1' };
const PAYMENTS = 400;
/** An hour ago: the run is history when trace starts. */
const BASE_US = (Date.now() - 3_600_000) * 1000;

function options(extra: Partial<TraceOptions>): TraceOptions {
  return {
    scenario: checkout,
    destinations: [...checkout.destinations].reverse(),
    decode: { typeField: 'event', correlate: 'payment_id' },
    stuckAfterMs: 30_000,
    expect: undefined,
    withinMs: undefined,
    payment: undefined,
    runId: undefined,
    fromBeginning: true,
    idleTimeoutMs: 1_500,
    durationMs: 60_000,
    untilFinished: undefined,
    // Small batches from destinations read in reverse: most children come before their parents.
    prefetch: 7,
    ...extra,
  };
}

/**
 * A seeded lifecycle run written into the scenario's destinations as its workers would have, the
 * k-th event of each payment published `gapMs`·k after the payment's start, an hour ago.
 */
async function history(seed: number, gapMs: number, keep: (e: GeneratedEvent) => boolean = () => true): Promise<{ driver: Driver; events: GeneratedEvent[] }> {
  const driver = await createDriver(`memory://verdict-${seed}-${Date.now()}?retain=100000`);
  await driver.connect();
  await driver.declare(checkout.destinations.map((name) => ({ name, deadLetter: true })));
  const events = [...new EventGenerator({ scenario: checkout, seed, payments: PAYMENTS, lifecycle: true })].filter(keep);
  for (const e of events) {
    const timing = { publishedUs: String(BASE_US + e.sequence! * gapMs * 1000), startUs: String(BASE_US) };
    await driver.send(checkout.destinationFor(e.type), [toMessage(e, ENCODE, timing)]);
  }
  return { driver, events };
}

/** Payments of the run by the types they reached. */
function truth(events: GeneratedEvent[]) {
  const types = new Map<string, Set<string>>();
  for (const e of events) {
    let s = types.get(e.paymentId);
    if (!s) types.set(e.paymentId, (s = new Set()));
    s.add(e.type);
  }
  return [...types.values()];
}

/** How many payments meet an expectation, from the run itself. */
function meeting(events: GeneratedEvent[], expectItems: string[]): number {
  return truth(events).filter((types) => expectItems.every((item) => item.split('|').some((t) => types.has(t)))).length;
}

describe('trace --expect', () => {
  it('names the expected types a scenario can never produce', () => {
    expect(unproducibleExpected(checkout, ['order_placed', 'no_such_event'])).toEqual(['no_such_event']);
    expect(unproducibleExpected(checkout, ['order_completed|nope', 'typo_placed', 'nope'])).toEqual(['nope', 'typo_placed']);
    expect(unproducibleExpected(checkout, ['order_placed', 'refund_completed|payment_declined'])).toEqual([]);
    expect(producibleTypes(checkout).sort()).toEqual(
      ['order_completed', 'order_placed', 'payment_authorized', 'payment_captured', 'payment_declined', 'refund_completed', 'refund_requested'],
    );
  });

  it('passes a payment only when every expected item was seen for it, whatever branch it took', async () => {
    const { driver, events } = await history(21, 1);
    const cases = [
      ['order_placed'],
      ['order_placed', 'order_completed'],
      ['order_completed|payment_declined'],
      ['refund_completed'],
      ['payment_captured', 'refund_requested'],
      ['order_placed', 'payment_declined'],
    ];
    try {
      for (const expectItems of cases) {
        const r = await trace(options({ expect: expectItems, untilFinished: PAYMENTS }), { driver, clock: systemClock });
        const passing = meeting(events, expectItems);
        expect(passing).toBeGreaterThan(0);
        expect(r.expectation, expectItems.join(',')).toMatchObject({ passed: passing, failed: PAYMENTS - passing });
        for (const f of r.expectation!.failures) expect(f.reason).toMatch(/^ended without /);
      }
    } finally {
      await driver.close();
    }
    // The run has every branch, so some of these expectations must fail some payments.
    expect(meeting(events, ['order_placed', 'order_completed'])).toBeLessThan(PAYMENTS);
    expect(meeting(events, ['refund_completed'])).toBeLessThan(PAYMENTS / 10);
  });

  it('an interrupted trace judges no payment for being unfinished: they stay in flight (exit 130, not a loss)', async () => {
    const driver = await createDriver(`memory://verdict-interrupted-${Date.now()}`);
    await driver.connect();
    await driver.declare(checkout.destinations.map((name) => ({ name, deadLetter: true })));
    const placed = [...new EventGenerator({ scenario: checkout, seed: 23, payments: 5, lifecycle: true })].filter((e) => e.type === 'order_placed');
    const controller = new AbortController();
    try {
      const r = await trace(options({ expect: ['order_placed', 'order_completed'], fromBeginning: false, idleTimeoutMs: undefined, durationMs: undefined }), {
        driver,
        clock: systemClock,
        signal: controller.signal,
        onReady: () => {
          const now = String(Date.now() * 1000);
          void Promise.all(placed.map((e) => driver.send(checkout.destinationFor(e.type), [toMessage(e, ENCODE, { publishedUs: now, startUs: now })])));
        },
        // Every payment started, none finished: then the stop.
        onProgress: (p) => p.events >= placed.length && controller.abort(),
      });
      expect(r.interrupted).toBe(true);
      expect(r.payments).toMatchObject({ seen: placed.length, in_flight: placed.length, finished: 0 });
      expect(r.expectation).toMatchObject({ passed: 0, failed: 0 });
    } finally {
      await driver.close();
    }
  });

  it('with --expect, ends once quiet with every payment judged; a payment still open keeps it waiting (--within)', async () => {
    const driver = await createDriver(`memory://verdict-ends-${Date.now()}`);
    await driver.connect();
    await driver.declare(checkout.destinations.map((name) => ({ name, deadLetter: true })));
    const placed = [...new EventGenerator({ scenario: checkout, seed: 24, payments: 5, lifecycle: true })].filter((e) => e.type === 'order_placed');
    const live = (expectItems: string[]) =>
      trace(options({ expect: expectItems, withinMs: 60_000, fromBeginning: false, idleTimeoutMs: 3_000, judgedIdleTimeoutMs: 200, durationMs: 30_000 }), {
        driver,
        clock: systemClock,
        onReady: () => {
          const now = String(Date.now() * 1000);
          void Promise.all(placed.map((e) => driver.send(checkout.destinationFor(e.type), [toMessage(e, ENCODE, { publishedUs: now, startUs: now })])));
        },
      });
    try {
      // Every payment passed at its first event: nothing can change a verdict, the quiet ends it.
      const judged = await live(['order_placed']);
      expect(judged.expectation).toMatchObject({ passed: placed.length, failed: 0 });
      expect(judged.elapsed_s).toBeLessThan(3);
      // Each still waits for order_completed, within 60 s: only the (longer) idle timeout ends it.
      const open = await live(['order_placed', 'order_completed']);
      expect(open.elapsed_s).toBeGreaterThanOrEqual(3);
      expect(open.elapsed_s).toBeLessThan(30);
      expect(open.expectation).toMatchObject({ passed: 0, failed: placed.length });
      for (const f of open.expectation!.failures) expect(f.reason).toMatch(/unfinished when trace ended/);
    } finally {
      await driver.close();
    }
  });

  it('measures --within on the payments’ own clock when reading history', async () => {
    // Each event 4 s after the previous one: authorised or declined at 4 s, captured at 8 s.
    const { driver, events } = await history(22, 4_000);
    const cases: [string[], number, number][] = [
      [['payment_authorized|payment_declined'], 6_000, PAYMENTS],
      [['payment_captured'], 6_000, 0],
      [['payment_captured'], 9_000, meeting(events, ['payment_captured'])],
      [['order_placed', 'order_completed'], 30_000, meeting(events, ['order_completed'])],
    ];
    try {
      for (const [expectItems, withinMs, passing] of cases) {
        const r = await trace(options({ expect: expectItems, withinMs, untilFinished: PAYMENTS }), { driver, clock: systemClock });
        expect(r.expectation, `${expectItems.join(',')} within ${withinMs}`).toMatchObject({ passed: passing, failed: PAYMENTS - passing });
      }
    } finally {
      await driver.close();
    }
  });

  it('fails foreign events (no scenario, no headers) that miss an expected type, and passes those with all', async () => {
    const driver = await createDriver(`memory://verdict-plain-${Date.now()}?retain=1000`);
    await driver.connect();
    const payments: [number, string[]][] = [
      [1, ['order_placed', 'payment_captured']],
      [2, ['order_placed']],
      [3, ['payment_captured']],
      [4, ['order_placed', 'payment_authorized', 'payment_captured']],
      [5, ['order_placed', 'payment_declined']],
      [6, ['payment_captured', 'order_placed']],
    ];
    const body = (event: string, order: number): OutgoingMessage => ({ key: '', type: event, headers: {}, value: Buffer.from(JSON.stringify({ event, data: { order_id: order } })) });
    await driver.declare([{ name: 'plain', deadLetter: true }]);
    for (const [order, types] of payments) for (const t of types) await driver.send('plain', [body(t, order)]);
    const plain = { typeField: 'event', correlate: 'data.order_id', preferBody: true };
    try {
      for (const scenario of [undefined, checkout]) {
        const r = await trace(options({ scenario, destinations: ['plain'], decode: plain, expect: ['order_placed', 'payment_captured'] }), { driver, clock: systemClock });
        expect(r.events.seen).toBe(11);
        expect(r.expectation, scenario?.name ?? 'no scenario').toMatchObject({ passed: 3, failed: 3 });
        expect(r.expectation!.failures.map((f) => f.payment_id).sort()).toEqual(['2', '3', '5']);
        expect(r.expectation!.failures.find((f) => f.payment_id === '3')!.reason).toMatch(/without order_placed$/);
      }
    } finally {
      await driver.close();
    }
  });
});

describe('trace --from-beginning', () => {
  it('gives every payment its class once, with no duplicates or missing steps, whatever order history is read in', async () => {
    const { driver, events } = await history(23, 5);
    const expected: Record<string, number> = { completed: 0, declined: 0, refunded: 0, 'dead-lettered': 0 };
    for (const types of truth(events)) expected[checkout.classify(types)!]!++;
    const lastSeq = new Map<string, number>();
    for (const e of events) lastSeq.set(e.paymentId, Math.max(lastSeq.get(e.paymentId) ?? 0, e.sequence!));
    try {
      for (const prefetch of [1, 7, 1000]) {
        const r = await trace(options({ prefetch }), { driver, clock: systemClock });
        expect(r.payments, `prefetch ${prefetch}`).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, in_flight: 0, stuck: 0, by_class: expected });
        expect(r.events).toMatchObject({ seen: events.length, from_history: events.length, duplicates: 0, missing_steps: 0, out_of_order: 0 });
        // Latency from the events' own timestamps, never from when trace read them an hour later.
        expect(r.latency.transit.count).toBe(0);
        expect(r.latency.end_to_end.count).toBe(PAYMENTS);
        expect(r.latency.end_to_end.max_ms).toBeCloseTo(Math.max(...lastSeq.values()) * 5, 0);
        expect(r.latency.end_to_end.mean_ms).toBeCloseTo((5 * [...lastSeq.values()].reduce((a, b) => a + b, 0)) / PAYMENTS, 0);
        // A child is published one or two events (5 or 10 ms) after its parent here.
        for (const hop of Object.values(r.latency.hops)) expect([5, 10]).toContain(Math.round(hop.max_ms));
      }
    } finally {
      await driver.close();
    }
  });

  it('finds the payments that stopped long ago stuck, as a live trace would have', async () => {
    // A quarter of the payments stopped after their second event (the capture stage was down).
    const stopped = (e: GeneratedEvent) => parseInt(e.paymentId.slice(-2), 16) % 4 === 0;
    const { driver, events } = await history(25, 5, (e) => !stopped(e) || e.sequence! < 2);
    const authorised = new Set(events.filter((e) => stopped(e) && e.type === 'payment_authorized').map((e) => e.paymentId));
    expect(authorised.size).toBeGreaterThan(40);
    try {
      const r = await trace(options({ stuckAfterMs: 30_000 }), { driver, clock: systemClock });
      expect(r.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS - authorised.size, stuck: authorised.size, in_flight: 0 });
      expect(r.stuck.every((s) => s.last_type === 'payment_authorized' && authorised.has(s.payment_id))).toBe(true);
      expect(r.events).toMatchObject({ duplicates: 0, missing_steps: 0 });
      const e = await trace(options({ expect: ['order_placed', 'order_completed|payment_declined'] }), { driver, clock: systemClock });
      expect(e.expectation).toMatchObject({ failed: authorised.size, passed: PAYMENTS - authorised.size });
    } finally {
      await driver.close();
    }
  });

  it('prints a payment’s timeline in publish order, its entry event first', async () => {
    const { driver, events } = await history(24, 5);
    const refunded = events.find((e) => e.type === 'refund_completed')!.paymentId;
    const declined = events.find((e) => e.type === 'payment_declined')!.paymentId;
    try {
      for (const id of [refunded, declined]) {
        const mine = events.filter((e) => e.paymentId === id);
        const r = await trace(options({ payment: id }), { driver, clock: systemClock });
        expect(r.timeline!.map((t) => t.type)).toEqual(mine.map((e) => e.type));
        expect(r.timeline!.map((t) => t.offset_ms)).toEqual(mine.map((e) => e.sequence! * 5));
        expect(r.timeline!.some((t) => t.duplicate)).toBe(false);
      }
      const none = await trace(options({ payment: 'pay_never_seen' }), { driver, clock: systemClock });
      expect(none.timeline).toEqual([]);
    } finally {
      await driver.close();
    }
  });
});

describe('trace on events without a correlation id', () => {
  it('counts the events it tied into payments by their message key alone', async () => {
    const driver = await createDriver(`memory://verdict-key-${Date.now()}?retain=1000`);
    await driver.connect();
    await driver.declare([{ name: 'keyed', deadLetter: true }]);
    const send = (key: string, body: object) => driver.send('keyed', [{ key, type: 'x', headers: {}, value: Buffer.from(JSON.stringify(body)) }]);
    await send('k1', { event: 'order_placed', data: { order_id: 1 } });
    await send('k2', { event: 'order_placed', data: { order_id: 2 } });
    await send('k3', { event: 'payment_captured', data: { order_id: 1 } });
    const base = { scenario: undefined, destinations: ['keyed'], idleTimeoutMs: 1_000 };
    try {
      const byKey = await trace(options({ ...base, decode: { typeField: 'event', correlate: 'payment_id', preferBody: true } }), { driver, clock: systemClock });
      expect(byKey.events).toMatchObject({ seen: 3, correlated_by_key: 3 });
      expect(byKey.payments.seen).toBe(3);
      const byField = await trace(options({ ...base, decode: { typeField: 'event', correlate: 'data.order_id', preferBody: true } }), { driver, clock: systemClock });
      expect(byField.events).toMatchObject({ seen: 3, correlated_by_key: 0 });
      expect(byField.payments.seen).toBe(2);
    } finally {
      await driver.close();
    }
  });
});
