/**
 * Percentiles never leave the recorded range (issue 11, defect 4): HdrHistogram answers with a
 * bucket's highest equivalent value, which can lie above the exact maximum a live histogram keeps.
 * Values sit at bucket edges on purpose; each summary is checked live, after an encode/decode
 * round trip (what a report holds) and after merging encoded histograms (report --merge).
 */
import { describe, expect, it } from 'vitest';
import { createLatencyHistogram, decodeHistogram, encodeHistogram, recordUs, summarize, type LatencyHistogram } from '../../src/metrics/histogram.js';
import { buildReport, type RunData } from '../../src/metrics/report.js';
import { benchReportMarkdown } from '../../src/cli/render.js';
import { testReportSettings } from '../helpers/report.js';

function hist(values: number[]): LatencyHistogram {
  const h = createLatencyHistogram();
  for (const v of values) recordUs(h, v);
  return h;
}

/** Values just above a power of two or in the middle of a wide bucket: far from its top. */
const EDGE_CASES: number[][] = [
  [207_921],
  [477_977, 1_000, 2_000],
  [4_097, 4_097],
  [8_193],
  [1_048_577, 1_048_577, 1_048_577],
  [16_385, 32_769, 65_537, 131_073],
  [3_599_000_001],
  Array.from({ length: 1000 }, (_, i) => 262_145 + i),
];

function expectWithinRange(h: LatencyHistogram, label: string): void {
  const s = summarize(h);
  const minMs = Math.round(h.minNonZeroValue) / 1000;
  const maxMs = Math.round(h.maxValue) / 1000;
  expect(s.max_ms, label).toBe(maxMs);
  const ordered = [minMs, s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms];
  for (let i = 1; i < ordered.length; i++) expect(ordered[i]!, `${label}: ${JSON.stringify(s)}`).toBeGreaterThanOrEqual(ordered[i - 1]!);
  expect(s.mean_ms, label).toBeGreaterThanOrEqual(minMs);
  expect(s.mean_ms, label).toBeLessThanOrEqual(maxMs);
}

describe('percentiles stay within min and max', () => {
  it.each(EDGE_CASES.map((v) => [v.slice(0, 4).join(','), v] as const))('live histogram of %s', (_label, values) => {
    const h = hist(values);
    expectWithinRange(h, 'live');
    // The exact maximum of a live histogram is the recorded one.
    expect(summarize(h).max_ms).toBe(Math.max(...values) / 1000);
  });

  it.each(EDGE_CASES.map((v) => [v.slice(0, 4).join(','), v] as const))('decoded histogram of %s', (_label, values) => {
    expectWithinRange(decodeHistogram(encodeHistogram(hist(values))), 'decoded');
  });

  it('after merging encoded histograms', () => {
    for (let i = 0; i + 1 < EDGE_CASES.length; i++) {
      const merged = createLatencyHistogram();
      merged.add(decodeHistogram(encodeHistogram(hist(EDGE_CASES[i]!))));
      merged.add(decodeHistogram(encodeHistogram(hist(EDGE_CASES[i + 1]!))));
      expectWithinRange(merged, `merge ${i}+${i + 1}`);
    }
  });

  it("in a report's JSON and markdown: no percentile or mean above its row's max", () => {
    const h = () => hist([207_921]);
    const stage = {
      handled: 1, received: 1, redelivered: 0, attempts: 1, retries: 0, transient_failures: 0, emitted: 0, dead_lettered: 0,
      bytes_received: 1, bytes_handled: 1, bytes_emitted: 0, processing: h(), wall: h(), delivery: hist([477_977, 1_000]),
    };
    const data: RunData = {
      elapsed_s: 1,
      producers: { sent: 1, acked: 1, failed: 0, bytes: 1 },
      stages: { s: stage },
      sink: { destination: 'x', consumed: 0, bytes: 0, delivery: hist([4_097]) },
      events: { acknowledged: 1, consumed: 1, unacknowledged: 0, redelivered: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 },
      payments: { finished: 1, in_flight: 0, stuck: 0, by_class: {} },
      dlq_by_reason: {},
      windows: { total: 1, available: 1 },
      latency: { publish: h(), publish_delay: h(), publish_from_intended: hist([1_048_577]), end_to_end: hist([477_977, 1_000, 2_000]) },
      errors: [],
    } as RunData;
    const report = buildReport(data, { run_id: 'r', role: 'all', settings: testReportSettings('memory://') });
    const summaries = [report.latency.publish, report.latency.publish_delay!, report.latency.publish_from_intended!, report.latency.end_to_end, ...Object.values(report.latency.hops)];
    for (const s of summaries) for (const p of [s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.mean_ms]) expect(p).toBeLessThanOrEqual(s.max_ms);
    for (const x of Object.values(report.handlers)) expect(Math.max(x.p50_ms, x.p99_ms, x.t_ms)).toBeLessThanOrEqual(x.max_ms);
    // The rendered rows show the same figures: in every latency row, no p-column above the max column.
    const md = benchReportMarkdown(report);
    for (const line of md.split('\n').filter((l) => /^\| (publish|hop|end to end)/.test(l))) {
      const nums = line.split('|').slice(3, 8).map((c) => Number(c.trim()));
      for (const n of nums.slice(0, 4)) expect(n, line).toBeLessThanOrEqual(nums[4]!);
    }
  });
});
