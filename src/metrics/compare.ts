/**
 * `payq report --compare BASELINE`: the headline figures of a report next to a baseline's, with
 * the change in percent and which changes are regressions (latency, APT, loss up; throughput,
 * availability down).
 */
import type { Report } from './report.js';

export type Better = 'lower' | 'higher';

export interface ComparisonRow {
  /** Dotted report path. */
  key: string;
  label: string;
  baseline: number;
  current: number;
  /** (current − baseline) / baseline × 100; null when the baseline is 0 (then: current > 0 is ±∞). */
  delta_pct: number | null;
  better: Better;
  /**
   * Which way the figure moved: `same` when the change rounds to 0% (the precision `delta_pct`
   * is reported in, 0.1%) or, against a baseline of 0, when it is still 0.
   */
  change: Change;
  /** Worse than the baseline by more than the threshold. */
  regression: boolean;
}

export type Change = 'better' | 'worse' | 'same';

interface Metric {
  key: string;
  label: string;
  better: Better;
}

const HEADLINE: Metric[] = [
  { key: 'apt_ms', label: 'APT (ms)', better: 'lower' },
  { key: 'throughput.events_per_s', label: 'throughput (events/s)', better: 'higher' },
  { key: 'throughput.payments_per_s', label: 'payments/s', better: 'higher' },
  { key: 'throughput.consumed.mb_per_s', label: 'consumed (MB/s)', better: 'higher' },
  { key: 'latency.end_to_end.p50_ms', label: 'end-to-end p50 (ms)', better: 'lower' },
  { key: 'latency.end_to_end.p99_ms', label: 'end-to-end p99 (ms)', better: 'lower' },
  { key: 'latency.end_to_end.p999_ms', label: 'end-to-end p99.9 (ms)', better: 'lower' },
  { key: 'latency.publish.p99_ms', label: 'publish p99 (ms)', better: 'lower' },
  { key: 'latency.publish_delay.p99_ms', label: 'publish delay p99 (ms)', better: 'lower' },
  { key: 'loss', label: 'loss', better: 'lower' },
  { key: 'availability', label: 'availability', better: 'higher' },
  { key: 'events.duplicates', label: 'duplicates', better: 'lower' },
  { key: 'dlq.total', label: 'dead-lettered', better: 'lower' },
];

function lookup(report: Report, path: string): number | undefined {
  let cur: unknown = report;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return typeof cur === 'number' ? cur : undefined;
}

/**
 * The comparison; `thresholdPct` is how much worse than the baseline a figure may get before it
 * is flagged as a regression (default 5%).
 */
export function compareReports(current: Report, baseline: Report, thresholdPct = 5): ComparisonRow[] {
  const metrics = [...HEADLINE];
  for (const stage of Object.keys(current.handlers)) {
    if (baseline.handlers[stage]) metrics.push({ key: `handlers.${stage}.t_ms`, label: `tᵢ ${stage} (ms)`, better: 'lower' });
  }
  for (const hop of Object.keys(current.latency.hops)) {
    if (baseline.latency.hops[hop]) metrics.push({ key: `latency.hops.${hop}.p99_ms`, label: `hop ${hop} p99 (ms)`, better: 'lower' });
  }
  const rows: ComparisonRow[] = [];
  for (const m of metrics) {
    const b = lookup(baseline, m.key);
    const c = lookup(current, m.key);
    if (b === undefined || c === undefined) continue;
    const delta = b === 0 ? null : Math.round(((c - b) / Math.abs(b)) * 100 * 10) / 10;
    const moved = delta === null ? c !== b : delta !== 0;
    const change: Change = !moved ? 'same' : (m.better === 'lower' ? c < b : c > b) ? 'better' : 'worse';
    const regression = change === 'worse' && (delta === null || Math.abs(delta) > thresholdPct);
    rows.push({ key: m.key, label: m.label, baseline: b, current: c, delta_pct: delta === 0 ? 0 : delta, better: m.better, change, regression });
  }
  return rows;
}
