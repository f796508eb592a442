/** Rendering for humans: tables and figures. Commands hand it results; it returns text. */
import Table from 'cli-table3';
import type { ChalkInstance } from 'chalk';
import type { LatencySummary } from '../metrics/histogram.js';

export function keyValueTable(rows: [string, string][], color: ChalkInstance): string {
  const table = new Table({ style: { head: [], border: color.level > 0 ? ['grey'] : [] } });
  for (const [k, v] of rows) table.push({ [color.bold(k)]: v });
  return table.toString();
}

export function formatCount(n: number): string {
  return n.toLocaleString('en-US');
}

export function formatRate(n: number): string {
  return n >= 1e6 ? `${(n / 1e6).toFixed(2)}M` : n >= 1e4 ? `${(n / 1e3).toFixed(1)}k` : n.toFixed(0);
}

export function formatLatency(s: LatencySummary | undefined): string {
  if (!s || s.count === 0) return '-';
  return `p50 ${s.p50_ms} ms · p99 ${s.p99_ms} ms · max ${s.max_ms} ms`;
}

export function issuesTable(title: string, issues: { payment_id: string; reason: string; last_type: string | undefined; types: string[]; age_s: number }[], color: ChalkInstance): string {
  const table = new Table({ head: ['payment', 'reason', 'last event', 'events seen', 'age'], style: { head: [], border: color.level > 0 ? ['grey'] : [] } });
  for (const i of issues) table.push([i.payment_id, i.reason, i.last_type ?? '-', i.types.join(' → '), `${i.age_s}s`]);
  return `${color.bold(title)}\n${table.toString()}`;
}
