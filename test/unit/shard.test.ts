import { describe, expect, it } from 'vitest';
import { EventGenerator, type GeneratedEvent, type GeneratorOptions } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';

// The generator thread runs compiled code (dist/core/generator-worker.js): load the compiled
// source too (npm run build first).
const { threadedSource } = (await import('../../dist/core/threaded-source.js' as string)) as typeof import('../../src/core/threaded-source.js');

const checkout = loadScenario('checkout');

/** Every field a consumer or the codec sees, as one line. */
const line = (e: GeneratedEvent) =>
  [e.id, e.type, e.paymentId, e.sequence, e.source, e.occurredAt, e.traceId, e.spanId, e.parentId ?? '', e.siblings ?? '', e.body].join('|');

function run(options: GeneratorOptions): { lines: string[]; events: GeneratedEvent[]; payments: number } {
  const g = new EventGenerator(options);
  const events = [...g];
  return { lines: events.map(line), events, payments: g.paymentsStarted };
}

const cases: { seed: number; shards: number; count: number; lifecycle: boolean; size?: number }[] = [
  { seed: 42, shards: 3, count: 100, lifecycle: false },
  { seed: 42, shards: 3, count: 100, lifecycle: true },
  { seed: 7, shards: 2, count: 501, lifecycle: true, size: 700 },
  { seed: 7, shards: 4, count: 3, lifecycle: true },
  { seed: 1, shards: 5, count: 1234, lifecycle: false, size: 400 },
  { seed: 99, shards: 7, count: 700, lifecycle: true },
  { seed: 3, shards: 1, count: 50, lifecycle: true },
];

describe('sharded generator (--shard i/N)', () => {
  for (const c of cases) {
    it(`seed ${c.seed}, ${c.shards} shards, ${c.count} payments, ${c.lifecycle ? 'lifecycle' : 'entry'}${c.size ? `, size ${c.size}` : ''}: the shards are exactly the whole`, () => {
      const base = { scenario: checkout, seed: c.seed, payments: c.count, lifecycle: c.lifecycle, size: c.size };
      const whole = run(base);
      // Payment positions in generation order: the order id is 10,000,000 + the position (in
      // lifecycle mode first events interleave, so their order is not the payments' order).
      const position = new Map<string, number>();
      for (const e of whole.events) position.set(e.paymentId, (JSON.parse(e.body) as { data: { order_id: number } }).data.order_id - 10_000_000);
      expect(position.size).toBe(c.count);

      const union: string[] = [];
      let payments = 0;
      for (let i = 1; i <= c.shards; i++) {
        const shard = run({ ...base, shard: { index: i, count: c.shards } });
        // Shard i is the whole stream restricted to the payments at positions ≡ i-1 mod N, in the
        // same order: no payment dropped, duplicated or moved, each payment's events in order.
        const expected = whole.events.filter((e) => position.get(e.paymentId)! % c.shards === i - 1).map(line);
        expect(shard.lines).toEqual(expected);
        expect(shard.payments).toBe(Math.ceil((c.count - (i - 1)) / c.shards));
        payments += shard.payments;
        union.push(...shard.lines);
      }
      expect(payments).toBe(c.count);
      expect(union.length).toBe(whole.lines.length);
      expect([...union].sort()).toEqual([...whole.lines].sort());
    });
  }

  it('the generator thread applies the shard too', async () => {
    const base = { scenario: checkout, seed: 5, payments: 300, lifecycle: true };
    const union: string[] = [];
    for (let i = 1; i <= 3; i++) {
      const source = threadedSource({ ...base, shard: { index: i, count: 3 } }, { batchSize: 17 });
      const expected = run({ ...base, shard: { index: i, count: 3 } }).lines;
      const got: string[] = [];
      for (;;) {
        const chunk = await source.pull(50);
        if (chunk.length === 0) break;
        got.push(...chunk.map(line));
      }
      source.close?.();
      expect(got).toEqual(expected);
      expect(source.payments).toBe(100);
      union.push(...got);
    }
    expect(union.sort()).toEqual(run(base).lines.sort());
  });
});
