/**
 * The report model without a broker: merging is exact (two reports merged equal one report over
 * the combined samples), reports survive JSON and validate against the schema, assertions parse
 * and evaluate as documented, comparisons flag regressions, and availability windows count right.
 */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { Prng } from '../../src/events/prng.js';
import { AvailabilityTracker } from '../../src/metrics/availability.js';
import { evaluateAssertions, parseAssertion, schemaKind } from '../../src/metrics/assert.js';
import { compareReports } from '../../src/metrics/compare.js';
import { createLatencyHistogram, recordUs, type LatencyHistogram } from '../../src/metrics/histogram.js';
import { buildReport, mergeReports, parseReport, reportSchema, type Report, type RunData } from '../../src/metrics/report.js';

const settings: Report['settings'] = {
  broker: 'kafka://127.0.0.1:9092',
  broker_version: 'Apache Kafka 4.1',
  scenario: 'checkout',
  seed: 7,
  rate_per_s: 1000,
  duration_s: 30,
  count: null,
  warmup_s: 2,
  producers: 1,
  consumers: 64,
  max_backlog: null,
  time_scale: 1,
  failures: true,
  payq_version: '0.1.0',
  node_version: process.version,
  started_at: '2026-01-01T00:00:00.000Z',
};

/** Samples drawn from a seeded PRNG, so the test is the same on every run. */
function samples(seed: number, n: number, scaleUs: number): number[] {
  const prng = new Prng(seed);
  return Array.from({ length: n }, () => Math.round(scaleUs * Math.exp(prng.normal() * 0.8)));
}

function hist(values: number[]): LatencyHistogram {
  const h = createLatencyHistogram();
  for (const v of values) recordUs(h, v);
  return h;
}

interface Samples {
  publish: number[];
  e2e: number[];
  pay: number[];
  cap: number[];
  hopPay: number[];
  hopCap: number[];
  sink: number[];
}

function drawn(seed: number, n: number): Samples {
  return {
    publish: samples(seed, n, 2_000),
    e2e: samples(seed + 1, n, 40_000),
    pay: samples(seed + 2, n, 8_000),
    cap: samples(seed + 3, Math.floor(n * 0.9), 5_000),
    hopPay: samples(seed + 4, n, 3_000),
    hopCap: samples(seed + 6, Math.floor(n * 0.9), 2_000),
    sink: samples(seed + 5, n, 1_000),
  };
}

function join(a: Samples, b: Samples): Samples {
  return {
    publish: [...a.publish, ...b.publish],
    e2e: [...a.e2e, ...b.e2e],
    pay: [...a.pay, ...b.pay],
    cap: [...a.cap, ...b.cap],
    hopPay: [...a.hopPay, ...b.hopPay],
    hopCap: [...a.hopCap, ...b.hopCap],
    sink: [...a.sink, ...b.sink],
  };
}

/** Run data over the samples; `k` scales the fixed counts (2 for data standing for two runs). */
function runData(s: Samples, windows: { total: number; available: number }, lost: number, k = 1): RunData {
  const n = s.pay.length;
  const stage = (values: number[], hop: number[]) => ({
    handled: values.length,
    received: values.length + 3 * k,
    redelivered: 3 * k,
    attempts: values.length + 5 * k,
    retries: 5 * k,
    transient_failures: 5 * k,
    emitted: values.length,
    dead_lettered: 2 * k,
    bytes_received: values.length * 300,
    bytes_handled: values.length * 300,
    bytes_emitted: values.length * 310,
    processing: hist(values),
    wall: hist(values.map((v) => v + 150)),
    delivery: hist(hop),
  });
  return {
    elapsed_s: 30,
    producers: { sent: n, acked: n, failed: 0, bytes: n * 290 },
    stages: { 'payment-service': stage(s.pay, s.hopPay), 'capture-service': stage(s.cap, s.hopCap) },
    sink: { destination: 'checkout.events', consumed: s.sink.length, bytes: s.sink.length * 250, delivery: hist(s.sink) },
    events: { acknowledged: 3 * n, consumed: 3 * n - lost, unacknowledged: 0, redelivered: 6 * k, duplicates: k, out_of_order: 0, missing_steps: 0, undecodable: 0 },
    payments: { finished: n - 4 * k, in_flight: 4 * k, stuck: 0, by_class: { completed: n - 10 * k, declined: 6 * k } },
    dlq_by_reason: { 'permanent-failure': 3 * k, 'retries-exhausted': k },
    windows,
    latency: { publish: hist(s.publish), publish_delay: hist(s.publish.map((v) => v / 10)), publish_from_intended: hist(s.publish.map((v) => v * 2)), end_to_end: hist(s.e2e) },
    errors: [],
  };
}

/** A report without what legitimately differs between a merged and a single report. */
function figures(r: Report): Omit<Report, 'histograms' | 'run_id' | 'role' | 'merged_from' | 'settings'> {
  const { histograms: _h, run_id: _r, role: _o, merged_from: _m, settings: _s, ...rest } = r;
  return rest;
}

describe('report merge', () => {
  const a = drawn(11, 4000);
  const b = drawn(97, 2500);
  const reportA = buildReport(runData(a, { total: 30, available: 29 }, 2), { run_id: 'run', role: 'worker', settings });
  const reportB = buildReport(runData(b, { total: 30, available: 30 }, 1), { run_id: 'run', role: 'worker', settings });
  const combined = buildReport(runData(join(a, b), { total: 60, available: 59 }, 3, 2), { run_id: 'run', role: 'all', settings });

  it('gives the same counts and percentiles as one report over the combined samples', () => {
    // Through JSON, as `payq report --merge` reads them.
    const merged = mergeReports([parseReport(JSON.stringify(reportA), 'a.json'), parseReport(JSON.stringify(reportB), 'b.json')]);
    expect(figures(merged)).toEqual(figures(combined));
    expect(merged.merged_from).toBe(2);
    expect(merged.role).toBe('merged');
    // And it is not trivially so: the parts differ from the whole.
    expect(reportA.latency.end_to_end.p99_ms).not.toBe(combined.latency.end_to_end.p99_ms);
    expect(merged.events.lost).toBe(3);
    expect(merged.windows).toEqual({ total: 60, available: 59 });
    expect(merged.dlq.by_reason).toEqual({ 'permanent-failure': 6, 'retries-exhausted': 2 });
  });

  it('recomputes APT from the merged handler histograms (Σ tᵢ·cᵢ / Σ cᵢ)', () => {
    const merged = mergeReports([reportA, reportB]);
    const h = merged.handlers;
    const weighted = (h['payment-service']!.t_ms * h['payment-service']!.count + h['capture-service']!.t_ms * h['capture-service']!.count) /
      (h['payment-service']!.count + h['capture-service']!.count);
    expect(merged.apt_ms).toBeCloseTo(weighted, 3);
    const exact = [...a.pay, ...b.pay, ...a.cap, ...b.cap].reduce((x, y) => x + y, 0) / (a.pay.length + b.pay.length + a.cap.length + b.cap.length) / 1000;
    // HdrHistogram with 3 significant digits: within 0.1%.
    expect(Math.abs(merged.apt_ms - exact) / exact).toBeLessThan(0.001);
  });

  it('validates against the schema and rejects what is not a report', () => {
    expect(reportSchema.safeParse(JSON.parse(JSON.stringify(reportA))).success).toBe(true);
    expect(() => parseReport('{"schema":"payq.report/v9"}', 'x.json')).toThrow(/payq.report\/v9.*payq.report\/v1/);
    expect(() => parseReport('not json', 'x.json')).toThrow(/not JSON/);
    const broken = { ...JSON.parse(JSON.stringify(reportA)), loss: 2 };
    expect(() => parseReport(JSON.stringify(broken), 'x.json')).toThrow(/loss/);
    const extra = { ...JSON.parse(JSON.stringify(reportA)), surprise: 1 };
    expect(() => parseReport(JSON.stringify(extra), 'x.json')).toThrow();
  });
});

describe('--assert', () => {
  const report = buildReport(runData(drawn(5, 1000), { total: 10, available: 10 }, 0), { run_id: 'r', role: 'all', settings });

  it('parses the documented forms', () => {
    expect(parseAssertion('p99_ms<250')).toEqual({ text: 'p99_ms<250', path: 'latency.end_to_end.p99_ms', op: '<', value: 250 });
    expect(parseAssertion(' loss == 0 ')).toMatchObject({ path: 'loss', op: '==', value: 0 });
    expect(parseAssertion('throughput>=5k')).toMatchObject({ path: 'throughput.events_per_s', op: '>=', value: 5000 });
    expect(parseAssertion('loss<0.1%')).toMatchObject({ path: 'loss', op: '<', value: 0.001 });
    expect(parseAssertion('handlers.payment-service.p99_ms!=0')).toMatchObject({ path: 'handlers.payment-service.p99_ms', op: '!=' });
    expect(parseAssertion('latency.hops.sink.p99_ms<=10')).toMatchObject({ op: '<=' });
  });

  it('rejects bad syntax and unknown or non-numeric keys as usage errors', () => {
    for (const bad of ['p99_ms', 'p99_ms<', 'p99_ms=<3', 'p99_ms < abc', 'p99ms<250', 'latency.end_to_end<3', 'settings.broker==1']) {
      expect(() => parseAssertion(bad), bad).toThrow(UsageError);
    }
    expect(schemaKind('latency.publish.p99_ms')).toBe('number');
    expect(schemaKind('latency.publish_delay.p99_ms')).toBe('number');
    expect(schemaKind('latency.nope')).toBeUndefined();
  });

  it('evaluates against the report, and a key the report lacks fails', () => {
    const p99 = report.latency.end_to_end.p99_ms;
    const out = evaluateAssertions(report, [
      parseAssertion(`p99_ms<=${p99}`),
      parseAssertion(`p99_ms<${p99}`),
      parseAssertion('loss==0'),
      parseAssertion('availability>=1'),
      parseAssertion('handlers.refund-service.t_ms<10'),
    ]);
    expect(out.map((o) => o.passed)).toEqual([true, false, true, true, false]);
    expect(out[4]!.actual).toBeUndefined();
  });
});

describe('report --compare', () => {
  it('flags figures that got worse by more than the threshold, in the right direction', () => {
    const base = buildReport(runData(drawn(5, 1000), { total: 10, available: 10 }, 0), { run_id: 'b', role: 'all', settings });
    const slower = drawn(5, 1000);
    slower.e2e = slower.e2e.map((v) => v * 2);
    const cur = buildReport(runData(slower, { total: 10, available: 8 }, 0), { run_id: 'c', role: 'all', settings });
    const rows = compareReports(cur, base, 10);
    const row = (key: string) => rows.find((r) => r.key === key)!;
    expect(row('latency.end_to_end.p99_ms').regression).toBe(true);
    expect(row('latency.end_to_end.p99_ms').delta_pct).toBeGreaterThan(90);
    expect(row('availability').regression).toBe(true);
    expect(row('apt_ms').regression).toBe(false);
    expect(row('throughput.events_per_s').delta_pct).toBe(0);
    expect(compareReports(base, base, 0).some((r) => r.regression)).toBe(false);
  });
});

describe('availability windows', () => {
  const s = 1_000_000;
  it('a window is available when sends were acknowledged in it, or nothing waited on the broker', () => {
    const t = new AvailabilityTracker();
    t.start(0);
    t.settled(0.1 * s, 0.2 * s, true); // window 0: acked
    // window 1: idle
    t.settled(2.1 * s, 4.5 * s, true); // a send hangs through window 3, acked in 4
    t.settled(5.2 * s, 5.3 * s, false); // window 5: refused
    t.settled(5.4 * s, 5.5 * s, true);
    expect(t.finish(7.5 * s, [7.2 * s])).toEqual({ total: 8, available: 4 });
    // windows: 0 ok, 1 idle ok, 2 busy no ack ✗, 3 busy no ack ✗, 4 ack ok, 5 refused ✗, 6 idle ok, 7 pending ✗
  });

  it('ignores what settled before the measured window started', () => {
    const t = new AvailabilityTracker();
    t.start(10 * s);
    t.settled(1 * s, 2 * s, false);
    t.settled(9.5 * s, 10.2 * s, true);
    expect(t.finish(11 * s)).toEqual({ total: 1, available: 1 });
  });
});
