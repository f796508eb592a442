import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { EventGenerator, type GeneratedEvent } from '../../src/events/generator.js';
import { CURRENCY_EXPONENT } from '../../src/events/currencies.js';
import { loadScenario } from '../../src/events/scenario.js';

const checkout = loadScenario('checkout');
const all = (g: EventGenerator): GeneratedEvent[] => [...g];
const ndjson = (events: GeneratedEvent[]) => events.map((e) => `${e.body}\n`).join('');

describe('EventGenerator', () => {
  it('matches the golden fixtures for seed 42 in both modes', () => {
    const entry = all(new EventGenerator({ scenario: checkout, seed: 42, payments: 20, lifecycle: false }));
    const lifecycle = all(new EventGenerator({ scenario: checkout, seed: 42, payments: 20, lifecycle: true }));
    expect(ndjson(entry)).toBe(readFileSync('fixtures/golden/seed-42-entry.ndjson', 'utf8'));
    expect(ndjson(lifecycle)).toBe(readFileSync('fixtures/golden/seed-42-lifecycle.ndjson', 'utf8'));
  });

  it('is deterministic per seed and differs across seeds', () => {
    const a = ndjson(all(new EventGenerator({ scenario: checkout, seed: 7, payments: 500, lifecycle: true })));
    const b = ndjson(all(new EventGenerator({ scenario: checkout, seed: 7, payments: 500, lifecycle: true })));
    const c = ndjson(all(new EventGenerator({ scenario: checkout, seed: 8, payments: 500, lifecycle: true })));
    expect(a).toBe(b);
    expect(a).not.toBe(c);
  });

  it("emits one entry event per payment by default, and the seed's consumer logic reads it", () => {
    const events = all(new EventGenerator({ scenario: checkout, seed: 1, payments: 300, lifecycle: false }));
    expect(events).toHaveLength(300);
    for (const e of events) {
      const event = JSON.parse(e.body);
      // The seed document's consumer: event['event'] == 'order_placed', event['data']['order_id'].
      expect(event['event']).toBe('order_placed');
      expect(Number.isInteger(event['data']['order_id'])).toBe(true);
      expect(Number.isInteger(event['data']['user_id'])).toBe(true);
    }
    expect(new Set(events.map((e) => e.paymentId)).size).toBe(300);
    expect(new Set(events.map((e) => e.id)).size).toBe(300);
  });

  it('walks every payment through the lifecycle in order, interleaving payments', () => {
    const events = all(new EventGenerator({ scenario: checkout, seed: 3, payments: 2000, lifecycle: true }));
    const byPayment = new Map<string, GeneratedEvent[]>();
    for (const e of events) byPayment.set(e.paymentId, [...(byPayment.get(e.paymentId) ?? []), e]);
    expect(byPayment.size).toBe(2000);
    const outcomes = { completed: 0, declined: 0, refunded: 0 };
    for (const list of byPayment.values()) {
      expect(list.map((e) => e.sequence)).toEqual(list.map((_, i) => i));
      const types = list.map((e) => e.type);
      expect(types[0]).toBe('order_placed');
      if (types.includes('payment_declined')) {
        expect(types).toEqual(['order_placed', 'payment_declined']);
        outcomes.declined++;
      } else if (types.includes('refund_completed')) {
        expect(types).toEqual(['order_placed', 'payment_authorized', 'payment_captured', 'order_completed', 'refund_requested', 'refund_completed']);
        outcomes.refunded++;
      } else {
        expect(types).toEqual(['order_placed', 'payment_authorized', 'payment_captured', 'order_completed']);
        outcomes.completed++;
      }
    }
    // checkout declines 7% and refunds 3% of captured payments.
    expect(outcomes.declined / 2000).toBeGreaterThan(0.04);
    expect(outcomes.declined / 2000).toBeLessThan(0.1);
    expect(outcomes.refunded).toBeGreaterThan(20);
    // Interleaved: the first 50 events belong to more than one payment.
    expect(new Set(events.slice(0, 50).map((e) => e.paymentId)).size).toBeGreaterThan(5);
  });

  it('writes money as integer minor units with an ISO 4217 currency', () => {
    for (const e of all(new EventGenerator({ scenario: checkout, seed: 5, payments: 2000, lifecycle: false }))) {
      const { amount, currency } = JSON.parse(e.body).data;
      expect(Number.isSafeInteger(amount)).toBe(true);
      expect(amount).toBeGreaterThan(0);
      expect(CURRENCY_EXPONENT[currency]).toBeDefined();
    }
  });

  it('pads bodies to --size', () => {
    const [e] = all(new EventGenerator({ scenario: checkout, seed: 1, payments: 1, lifecycle: false, size: 1024 }));
    expect(Buffer.byteLength(e!.body)).toBe(1024);
    expect(JSON.parse(e!.body).event).toBe('order_placed');
  });
});
