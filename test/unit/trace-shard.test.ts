/**
 * trace --shard on a broker without partitions (memory://, as RabbitMQ, NATS and ZeroMQ): each
 * shard reads everything and follows only the payments whose id hashes to it, so N shards
 * together give exactly what one tracer gives. And the pieces of Kafka's split by partition.
 */
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { paymentHash, paymentShard, trace, type TraceOptions, type TraceResult } from '../../src/core/trace.js';
import { checkShardLayout, shardPartitions } from '../../src/drivers/kafka/subscription.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver } from '../../src/drivers/types.js';
import { toMessage } from '../../src/events/codec.js';
import { EventGenerator, type GeneratedEvent } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';

const checkout = loadScenario('checkout');
const ENCODE = { binding: 'kafka' as const, sourcePrefix: '/payq/checkout', runId: 'r1' };
const PAYMENTS = 300;
const BASE_US = (Date.now() - 3_600_000) * 1000;

function options(extra: Partial<TraceOptions>): TraceOptions {
  return {
    scenario: checkout,
    destinations: checkout.destinations,
    decode: { typeField: 'event', correlate: 'payment_id' },
    stuckAfterMs: 30_000,
    expect: ['order_placed'],
    withinMs: undefined,
    payment: undefined,
    runId: undefined,
    fromBeginning: true,
    idleTimeoutMs: 1_500,
    durationMs: 60_000,
    untilFinished: undefined,
    ...extra,
  };
}

/** A seeded lifecycle run in the scenario's destinations, an hour ago, plus one unreadable message. */
async function history(seed: number): Promise<{ driver: Driver; events: GeneratedEvent[] }> {
  const driver = await createDriver(`memory://shard-${seed}-${Date.now()}?retain=100000`);
  await driver.connect();
  await driver.declare(checkout.destinations.map((name) => ({ name, deadLetter: true })));
  const events = [...new EventGenerator({ scenario: checkout, seed, payments: PAYMENTS, lifecycle: true })];
  for (const e of events) {
    const timing = { publishedUs: String(BASE_US + e.sequence! * 1000), startUs: String(BASE_US) };
    await driver.send(checkout.destinationFor(e.type), [toMessage(e, ENCODE, timing)]);
  }
  await driver.send(checkout.destinations[0]!, [{ key: 'x', type: 'x', value: Buffer.from('not json'), headers: {} }]);
  return { driver, events };
}

const addClasses = (results: TraceResult[]) => {
  const out: Record<string, number> = {};
  for (const r of results) for (const [k, v] of Object.entries(r.payments.by_class)) out[k] = (out[k] ?? 0) + v;
  return out;
};

describe('trace --shard by payment hash', () => {
  it('N shards follow disjoint payments and add up to one unsharded tracer', async () => {
    const { driver, events } = await history(31);
    try {
      const whole = await trace(options({}), { driver, clock: systemClock });
      expect(whole.payments.finished).toBe(PAYMENTS);
      const shards: TraceResult[] = [];
      for (let i = 1; i <= 3; i++) shards.push(await trace(options({ shard: { index: i, count: 3 } }), { driver, clock: systemClock }));
      const ids = [...new Set(events.map((e) => e.paymentId))];
      shards.forEach((r, k) => {
        const mine = ids.filter((id) => paymentShard(id, 3) === k + 1);
        expect(mine.length).toBeGreaterThan(0);
        expect(r.payments.seen, `shard ${k + 1}`).toBe(mine.length);
        expect(r.events.seen + r.events.other_shards).toBe(events.length);
        expect(r.expectation!.passed).toBe(mine.length);
      });
      expect(shards.reduce((n, r) => n + r.payments.finished, 0)).toBe(whole.payments.finished);
      expect(shards.reduce((n, r) => n + r.events.seen, 0)).toBe(whole.events.seen);
      expect(addClasses(shards)).toEqual(whole.payments.by_class);
      // The unreadable message is counted once over the shards, as by one tracer.
      expect(whole.events.undecodable).toBe(1);
      expect(shards.map((r) => r.events.undecodable)).toEqual([1, 0, 0]);
      expect(shards.reduce((n, r) => n + r.histograms.endToEnd.totalCount, 0)).toBe(whole.histograms.endToEnd.totalCount);
    } finally {
      await driver.close();
    }
  });

  it('refuses a shard read as a member of a group (it would take what it skips)', async () => {
    const driver = await createDriver(`memory://shard-group-${Date.now()}`);
    await driver.connect();
    try {
      await expect(trace(options({ shard: { index: 1, count: 2 }, mode: { kind: 'group', group: 'g', requeue: false } }), { driver, clock: systemClock })).rejects.toThrow(
        /--shard goes with a tap \(no --group\): a member of group g would take the messages it skips/,
      );
    } finally {
      await driver.close();
    }
  });

  it('hashes a payment id the same way everywhere (FNV-1a)', () => {
    // Fixed values: every tracer of a fleet, whatever its version or machine, must agree.
    expect(paymentHash('')).toBe(0x811c9dc5);
    expect(paymentHash('a')).toBe(0xe40c292c);
    expect(paymentHash('pay_7de73dd98817dded')).toBe(paymentHash('pay_7de73dd98817dded'));
    expect(paymentShard('a', 2)).toBe((0xe40c292c % 2) + 1);
  });
});

describe('Kafka shards by partition', () => {
  it('shard i of N reads the partitions ≡ i-1 mod N', () => {
    expect(shardPartitions(6, { index: 1, count: 3 })).toEqual([0, 3]);
    expect(shardPartitions(6, { index: 3, count: 3 })).toEqual([2, 5]);
    expect(shardPartitions(2, { index: 3, count: 3 })).toEqual([]);
    const all = [1, 2, 3, 4].flatMap((i) => shardPartitions(10, { index: i, count: 4 })).sort((a, b) => a - b);
    expect(all).toEqual([0, 1, 2, 3, 4, 5, 6, 7, 8, 9]);
  });

  it('refuses topics with different partition counts, and a shard with no partition', () => {
    expect(() => checkShardLayout(new Map([['a', 6], ['a.dlq', 6]]), { index: 2, count: 3 })).not.toThrow();
    expect(() => checkShardLayout(new Map([['a', 6], ['a.dlq', 3]]), { index: 1, count: 2 })).toThrow(
      /--shard 1\/2 splits by partition, which needs one partition count on every traced topic; these differ \(a 6, a\.dlq 3\)/,
    );
    expect(() => checkShardLayout(new Map([['a', 2]]), { index: 3, count: 3 })).toThrow(/shard 3 would read none; use at most 2 shards/);
  });
});
