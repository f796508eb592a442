/**
 * runBench on memory://: APT as the seed defines it (issue 5's 2 ms / 8 ms check), the warm-up
 * kept out of every figure, loss seen when the broker drops acknowledged messages, and a refused
 * send showing up in availability. Each run is a few hundred payments: well under a second.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { runBench, type BenchDeps, type BenchOptions, type BenchResult } from '../../src/core/bench.js';
import { systemClock } from '../../src/core/clock.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, Driver, LinkStatus, OutgoingMessage } from '../../src/drivers/types.js';
import { DeliveryError } from '../../src/errors.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { mergeReports } from '../../src/metrics/merge.js';
import { buildReport, parseReport, type Report, type RunData } from '../../src/metrics/report.js';
import { aptMs } from '../../src/metrics/apt.js';
import { createLatencyHistogram, recordUs } from '../../src/metrics/histogram.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { runWorker, type WorkerResult } from '../../src/core/worker.js';
import { EventGenerator } from '../../src/events/generator.js';
import { testReportSettings } from '../helpers/report.js';

let instance = 0;

function scenarioFile(name: string): Scenario {
  const prefix = `t${Date.now().toString(36)}${instance++}`;
  const text = readFileSync(`fixtures/scenarios/${name}.yaml`, 'utf8').replaceAll(`${name}.`, `${prefix}.`);
  return parseScenario(text, name);
}

const settings = testReportSettings('memory://');

async function bench(options: Partial<BenchOptions> & { scenario: Scenario }, wrap?: (d: Driver) => Driver): Promise<Report> {
  return (await benchRun(options, wrap)).report;
}

async function benchRun(
  options: Partial<BenchOptions> & { scenario: Scenario },
  wrap?: (d: Driver) => Driver,
  deps: Omit<BenchDeps, 'driver' | 'clock'> = {},
): Promise<{ report: Report; result: BenchResult }> {
  const inner = await createDriver(`memory://bench-unit-${instance++}`);
  await inner.connect();
  const driver = wrap ? wrap(inner) : inner;
  try {
    const result = await runBench({ seed: 3, runId: `run${instance}`, warmupMs: 0, quietMs: 500, drainTimeoutMs: 20_000, ...options }, { driver, clock: systemClock, ...deps });
    return { report: buildReport(result.data, { run_id: 'test', role: 'all', settings }), result };
  } finally {
    await inner.close();
  }
}

/** bench-apt-equal with a slow second stage (20 ms, one at a time): a backlog builds up in it. */
function slowScenario(): Scenario {
  const prefix = `t${Date.now().toString(36)}${instance++}`;
  const text = readFileSync('fixtures/scenarios/bench-apt-equal.yaml', 'utf8')
    .replaceAll('bench-apt-equal.', `${prefix}.`)
    .replace('{ distribution: constant, ms: 8 }', '{ distribution: constant, ms: 20 }');
  return parseScenario(text, 'slow');
}

/** A driver that passes everything through except what `send` overrides. */
function passThrough(inner: Driver, send: Driver['send']): Driver {
  return {
    name: inner.name,
    url: inner.url,
    capabilities: inner.capabilities,
    tuning: inner.tuning,
    headerBinding: inner.headerBinding,
    connect: () => inner.connect(),
    declare: (d) => inner.declare(d),
    exists: (d) => inner.exists(d),
    send,
    subscribe: (o, h) => inner.subscribe(o, h),
    brokerVersion: () => inner.brokerVersion(),
    link: () => inner.link(),
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

/** `payq worker` alone on memory://: the scenario's entry events produced first, then handled until idle. */
async function workerAlone(scenario: Scenario, seed: number, payments: number, timeScale: number): Promise<WorkerResult> {
  const driver = await createDriver(`memory://worker-apt-${instance++}?retain=1000000`);
  await driver.connect();
  try {
    const generator = new EventGenerator({ scenario, seed, payments, lifecycle: false });
    const produced = await produce(
      { destination: scenario.destinationFor(scenario.entry), encode: { binding: driver.headerBinding, sourcePrefix: `/payq/${scenario.name}`, runId: 'w' } },
      { driver, source: generatedSource(generator), clock: systemClock },
    );
    expect(produced.acked).toBe(payments);
    return await runWorker({ scenario, seed, timeScale, failures: false, idleTimeoutMs: 400 }, { driver, clock: systemClock });
  } finally {
    await driver.close();
  }
}

describe('one APT: worker and bench (issue 11, defect 6)', () => {
  it('the shared formula: Σ tᵢ·cᵢ / Σ cᵢ over the histograms given, empty ones ignored', () => {
    const h = (us: number, n: number) => {
      const x = createLatencyHistogram();
      recordUs(x, us, n);
      return x;
    };
    expect(aptMs([h(2000, 3), h(8000, 1)])).toBeCloseTo(3.5, 2);
    expect(aptMs([h(2000, 1), h(8000, 1), createLatencyHistogram()])).toBeCloseTo(5, 2);
    expect(aptMs([])).toBe(0);
  });

  it.each([
    ['bench-apt-equal', 120, 1],
    ['checkout', 150, 0.05],
  ] as const)('%s: worker and bench report the same apt_ms for the same events and seed (processing time, not wall time)', async (name, payments, timeScale) => {
    const scenario = scenarioFile(name);
    const worked = await workerAlone(scenario, 9, payments, timeScale);
    expect(worked.stopped_by).toBe('idle');
    const benchReport = await bench({ scenario: scenarioFile(name), seed: 9, count: payments, timeScale, failures: false });
    // The same events get the same drawn processing times in both: the same figure, exactly.
    expect(worked.totals.apt_ms).toBe(benchReport.apt_ms);
    expect(worked.totals.apt_ms).toBe(aptMs(Object.values(worked.measures).map((m) => m.planned)));
    for (const s of worked.stages) {
      expect(s.handled, s.stage).toBe(benchReport.handlers[s.stage]!.count);
      expect(s.t_ms, s.stage).toBe(benchReport.handlers[s.stage]!.t_ms);
    }
    // The wall-time figure is there under its own name in both.
    expect(worked.totals.apt_wall_ms).toBe(aptMs(Object.values(worked.histograms)));
    expect(worked.totals.apt_wall_ms).toBeGreaterThan(0);
    expect(benchReport.apt_wall_ms).toBeGreaterThan(0);
    if (name === 'bench-apt-equal') expect(within(worked.totals.apt_ms, 5, 1)).toBe(true);
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
    expect(r.events).toMatchObject({ lost: dropped, in_flight: 0, not_drained: 0 });
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

/**
 * A driver whose consuming subscriptions on `destination` see what `deliver` makes of each batch
 * (the tracer's taps and the other destinations as they are), and whose link() says `link`.
 */
function redelivering(
  inner: Driver,
  destination: string,
  deliver: (deliveries: Delivery[], handle: (ds: Delivery[]) => unknown) => unknown,
  link?: LinkStatus,
): Driver {
  return {
    ...passThrough(inner, (d, m) => inner.send(d, m)),
    subscribe: (o, h) => (o.tap || !o.destinations.includes(destination) ? inner.subscribe(o, h) : inner.subscribe(o, (ds) => deliver(ds, h) as ReturnType<typeof h>)),
    link: () => link ?? inner.link(),
  };
}

const eventIdOf = (d: Delivery) => d.headers['ce_id']!;

describe('bench counts events, not deliveries (issue 15: the books after a broker restart)', () => {
  it('an event whose first delivery never reached the consumer counts as consumed when it comes again, flagged redelivered', async () => {
    const scenario = scenarioFile('bench-apt-equal');
    const target = scenario.stages[1]!.destination;
    const hidden = new Set<string>();
    let n = 0;
    const r = await bench({ scenario, count: 150, timeScale: 0 }, (inner) =>
      redelivering(inner, target, (ds, handle) => {
        // Every 10th first delivery is lost in transit: the broker hands it out again, flagged.
        const lost = ds.filter((d) => !d.redelivered && n++ % 10 === 0);
        for (const d of lost) {
          hidden.add(eventIdOf(d));
          d.nack();
        }
        return handle(ds.filter((d) => !lost.includes(d)));
      }),
    );
    expect(hidden.size).toBeGreaterThan(0);
    expect(r.events.redelivered).toBe(hidden.size);
    expect(r.events).toMatchObject({ acknowledged: 450, consumed: 450, lost: 0 });
    expect(r.loss).toBe(0);
    expect(r.payments.finished).toBe(150);
  });

  it('an event delivered again without the flag, and the events emitted again for it, count once each way', async () => {
    const scenario = scenarioFile('bench-apt-equal');
    const target = scenario.stages[0]!.destination;
    let n = 0;
    let copies = 0;
    const r = await bench({ scenario, count: 150, timeScale: 0 }, (inner) =>
      redelivering(inner, target, async (ds, handle) => {
        await handle(ds);
        // A broker that lost the acks of every 10th one hands it out again as if for the first time.
        const again = ds.filter(() => n++ % 10 === 0).map((d): Delivery => ({ ...d, ack: () => undefined, nack: () => undefined }));
        copies += again.length;
        if (again.length > 0) await handle(again);
      }),
    );
    expect(copies).toBeGreaterThan(0);
    // Each copy was handled again and its child emitted again, with the same id: duplicates, one event each.
    expect(r.events.duplicates).toBeGreaterThanOrEqual(copies);
    expect(r.events).toMatchObject({ acknowledged: 450, consumed: 450, lost: 0 });
    expect(r.loss).toBe(0);
  });

  it('after an outage, a quiet pipeline is not the end while the tracer follows a payment: what the broker hands out again later is consumed, not lost', async () => {
    const scenario = scenarioFile('bench-apt-equal');
    const target = scenario.stages[1]!.destination;
    const late: ReturnType<typeof setTimeout>[] = [];
    let n = 0;
    // The link lost and found again before the drain; one delivery in transit at the loss comes
    // back only long after the pipeline went quiet (as JetStream's ack wait brings it).
    const { report: r, result } = await benchRun({ scenario, count: 100, timeScale: 0, quietMs: 300 }, (inner) =>
      redelivering(
        inner,
        target,
        (ds, handle) => {
          const lost = ds.filter((d) => !d.redelivered && n++ === 50);
          for (const d of lost) late.push(setTimeout(() => d.nack(), 3_000));
          return handle(ds.filter((d) => !lost.includes(d)));
        },
        { connected: true, reconnects: 1, downMs: 1_000, gone: false },
      ),
    );
    for (const t of late) clearTimeout(t);
    expect(late).toHaveLength(1);
    expect(result.drained).toBe('complete');
    expect(r.events).toMatchObject({ acknowledged: 300, consumed: 300, lost: 0, not_drained: 0 });
    expect(r.payments).toMatchObject({ finished: 100, in_flight: 0 });
  });
});

describe('in flight and not drained are not lost (issue 11, defect 3)', () => {
  it.each([50, 150, 300])('interrupted after %i payments: the unconsumed events are in flight, loss 0', async (after) => {
    const controller = new AbortController();
    const { report: r, result } = await benchRun({ scenario: slowScenario(), rate: 1000, durationMs: 5000, consumers: 1 }, undefined, {
      signal: controller.signal,
      onProgress: (p) => {
        if (p.produced >= after) controller.abort();
      },
    });
    expect(result).toMatchObject({ interrupted: true, drained: 'interrupted' });
    expect(r.events.in_flight).toBeGreaterThan(0);
    expect(r.events.in_flight).toBe(r.events.acknowledged - r.events.consumed);
    expect(r.events).toMatchObject({ lost: 0, not_drained: 0 });
    expect(r.loss).toBe(0);
    // The books add up: every acknowledged event was consumed, or is in flight.
    expect(r.events.consumed + r.events.in_flight).toBe(r.events.acknowledged);
  });

  it.each([200, 400])('a drain cut short by a %i ms timeout: the backlog is not drained, loss 0', async (drainTimeoutMs) => {
    const { report: r, result } = await benchRun({ scenario: slowScenario(), count: 200, consumers: 1, drainTimeoutMs, quietMs: 10_000 });
    expect(result).toMatchObject({ interrupted: false, drained: 'timeout' });
    expect(r.events.not_drained).toBeGreaterThan(0);
    expect(r.events.consumed + r.events.not_drained).toBe(r.events.acknowledged);
    expect(r.events).toMatchObject({ lost: 0, in_flight: 0 });
    expect(r.loss).toBe(0);
    expect(r.payments.in_flight).toBeGreaterThan(0);
  });

  it('loss is over the events whose fate is known: lost / (acknowledged − in flight − not drained)', () => {
    const base = { acknowledged: 1000, consumed: 700, unacknowledged: 0, redelivered: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 };
    const cases = [
      [{ ...base }, 300, 0.3],
      [{ ...base, in_flight: 200 }, 100, 0.125],
      [{ ...base, not_drained: 300 }, 0, 0],
      [{ ...base, in_flight: 100, not_drained: 100 }, 100, 0.125],
      [{ ...base, acknowledged: 500, consumed: 0, not_drained: 500 }, 0, 0],
    ] as const;
    for (const [events, lost, loss] of cases) {
      const data = { ...emptyRun(), events: { ...events } };
      const r = buildReport(data, { run_id: 'x', role: 'all', settings });
      expect([r.events.lost, r.loss], JSON.stringify(events)).toEqual([lost, loss]);
      // Survives the JSON round trip, and a merge with a second part of the same figures counts both sides.
      const back = parseReport(JSON.stringify(r), 'r.json');
      expect(back.events).toEqual(r.events);
      const twin = parseReport(JSON.stringify(buildReport(data, { run_id: 'x', role: 'all', settings })), 'twin.json');
      expect(mergeReports([back, twin]).loss).toBe(loss);
    }
    // A v1 report written before these keys existed still reads, with nothing in flight.
    const old = JSON.parse(JSON.stringify(buildReport(emptyRun(), { run_id: 'x', role: 'all', settings }))) as { events: Record<string, unknown> };
    delete old.events['in_flight'];
    delete old.events['not_drained'];
    expect(parseReport(JSON.stringify(old), 'old.json').events).toMatchObject({ in_flight: 0, not_drained: 0 });
  });
});

function emptyRun(): RunData {
  const h = () => createLatencyHistogram();
  return {
    elapsed_s: 1,
    producers: { sent: 0, acked: 0, failed: 0, bytes: 0 },
    stages: {},
    sink: { destination: 'sink', consumed: 0, bytes: 0, delivery: h() },
    events: { acknowledged: 0, consumed: 0, unacknowledged: 0, redelivered: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 },
    payments: { finished: 0, in_flight: 0, stuck: 0, by_class: {} },
    dlq_by_reason: {},
    windows: { total: 0, available: 0 },
    latency: { publish: h(), publish_delay: undefined, publish_from_intended: undefined, end_to_end: h() },
    errors: [],
  };
}

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
