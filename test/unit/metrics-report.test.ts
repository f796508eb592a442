/**
 * The report model without a broker: merging is exact (two reports merged equal one report over
 * the combined samples) and never counts a part twice, reports survive JSON and validate against
 * the schema, assertions parse, are checked against the keys a report has and evaluate as
 * documented (at their boundaries too), comparisons flag regressions, and availability windows
 * count right.
 */
import { describe, expect, it } from 'vitest';
import { UsageError } from '../../src/errors.js';
import { Prng } from '../../src/events/prng.js';
import { AvailabilityTracker } from '../../src/metrics/availability.js';
import { benchReportKeys, checkAssertionKeys, evaluateAssertions, parseAssertion, reportKeys, schemaKind } from '../../src/metrics/assert.js';
import { compareReports } from '../../src/metrics/compare.js';
import { createLatencyHistogram, recordUs, type LatencyHistogram } from '../../src/metrics/histogram.js';
import { mergeData, mergeNamedReports, mergeReports, reportParts } from '../../src/metrics/merge.js';
import { buildReport, parseReport, reportSchema, type Report, type RunData } from '../../src/metrics/report.js';

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
function figures(r: Report): Omit<Report, 'histograms' | 'run_id' | 'role' | 'merged_from' | 'settings' | 'part_id' | 'parts'> {
  const { histograms: _h, run_id: _r, role: _o, merged_from: _m, settings: _s, part_id: _p, parts: _ps, ...rest } = r;
  return rest;
}

/** A report as a file written before part ids existed has it. */
function legacy(r: Report): Report {
  const { part_id: _p, parts: _ps, ...rest } = structuredClone(r);
  return parseReport(JSON.stringify(rest), 'legacy.json');
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

describe('report merge never counts a part twice', () => {
  const a = drawn(21, 600);
  const b = drawn(22, 500);
  const c = drawn(23, 400);
  const part = (x: Samples, run = 'run-1', over: Partial<Report['settings']> = {}) =>
    parseReport(JSON.stringify(buildReport(runData(x, { total: 30, available: 30 }, 1), { run_id: run, role: 'all', settings: { ...settings, ...over } })), 'x.json');
  const A = part(a);
  const B = part(b);
  const C = part(c);
  const refused = (inputs: Report[], pattern: RegExp, allowMixed = false) => {
    expect(() => mergeReports(inputs, { allowMixed })).toThrow(UsageError);
    expect(() => mergeReports(inputs, { allowMixed })).toThrow(pattern);
  };

  it('every report gets its own random part id; a merged report lists its parts instead', () => {
    expect(A.part_id).toMatch(/^[0-9a-f]{12}$/);
    expect(new Set([A.part_id, B.part_id, C.part_id]).size).toBe(3);
    const m = mergeReports([A, B]);
    expect(m.part_id).toBeUndefined();
    expect(m.parts).toEqual([A.part_id, B.part_id]);
    expect(reportParts(mergeReports([m, C]))).toEqual([A.part_id, B.part_id, C.part_id]);
  });

  it('refuses the same report twice, a report and its copy, a merged report and one of its parts', () => {
    refused([A, A], /count it twice/);
    refused([A, structuredClone(A)], /count it twice/);
    refused([A, B, parseReport(JSON.stringify(A, null, 1), 'copy.json')], /count it twice/);
    const m = mergeReports([A, B]);
    refused([m, B], /merged from 2 parts.*part .* of run run-1.*count it twice|count it twice/);
    refused([C, m, A], /count it twice/);
    refused([m, parseReport(JSON.stringify(m), 'copy.json')], /count it twice/);
    // --allow-mixed does not let a part in twice.
    refused([A, A], /count it twice/, true);
    expect(() => mergeNamedReports([{ report: A, origin: 'a.json' }, { report: A, origin: 'a.json' }])).toThrow(/a\.json is given twice/);
  });

  it('identifies a report written before part ids by its measurements, however it is formatted', () => {
    const oldA = legacy(A);
    const oldB = legacy(B);
    expect(oldA.part_id).toBeUndefined();
    expect(reportParts(oldA)[0]).toMatch(/^sha256:/);
    // A copy with keys in another order and other settings: the same measurements.
    const reverse = (v: unknown): unknown =>
      v !== null && typeof v === 'object' && !Array.isArray(v) ? Object.fromEntries(Object.entries(v).reverse().map(([k, x]) => [k, reverse(x)])) : v;
    const reordered = reverse(oldA) as Report;
    expect(JSON.stringify(reordered)).not.toBe(JSON.stringify(oldA));
    expect(reportParts(parseReport(JSON.stringify({ ...reordered, settings: { ...oldA.settings, started_at: 'x' } }), 'r.json'))).toEqual(reportParts(oldA));
    refused([oldA, parseReport(JSON.stringify(reordered), 'r.json')], /same measurements.*count it twice/);
    const m = mergeReports([oldA, oldB]);
    expect(m.parts).toEqual([...reportParts(oldA), ...reportParts(oldB)]);
    refused([m, oldB], /count it twice/);
    expect(mergeReports([oldA, oldB]).events.acknowledged).toBe(A.events.acknowledged + B.events.acknowledged);
  });

  it('refuses reports of different runs, brokers or scenarios unless allowed, and then warns', () => {
    const otherRun = part(c, 'run-2');
    const kafka = part(c, 'run-1', { broker: 'memory://' });
    const otherScenario = part(c, 'run-1', { scenario: 'bench-apt-equal' });
    refused([A, otherRun], /different runs \(report 1: run run-1 · report 2: run run-2\)/);
    refused([A, kafka], /different brokers.*kafka:\/\/127\.0\.0\.1:9092.*memory:\/\//);
    refused([A, otherScenario], /different scenarios.*checkout.*bench-apt-equal/);
    for (const [other, what] of [[otherRun, 'runs'], [kafka, 'brokers'], [otherScenario, 'scenarios']] as const) {
      const r = mergeNamedReports([{ report: A, origin: 'a.json' }, { report: other, origin: 'b.json' }], { allowMixed: true });
      expect(r.warnings).toHaveLength(1);
      expect(r.warnings[0]).toContain(`different ${what}`);
      expect(r.report.events.acknowledged).toBe(A.events.acknowledged + other.events.acknowledged);
    }
    const mixed = mergeReports([A, kafka, otherScenario], { allowMixed: true });
    expect(mixed.settings.broker).toBe('kafka://127.0.0.1:9092, memory://');
    expect(mixed.settings.scenario).toBe('checkout, bench-apt-equal');
  });

  it('merges parts of one run without a warning, counts exact, and says what it merged', () => {
    const r = mergeNamedReports([{ report: A, origin: 'a.json' }, { report: B, origin: 'b.json' }, { report: C, origin: 'c.json' }]);
    expect(r.warnings).toEqual([]);
    expect(r.summary).toBe('merged 3 parts from 3 reports: run run-1 · kafka://127.0.0.1:9092 · scenario checkout');
    const m = r.report;
    const total = (pick: (x: Report) => number) => pick(A) + pick(B) + pick(C);
    expect(m.events.acknowledged).toBe(total((x) => x.events.acknowledged));
    expect(m.producers.sent).toBe(total((x) => x.producers.sent));
    expect(m.handlers['payment-service']!.count).toBe(total((x) => x.handlers['payment-service']!.count));
    expect(m.latency.end_to_end.count).toBe(total((x) => x.latency.end_to_end.count));
    expect(m.payments.by_class).toEqual({ completed: total((x) => x.payments.by_class['completed']!), declined: 18 });
    expect(m.run_id).toBe('run-1');
    expect(m.merged_from).toBe(3);
  });

  it('copies the data it merges: no input changes', () => {
    const d1 = runData(a, { total: 3, available: 3 }, 0);
    const d2 = runData(b, { total: 3, available: 2 }, 0);
    const before = [d1.latency.end_to_end.totalCount, d1.stages['payment-service']!.processing.totalCount, d1.sink.delivery.totalCount, d1.events.acknowledged];
    const m = mergeData([d1, d2]);
    expect(m.latency.end_to_end.totalCount).toBe(a.e2e.length + b.e2e.length);
    expect([d1.latency.end_to_end.totalCount, d1.stages['payment-service']!.processing.totalCount, d1.sink.delivery.totalCount, d1.events.acknowledged]).toEqual(before);
    expect(d2.latency.end_to_end.totalCount).toBe(b.e2e.length);
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

describe('--assert keys are checked before anything runs', () => {
  const checkout = { stages: ['payment-service', 'capture-service'], deadLetterReasons: ['permanent-failure', 'retries-exhausted'], withRate: false, partial: false, what: 'the report of scenario checkout' };
  const check = (texts: string[], keys: Parameters<typeof checkAssertionKeys>[1]) => checkAssertionKeys(texts.map(parseAssertion), keys);

  it('refuses handlers, hops and reasons the scenario does not have, naming the known ones', () => {
    const keys = benchReportKeys(checkout);
    for (const bad of ['handlers.nosuch.t_ms<5', 'latency.hops.nosuch.p99_ms<5', 'dlq.by_reason.nosuch==0', 'handlers.refund-service.count>0']) {
      expect(() => check([bad], keys), bad).toThrow(UsageError);
      expect(() => check([bad], keys), bad).toThrow(/the report of scenario checkout has no key/);
    }
    expect(() => check(['handlers.nosuch.t_ms<5'], keys)).toThrow(expect.objectContaining({ hint: 'known: handlers.payment-service.t_ms, handlers.capture-service.t_ms' }));
    // The one bad assertion among good ones is found.
    expect(() => check(['p99_ms<250', 'loss==0', 'handlers.nosuch.t_ms<5'], keys)).toThrow(/nosuch/);
    check(['p99_ms<250', 'loss==0', 'apt_ms<=20', 'throughput>=1', 'handlers.payment-service.t_ms<9', 'latency.hops.sink.p99_ms<9', 'latency.hops.capture-service.p50_ms<9', 'dlq.by_reason.permanent-failure<=3', 'payments.by_class.completed>0', 'settings.seed>=0'], keys);
  });

  it('refuses figures that will be null: loss in a part, publish delays without a rate', () => {
    expect(() => check(['loss==0'], benchReportKeys({ ...checkout, partial: true }))).toThrow(/loss is null in the report of scenario checkout/);
    expect(() => check(['lost==0'], benchReportKeys({ ...checkout, partial: true }))).toThrow(/events.lost is null/);
    expect(() => check(['latency.publish_delay.p99_ms<5'], benchReportKeys(checkout))).toThrow(expect.objectContaining({ hint: expect.stringMatching(/--rate/) }));
    check(['latency.publish_delay.p99_ms<5', 'latency.publish_from_intended.max_ms<5'], benchReportKeys({ ...checkout, withRate: true }));
    // An optional section only when the run writes it (capacity: bench --find-max).
    expect(() => check(['capacity.min_rate_per_s>=1'], benchReportKeys(checkout))).toThrow(/has no key capacity\.min_rate_per_s/);
    check(['capacity.min_rate_per_s>=1'], benchReportKeys({ ...checkout, sections: ['capacity'] }));
  });

  it('checks a saved report against its own keys', () => {
    const r = buildReport(runData(drawn(5, 300), { total: 10, available: 10 }, 0), { run_id: 'r', role: 'all', settings });
    const keys = reportKeys(r, 'a.json');
    check(['p99_ms<250', 'handlers.capture-service.t_ms<9', 'latency.publish_delay.p99_ms<9'], keys);
    expect(() => check(['handlers.refund-service.t_ms<9'], keys)).toThrow(/a\.json has no key handlers\.refund-service\.t_ms/);
    expect(() => check(['histograms.publish<1'], keys)).toThrow(UsageError);
    const producer = buildReport(runData(drawn(5, 300), { total: 10, available: 10 }, 0), { run_id: 'r', role: 'producer', settings });
    expect(() => check(['loss==0'], reportKeys(producer, 'p.json'))).toThrow(/loss is null in p\.json/);
    // The keys of a real report are the keys bench expects of its scenario (no more, no fewer).
    const expected = benchReportKeys({ ...checkout, deadLetterReasons: ['permanent-failure', 'retries-exhausted'], withRate: true });
    const comparable = (k: string) => !k.startsWith('payments.by_class.') && !k.startsWith('settings.');
    expect(new Set(keys.numbers.filter(comparable))).toEqual(new Set(expected.numbers.filter(comparable)));
  });
});

describe('--assert never passes a breach (values exactly at the threshold)', () => {
  const r = buildReport(runData(drawn(9, 800), { total: 10, available: 10 }, 2), { run_id: 'r', role: 'all', settings });
  const passed = (text: string) => evaluateAssertions(r, [parseAssertion(text)])[0]!.passed;
  const metrics: Array<[string, number]> = [
    ['p99_ms', r.latency.end_to_end.p99_ms],
    ['loss', r.loss!],
    ['throughput', r.throughput.events_per_s],
    ['handlers.payment-service.t_ms', r.handlers['payment-service']!.t_ms],
    ['apt_ms', r.apt_ms],
    ['dlq', r.dlq.total],
  ];

  it.each(metrics)('%s at its value %d', (key, v) => {
    expect(v).toBeGreaterThan(0); // a boundary at 0 would not tell < from <=
    expect(passed(`${key}<${v}`)).toBe(false);
    expect(passed(`${key}>${v}`)).toBe(false);
    expect(passed(`${key}!=${v}`)).toBe(false);
    expect(passed(`${key}<=${v}`)).toBe(true);
    expect(passed(`${key}>=${v}`)).toBe(true);
    expect(passed(`${key}==${v}`)).toBe(true);
    // Just across the boundary.
    const below = v * (1 - 1e-9);
    const above = v * (1 + 1e-9);
    expect(passed(`${key}<=${below}`)).toBe(false);
    expect(passed(`${key}>=${above}`)).toBe(false);
    expect(passed(`${key}==${above}`)).toBe(false);
    expect(passed(`${key}<${above}`)).toBe(true);
  });

  it('a merge of passing parts can breach', () => {
    const a = buildReport(runData(drawn(31, 500), { total: 10, available: 10 }, 1), { run_id: 'r', role: 'all', settings });
    const b = buildReport(runData(drawn(32, 500), { total: 10, available: 10 }, 1), { run_id: 'r', role: 'all', settings });
    const m = mergeReports([a, b]);
    const asserts = [`dlq<=${Math.max(a.dlq.total, b.dlq.total)}`, `lost<=1`, `throughput<=${Math.max(a.throughput.events_per_s, b.throughput.events_per_s)}`].map(parseAssertion);
    expect(evaluateAssertions(a, asserts).every((o) => o.passed)).toBe(true);
    expect(evaluateAssertions(b, asserts).every((o) => o.passed)).toBe(true);
    expect(evaluateAssertions(m, asserts).map((o) => o.passed)).toEqual([false, false, false]);
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
