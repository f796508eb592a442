/**
 * runBench on memory://: APT as the seed defines it (issue 5's 2 ms / 8 ms check), the warm-up
 * kept out of every figure, loss seen when the broker drops acknowledged messages, and a refused
 * send showing up in availability. Each run is a few hundred payments: well under a second.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runBench, type BenchOptions } from '../../src/core/bench.js';
import { systemClock } from '../../src/core/clock.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { DeliveryError } from '../../src/errors.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { buildReport, mergeReports, parseReport, type Report } from '../../src/metrics/report.js';
import { testReportSettings } from '../helpers/report.js';

let instance = 0;

function scenarioFile(name: string): Scenario {
  const prefix = `t${Date.now().toString(36)}${instance++}`;
  const text = readFileSync(`fixtures/scenarios/${name}.yaml`, 'utf8').replaceAll(`${name}.`, `${prefix}.`);
  return parseScenario(text, name);
}

const settings = testReportSettings('memory://');

async function bench(options: Partial<BenchOptions> & { scenario: Scenario }, wrap?: (d: Driver) => Driver): Promise<Report> {
  const inner = await createDriver(`memory://bench-unit-${instance++}`);
  await inner.connect();
  const driver = wrap ? wrap(inner) : inner;
  try {
    const result = await runBench({ seed: 3, runId: `run${instance}`, warmupMs: 0, quietMs: 500, drainTimeoutMs: 20_000, ...options }, { driver, clock: systemClock });
    return buildReport(result.data, { run_id: 'test', role: 'all', settings });
  } finally {
    await inner.close();
  }
}

/** A driver that passes everything through except what `send` overrides. */
function passThrough(inner: Driver, send: Driver['send']): Driver {
  return {
    name: inner.name,
    url: inner.url,
    capabilities: inner.capabilities,
    connect: () => inner.connect(),
    declare: (d) => inner.declare(d),
    exists: (d) => inner.exists(d),
    send,
    subscribe: (o, h) => inner.subscribe(o, h),
    brokerVersion: () => inner.brokerVersion(),
    close: () => inner.close(),
  };
}

const within = (actual: number, expected: number, pct: number) => Math.abs(actual - expected) <= (expected * pct) / 100;

describe('bench APT (Σ tᵢ·cᵢ / Σ cᵢ)', () => {
  it('2 ms and 8 ms handlers with equal counts: APT 5 ms, each tᵢ within 5%', async () => {
    const r = await bench({ scenario: scenarioFile('bench-apt-equal'), count: 300 });
    expect(r.handlers['fast']!.count).toBe(300);
    expect(r.handlers['slow']!.count).toBe(300);
    expect(within(r.handlers['fast']!.t_ms, 2, 5), `fast tᵢ ${r.handlers['fast']!.t_ms}`).toBe(true);
    expect(within(r.handlers['slow']!.t_ms, 8, 5), `slow tᵢ ${r.handlers['slow']!.t_ms}`).toBe(true);
    expect(within(r.apt_ms, 5, 5), `APT ${r.apt_ms}`).toBe(true);
    expect(r.payments).toMatchObject({ produced: 300, finished: 300 });
    // The wall time is measured too (timers overshoot or round it); it is reported, not used.
    expect(r.handlers['fast']!.wall_t_ms).toBeGreaterThan(0);
    expect(r.apt_wall_ms).toBeGreaterThan(0);
  });

  it('counts 3:1 weight the mean: APT 3.5 ms, not the handlers\' plain mean of 5 ms', async () => {
    const r = await bench({ scenario: scenarioFile('bench-apt-3-to-1'), count: 200 });
    const { slow, fast } = r.handlers;
    expect([slow!.count, fast!.count]).toEqual([200, 600]);
    expect(within(slow!.t_ms, 8, 5)).toBe(true);
    expect(within(fast!.t_ms, 2, 5)).toBe(true);
    expect(within(r.apt_ms, 3.5, 5), `APT ${r.apt_ms}`).toBe(true);
    // The formula itself, from the reported tᵢ and cᵢ.
    const weighted = (slow!.t_ms * slow!.count + fast!.t_ms * fast!.count) / (slow!.count + fast!.count);
    expect(Math.abs(r.apt_ms - weighted)).toBeLessThan(0.001);
    expect(r.payments).toMatchObject({ produced: 200, finished: 200 });
    expect(r.loss).toBe(0);
  });
});

describe('bench figures', () => {
  it('keeps the warm-up out of every figure, and a clean run has loss 0 and availability 1', async () => {
    const r = await bench({ scenario: scenarioFile('bench-apt-equal'), count: 150, warmupMs: 400, timeScale: 0.25 });
    // The warm-up produced payments for 400 ms flat out; none of them is counted anywhere.
    expect(r.producers.acked).toBe(150);
    expect(r.payments).toMatchObject({ produced: 150, finished: 150, in_flight: 0, stuck: 0 });
    expect(r.handlers['fast']!.count).toBe(150);
    expect(r.handlers['slow']!.count).toBe(150);
    expect(r.handlers['fast']!.received).toBe(150);
    expect(r.sink.consumed).toBe(150);
    expect(r.latency.end_to_end.count).toBe(150);
    expect(r.latency.hops['fast']!.count).toBe(150);
    // Acknowledged: 150 produced + 150 emitted by each stage; all consumed.
    expect(r.events).toMatchObject({ acknowledged: 450, consumed: 450, lost: 0, duplicates: 0 });
    expect(r.loss).toBe(0);
    expect(r.availability).toBe(1);
    expect(r.windows.total).toBeGreaterThan(0);
  });

  it('sees loss when the broker drops acknowledged messages', async () => {
    const scenario = scenarioFile('bench-apt-equal');
    const target = scenario.stages[1]!.destination;
    let dropped = 0;
    let seen = 0;
    const r = await bench({ scenario, count: 200, timeScale: 0 }, (inner) =>
      passThrough(inner, (destination: string, messages: OutgoingMessage[]) => {
        if (destination !== target) return inner.send(destination, messages);
        // Acknowledge every message but store only most of them: a broker losing acked data.
        const kept = messages.filter(() => seen++ % 10 !== 0 || (dropped++, false));
        return kept.length > 0 ? inner.send(destination, kept) : Promise.resolve();
      }),
    );
    expect(dropped).toBeGreaterThan(0);
    expect(r.events.lost).toBe(dropped);
    expect(r.loss).toBeCloseTo(dropped / r.events.acknowledged, 5);
    expect(r.payments.finished).toBe(200 - dropped);
  });

  it('counts a window with refused sends as unavailable', async () => {
    const scenario = scenarioFile('bench-apt-equal');
    const entry = scenario.stages[0]!.destination;
    let batches = 0;
    const r = await bench({ scenario, count: 300, timeScale: 0, maxBacklog: 20 }, (inner) =>
      passThrough(inner, (destination, messages) => {
        if (destination === entry && batches++ === 3) return Promise.reject(new DeliveryError('injected: the broker refused the batch', { retriable: true }));
        return inner.send(destination, messages);
      }),
    );
    expect(r.producers.failed).toBeGreaterThan(0);
    expect(r.events.unacknowledged).toBe(r.producers.failed);
    expect(r.windows.total - r.windows.available).toBeGreaterThanOrEqual(1);
    expect(r.availability).toBeLessThan(1);
    // What was refused was never acknowledged, so it is not loss.
    expect(r.loss).toBe(0);
  });
});

describe('bench parts (--role)', () => {
  it('a producer, two workers and a tracer, merged, report the whole run: nothing lost, every payment finished', async () => {
    const scenario = scenarioFile('bench-apt-3-to-1');
    const url = `memory://bench-roles-${instance++}`;
    const runId = `roles${instance}`;
    const drivers: Driver[] = [];
    const part = async (role: 'producer' | 'worker' | 'tracer', waiting?: () => void) => {
      const driver = await createDriver(url);
      await driver.connect();
      drivers.push(driver);
      let told = false;
      const result = await runBench(
        { scenario, seed: 4, runId, role, count: 300, rate: 3000, warmupMs: 200, idleTimeoutMs: 600, consumers: 16, timeScale: 0.5 },
        {
          driver,
          clock: systemClock,
          onProgress: (p) => {
            if (p.phase === 'waiting' && !told) {
              told = true;
              waiting?.();
            }
          },
        },
      );
      return buildReport(result.data, { run_id: runId, role, settings });
    };
    try {
      const ready: Promise<void>[] = [];
      const waiting = () => {
        let done!: () => void;
        ready.push(new Promise<void>((r) => (done = r)));
        return done;
      };
      const tracer = part('tracer', waiting());
      const workers = [part('worker', waiting()), part('worker', waiting())];
      await Promise.all(ready);
      const producer = await part('producer');
      const reports = [producer, ...(await Promise.all(workers)), await tracer];

      // Each part alone cannot tell loss; the merge can.
      expect(reports.map((r) => r.loss)).toEqual([null, null, null, null]);
      expect(producer.producers.acked).toBe(300);
      const merged = mergeReports(reports.map((r) => parseReport(JSON.stringify(r), r.role)));
      expect(merged).toMatchObject({ role: 'merged', merged_from: 4, loss: 0 });
      expect(merged.events.lost).toBe(0);
      // 300 produced + 3 × 300 emitted by slow; consumed: 300 (slow) + 900 (fast); no sink events here.
      expect(merged.events).toMatchObject({ acknowledged: 1200, consumed: 1200 });
      expect(merged.payments).toMatchObject({ produced: 300, finished: 300, in_flight: 0 });
      expect(merged.handlers['slow']!.count).toBe(300);
      expect(merged.handlers['fast']!.count).toBe(900);
      expect(within(merged.apt_ms, 3.5 * 0.5, 5), `APT ${merged.apt_ms}`).toBe(true);
      // Both workers took part (competing consumers of the same groups).
      const [, w1, w2] = reports;
      expect(w1!.handlers['fast']!.count + w2!.handlers['fast']!.count).toBe(900);
    } finally {
      await Promise.all(drivers.map((d) => d.close()));
    }
  });
});
