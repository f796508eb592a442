/**
 * Live metrics in the OpenMetrics 1.0 text format (README "Live metrics"): counters, gauges and
 * latency histograms named `payq_…`, with units in their names. Pure: a snapshot in, text out.
 */
import { cumulativeCounts, type LatencyHistogram } from './histogram.js';

export interface CounterMetric {
  kind: 'counter';
  /** The family name, without `_total`. */
  name: string;
  help: string;
  value: number;
  unit?: string;
}

export interface GaugeMetric {
  kind: 'gauge';
  name: string;
  help: string;
  value: number;
  unit?: string;
}

export interface HistogramMetric {
  kind: 'histogram';
  /** Ends with `_seconds`. */
  name: string;
  help: string;
  histogram: LatencyHistogram;
  /** One family may hold several histograms told apart by a label (a hop's stage, say). */
  labels?: Record<string, string>;
}

export type Metric = CounterMetric | GaugeMetric | HistogramMetric;

export const OPENMETRICS_CONTENT_TYPE = 'application/openmetrics-text; version=1.0.0; charset=utf-8';

/** Bucket bounds in seconds: 0.5 ms to 1 min, roughly ×2–2.5 apart. */
export const LATENCY_BUCKETS_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60];

const NAME = /^[a-zA-Z_:][a-zA-Z0-9_:]*$/;

function escapeLabel(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n').replace(/"/g, '\\"');
}

function escapeHelp(v: string): string {
  return v.replace(/\\/g, '\\\\').replace(/\n/g, '\\n');
}

function labelText(labels: Record<string, string> | undefined, extra?: [string, string]): string {
  const pairs = Object.entries(labels ?? {});
  if (extra) pairs.push(extra);
  return pairs.length === 0 ? '' : `{${pairs.map(([k, v]) => `${k}="${escapeLabel(v)}"`).join(',')}}`;
}

const number = (n: number) => (Number.isFinite(n) ? String(n) : n > 0 ? '+Inf' : n < 0 ? '-Inf' : 'NaN');

export function renderOpenMetrics(metrics: Metric[]): string {
  const lines: string[] = [];
  const families = new Map<string, Metric[]>();
  for (const m of metrics) {
    if (!NAME.test(m.name)) throw new Error(`not a metric name: ${m.name}`);
    families.set(m.name, [...(families.get(m.name) ?? []), m]);
  }
  for (const [name, members] of families) {
    const first = members[0]!;
    lines.push(`# TYPE ${name} ${first.kind}`);
    const unit = first.kind === 'histogram' ? 'seconds' : first.unit;
    if (unit) lines.push(`# UNIT ${name} ${unit}`);
    lines.push(`# HELP ${name} ${escapeHelp(first.help)}`);
    for (const m of members) {
      if (m.kind === 'counter') lines.push(`${name}_total ${number(m.value)}`);
      else if (m.kind === 'gauge') lines.push(`${name} ${number(m.value)}`);
      else {
        const h = m.histogram;
        const counts = cumulativeCounts(h, LATENCY_BUCKETS_S.map((s) => s * 1e6));
        LATENCY_BUCKETS_S.forEach((le, i) => lines.push(`${name}_bucket${labelText(m.labels, ['le', String(le)])} ${counts[i]}`));
        lines.push(`${name}_bucket${labelText(m.labels, ['le', '+Inf'])} ${h.totalCount}`);
        lines.push(`${name}_count${labelText(m.labels)} ${h.totalCount}`);
        lines.push(`${name}_sum${labelText(m.labels)} ${h.totalCount === 0 ? 0 : (h.mean * h.totalCount) / 1e6}`);
      }
    }
  }
  lines.push('# EOF');
  return `${lines.join('\n')}\n`;
}
