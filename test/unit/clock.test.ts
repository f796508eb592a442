/**
 * One clock per payment (issue 11, defect 7): every event of a payment carries its business time
 * (`occurred_at`, `ce_time`) on the same clock, and time only moves forward along its chain —
 * in generated lifecycles, in the events workers emit (retried ones included), and in dead letters.
 */
import { describe, expect, it, afterEach } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { readFileSync } from 'node:fs';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { businessMs, planHandling } from '../../src/core/worker-plan.js';
import { runWorker, type WorkerProgress } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, Headers } from '../../src/drivers/types.js';
import { DEFAULT_EPOCH_MS, EventGenerator, type GeneratedEvent } from '../../src/events/generator.js';
import { PayqHeader } from '../../src/events/headers.js';
import { loadScenario, parseScenario, type Scenario } from '../../src/events/scenario.js';
import { uniqueName } from '../helpers/brokers.js';
import { waitFor } from '../helpers/wait.js';

const DAY_MS = 86_400_000;
const checkout = loadScenario('checkout');
const threeToOne = loadScenario('fixtures/scenarios/bench-apt-3-to-1.yaml');

/** The checkout scenario with every stage's failures and retry policy replaced. */
function flaky(failures: { transient: number; permanent: number }, backoff: { initial_ms: number; multiplier: number; max_ms: number }): Scenario {
  const config = parseYaml(readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')) as { stages: Record<string, unknown>[] };
  for (const stage of config.stages) {
    stage['failures'] = failures;
    stage['retry'] = { max_attempts: 3, backoff };
  }
  return parseScenario(stringifyYaml(config), 'clock-flaky');
}

const ms = (iso: string) => Date.parse(iso);

describe('generated lifecycles: one business clock per payment', () => {
  const cases: [string, Scenario, number][] = [
    ['checkout seed 1', checkout, 1],
    ['checkout seed 99', checkout, 99],
    ['three siblings per payment (bench-apt-3-to-1)', threeToOne, 5],
  ];
  it.each(cases)('%s: every event occurs at its parent plus the drawn processing time, never before', (_name, scenario, seed) => {
    const events = [...new EventGenerator({ scenario, seed, payments: 400, lifecycle: true })];
    const byId = new Map(events.map((e) => [e.id, e]));
    const entryOf = new Map<string, GeneratedEvent>();
    let children = 0;
    for (const e of events) {
      const body = JSON.parse(e.body) as { occurred_at: string };
      expect(body.occurred_at).toBe(e.occurredAt);
      if (e.parentId === undefined) {
        entryOf.set(e.paymentId, e);
        expect(ms(e.occurredAt)).toBeGreaterThanOrEqual(DEFAULT_EPOCH_MS);
        continue;
      }
      children++;
      const parent = byId.get(e.parentId)!;
      expect(ms(e.occurredAt), `${e.type} before its parent ${parent.type}`).toBeGreaterThanOrEqual(ms(parent.occurredAt));
      // The same clock as the payment's entry: within a day of it, not the wall clock.
      expect(ms(e.occurredAt) - ms(entryOf.get(e.paymentId)!.occurredAt)).toBeLessThan(DAY_MS);
    }
    expect(children).toBeGreaterThan(400);
  });

  it('siblings occur together, when their parent’s handling ended (as a worker stamps them)', () => {
    // slow: constant 8 ms, then three events at once.
    const events = [...new EventGenerator({ scenario: threeToOne, seed: 2, payments: 50, lifecycle: true })];
    const byId = new Map(events.map((e) => [e.id, e]));
    for (const e of events) {
      if (e.parentId === undefined) continue;
      expect(ms(e.occurredAt) - ms(byId.get(e.parentId)!.occurredAt)).toBe(8);
    }
  });
});

interface Observed {
  destination: string;
  value: string;
  headers: Headers;
}

let drivers: Driver[] = [];
afterEach(async () => {
  await Promise.all(drivers.map((d) => d.close()));
  drivers = [];
});

/** Produces the entry events, runs every stage until the pipeline is quiet, returns what an observer saw. */
async function pipeline(scenario: Scenario, payments: number, seed: number, timeScale: number): Promise<Observed[]> {
  const driver = await createDriver(`memory://${uniqueName('clock')}?retain=1000000`);
  drivers.push(driver);
  await driver.connect();
  const observed: Observed[] = [];
  const destinations = scenario.destinations.flatMap((d) => [d, `${d}.dlq`]);
  await driver.subscribe({ destinations, group: 'observer', fromBeginning: true, prefetch: 10_000, tap: true }, (batch) => {
    for (const d of batch) {
      observed.push({ destination: d.destination, value: d.value.toString('utf8'), headers: { ...d.headers } });
      d.ack();
    }
  });
  const generator = new EventGenerator({ scenario, seed, payments, lifecycle: false });
  const produced = await produce(
    { destination: scenario.destinationFor(scenario.entry), encode: { binding: 'kafka', sourcePrefix: `/payq/${scenario.name}`, runId: 'clock' } },
    { driver, source: generatedSource(generator), clock: systemClock },
  );
  expect(produced.acked).toBe(payments);
  const controller = new AbortController();
  let latest: WorkerProgress | undefined;
  const running = runWorker(
    { scenario, timeScale, failures: true, seed: 0 },
    { driver, clock: systemClock, signal: controller.signal, onProgress: (p) => (latest = p) },
  );
  // Quiet: every message that reached a stage was settled, and the observer saw every output.
  const quiet = () => {
    if (!latest || latest.inFlight > 0) return false;
    let toStages = 0;
    let emitted = 0;
    for (const s of latest.stages) {
      for (const [type, n] of Object.entries(s.emitted_by_type)) {
        emitted += n;
        if (scenario.stageFor.has(type)) toStages += n;
      }
    }
    return latest.handled + latest.deadLettered === payments + toStages && observed.length === payments + emitted + latest.deadLettered;
  };
  await waitFor(quiet, 120_000, () => `a quiet pipeline (observed ${observed.length})`);
  controller.abort();
  await running;
  return observed;
}

const body = (o: Observed) => JSON.parse(o.value) as { id: string; payment_id: string; sequence: number; occurred_at: string };

/** Every payment's events, ordered by sequence, move forward on one clock; each child after its parent. */
function checkClock(observed: Observed[]): { children: number } {
  const events = observed.filter((o) => !o.destination.endsWith('.dlq'));
  const byId = new Map(events.map((o) => [o.headers['ce_id']!, o]));
  const byPayment = new Map<string, Observed[]>();
  for (const o of events) {
    const b = body(o);
    expect(o.headers['ce_time']).toBe(b.occurred_at);
    byPayment.set(b.payment_id, [...(byPayment.get(b.payment_id) ?? []), o]);
  }
  let children = 0;
  for (const o of events) {
    const parentId = o.headers[PayqHeader.parentId];
    if (parentId === undefined) continue;
    children++;
    const parent = byId.get(parentId)!;
    expect(ms(body(o).occurred_at), `${o.headers['ce_type']} before its parent`).toBeGreaterThanOrEqual(ms(body(parent).occurred_at));
  }
  for (const [payment, list] of byPayment) {
    const times = list.sort((a, b) => body(a).sequence - body(b).sequence).map((o) => ms(body(o).occurred_at));
    for (let i = 1; i < times.length; i++) expect(times[i]!, `payment ${payment}: event ${i} goes back in time`).toBeGreaterThanOrEqual(times[i - 1]!);
    expect(times.at(-1)! - times[0]!, `payment ${payment} spans more than a day`).toBeLessThan(DAY_MS);
    expect(times[0]!).toBeGreaterThanOrEqual(DEFAULT_EPOCH_MS);
  }
  return { children };
}

describe('worker-emitted chains on memory://: the payment’s clock, moving forward', () => {
  it('checkout, 1500 payments: every payment’s events by sequence never go back and span under a day', async () => {
    const observed = await pipeline(checkout, 1500, 3, 0);
    expect(checkClock(observed).children).toBeGreaterThan(3000);
  });

  it('three siblings per payment: each occurs its parent’s drawn processing time after it, on every time scale', async () => {
    const fast = await pipeline(threeToOne, 200, 4, 0);
    checkClock(fast);
    const byId = new Map(fast.map((o) => [o.headers['ce_id']!, o]));
    let siblings = 0;
    for (const o of fast) {
      const parentId = o.headers[PayqHeader.parentId];
      if (parentId === undefined) continue;
      siblings++;
      expect(ms(body(o).occurred_at) - ms(body(byId.get(parentId)!).occurred_at)).toBe(8);
    }
    expect(siblings).toBe(600);
    // The business clock is the scenario's, not the simulation's speed: the same bodies at scale 1.
    const slow = await pipeline(threeToOne, 200, 4, 1);
    const bodies = (list: Observed[]) => list.map((o) => o.value).sort();
    expect(bodies(slow)).toEqual(bodies(fast));
  });

  it('retried handlings: the child occurs after every attempt and backoff of its parent', async () => {
    const scenario = flaky({ transient: 0.3, permanent: 0 }, { initial_ms: 40, multiplier: 2, max_ms: 100 });
    const observed = await pipeline(scenario, 300, 6, 0);
    checkClock(observed);
    const byId = new Map(observed.filter((o) => !o.destination.endsWith('.dlq')).map((o) => [o.headers['ce_id']!, o]));
    let retried = 0;
    for (const o of byId.values()) {
      const parentId = o.headers[PayqHeader.parentId];
      if (parentId === undefined) continue;
      const parent = byId.get(parentId)!;
      const stage = scenario.stageFor.get(parent.headers['ce_type']!)!;
      const plan = planHandling(stage, parentId, { seed: 0, failures: true, timeScale: 0 });
      const gap = ms(body(o).occurred_at) - ms(body(parent).occurred_at);
      expect(gap).toBe(Math.round(businessMs(plan.attempts)));
      if (plan.attempts.length > 1) {
        retried++;
        expect(gap).toBeGreaterThanOrEqual(40);
      }
    }
    expect(retried).toBeGreaterThan(20);
  });

  it('dead letters keep the event’s own time, on its payment’s clock', async () => {
    const scenario = flaky({ transient: 0.2, permanent: 0.05 }, { initial_ms: 5, multiplier: 2, max_ms: 20 });
    const observed = await pipeline(scenario, 400, 8, 0);
    checkClock(observed);
    const originals = new Map(observed.filter((o) => !o.destination.endsWith('.dlq')).map((o) => [o.headers['ce_id']!, o]));
    const entryTime = new Map<string, number>();
    for (const o of originals.values()) if (o.headers[PayqHeader.parentId] === undefined) entryTime.set(body(o).payment_id, ms(body(o).occurred_at));
    const dead = observed.filter((o) => o.destination.endsWith('.dlq'));
    expect(dead.length).toBeGreaterThan(20);
    let emittedDead = 0;
    for (const o of dead) {
      const original = originals.get(o.headers['ce_id']!)!;
      expect(body(o).occurred_at).toBe(body(original).occurred_at);
      expect(o.headers['ce_time']).toBe(body(original).occurred_at);
      const since = ms(body(o).occurred_at) - entryTime.get(body(o).payment_id)!;
      expect(since).toBeGreaterThanOrEqual(0);
      expect(since).toBeLessThan(DAY_MS);
      if (o.headers[PayqHeader.parentId] !== undefined) emittedDead++;
    }
    // Some of them were emitted by a worker (dead-lettered by a later stage), not produced.
    expect(emittedDead).toBeGreaterThan(0);
  });
});
