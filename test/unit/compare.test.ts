/**
 * report --compare says which way each figure moved (issue 11, defect 11): a change that rounds to
 * 0% is "same", never "better" or a regression, whatever the threshold; a real move is better or
 * worse in the figure's own direction.
 */
import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import { comparisonMarkdown, comparisonTable } from '../../src/cli/render.js';
import { compareReports } from '../../src/metrics/compare.js';
import { createLatencyHistogram, recordUs } from '../../src/metrics/histogram.js';
import { buildReport, type Report, type RunData } from '../../src/metrics/report.js';
import { testReportSettings } from '../helpers/report.js';

function baseReport(): Report {
  const h = (us: number) => {
    const x = createLatencyHistogram();
    for (let i = 0; i < 100; i++) recordUs(x, us + i * 10);
    return x;
  };
  const stage = {
    handled: 100, received: 100, redelivered: 0, attempts: 100, retries: 0, transient_failures: 0, emitted: 100, dead_lettered: 0,
    bytes_received: 10_000, bytes_handled: 10_000, bytes_emitted: 10_000, processing: h(2000), wall: h(2100), delivery: h(900),
  };
  const data = {
    elapsed_s: 10,
    producers: { sent: 100, acked: 100, failed: 0, bytes: 10_000 },
    stages: { pay: stage },
    sink: { destination: 'sink', consumed: 100, bytes: 10_000, delivery: h(800) },
    events: { acknowledged: 200, consumed: 200, unacknowledged: 0, redelivered: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 },
    payments: { finished: 100, in_flight: 0, stuck: 0, by_class: { completed: 100 } },
    dlq_by_reason: {},
    windows: { total: 10, available: 10 },
    latency: { publish: h(500), publish_delay: undefined, publish_from_intended: undefined, end_to_end: h(5000) },
    errors: [],
  } as RunData;
  return buildReport(data, { run_id: 'b', role: 'all', settings: testReportSettings('memory://') });
}

const plain = new Chalk({ level: 0 });
const row = (rows: ReturnType<typeof compareReports>, key: string) => rows.find((r) => r.key === key)!;

describe('report --compare: direction of each change', () => {
  it('a report against itself: every figure is the same, none better, none a regression (any threshold)', () => {
    const base = baseReport();
    for (const threshold of [0, 5]) {
      const rows = compareReports(base, base, threshold);
      expect(rows.length).toBeGreaterThan(5);
      expect(rows.map((r) => r.change)).toEqual(rows.map(() => 'same'));
      expect(rows.some((r) => r.regression)).toBe(false);
      const table = comparisonTable(rows, plain);
      expect(table).not.toContain('better');
      expect(table.match(/same/g)?.length).toBe(rows.length);
      expect(comparisonMarkdown(rows)).not.toContain('better');
    }
  });

  it('changes that round to 0.0% are the same, in either direction and with threshold 0', () => {
    const base = baseReport();
    const cur = structuredClone(base);
    cur.throughput.events_per_s = base.throughput.events_per_s * 1.0004; // higher is better, +0.04%
    cur.apt_ms = base.apt_ms * 1.0004; // lower is better, +0.04%
    cur.latency.end_to_end.p99_ms = base.latency.end_to_end.p99_ms * 0.9996;
    const rows = compareReports(cur, base, 0);
    for (const key of ['throughput.events_per_s', 'apt_ms', 'latency.end_to_end.p99_ms']) {
      expect(row(rows, key), key).toMatchObject({ change: 'same', regression: false, delta_pct: 0 });
    }
    const lines = comparisonTable(rows, plain).split('\n').filter((l) => /throughput \(events|APT|end-to-end p99 /.test(l));
    expect(lines).toHaveLength(3);
    for (const l of lines) expect(l).toMatch(/0%\s*│\s*same/);
  });

  it('a real move is better or worse in the figure\'s own direction; worse beyond the threshold is a regression', () => {
    const base = baseReport();
    const cur = structuredClone(base);
    cur.throughput.events_per_s = base.throughput.events_per_s * 1.2; // better
    cur.apt_ms = base.apt_ms * 0.9; // better (lower)
    cur.latency.end_to_end.p99_ms = base.latency.end_to_end.p99_ms * 1.03; // worse, within 5%
    cur.latency.publish.p99_ms = base.latency.publish.p99_ms * 1.5; // regression
    cur.events.duplicates = 3; // baseline 0: worse, a regression
    const rows = compareReports(cur, base, 5);
    expect(row(rows, 'throughput.events_per_s')).toMatchObject({ change: 'better', regression: false });
    expect(row(rows, 'apt_ms')).toMatchObject({ change: 'better', regression: false });
    expect(row(rows, 'latency.end_to_end.p99_ms')).toMatchObject({ change: 'worse', regression: false, delta_pct: 3 });
    expect(row(rows, 'latency.publish.p99_ms')).toMatchObject({ change: 'worse', regression: true });
    expect(row(rows, 'events.duplicates')).toMatchObject({ change: 'worse', regression: true, delta_pct: null });
    expect(row(rows, 'loss')).toMatchObject({ change: 'same', regression: false, delta_pct: null });
  });
});
