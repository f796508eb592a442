import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { trace, type TraceOptions } from '../../src/core/trace.js';
import { createDriver } from '../../src/drivers/registry.js';
import { EventGenerator } from '../../src/events/generator.js';
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
