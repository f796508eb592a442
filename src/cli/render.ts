/** Rendering for humans: tables and figures. Commands hand it results; it returns text. */
import { stripVTControlCharacters } from 'node:util';
import Table from 'cli-table3';
import { Chalk, type ChalkInstance } from 'chalk';
import type { LatencySummary } from '../metrics/histogram.js';
import type { AssertionOutcome } from '../metrics/assert.js';
import type { ComparisonRow } from '../metrics/compare.js';
import type { Report as BenchReport } from '../metrics/report.js';
import { countOf } from '../text.js';

/** Every table payq prints fits in this many columns: long values wrap inside their cell. */
export const TABLE_WIDTH = 100;

/** Columns a text takes on a terminal (ANSI codes take none). */
export function visibleWidth(text: string): number {
  return [...stripVTControlCharacters(text)].length;
}

/**
 * Word-wraps one line to `width` columns; a word longer than that breaks after a - / . , : or _
 * where it can, else at the width (losing its colour).
 */
function wrapLine(line: string, width: number): string[] {
  const out: string[] = [];
  let cur = '';
  let curWidth = 0;
  for (const word of line.split(' ')) {
    let w = word;
    let ww = visibleWidth(w);
    if (curWidth > 0 && curWidth + 1 + ww <= width) {
      cur += ` ${w}`;
      curWidth += 1 + ww;
      continue;
    }
    if (curWidth > 0) out.push(cur);
    while (ww > width) {
      const chars = [...stripVTControlCharacters(w)];
      let cut = width;
      for (let i = width - 1; i >= Math.floor(width / 3); i--) {
        if ('-/.,:_'.includes(chars[i]!)) {
          cut = i + 1;
          break;
        }
      }
      out.push(chars.slice(0, cut).join(''));
      w = chars.slice(cut).join('');
      ww = chars.length - cut;
    }
    cur = w;
    curWidth = ww;
  }
  out.push(cur);
  return out;
}

function wrapCell(text: string, width: number): string {
  return text
    .split('\n')
    .flatMap((line) => (visibleWidth(line) <= width ? [line] : wrapLine(line, width)))
    .join('\n');
}

/**
 * A table within TABLE_WIDTH columns: when the cells' natural widths do not fit, the widest
 * columns give way first (down to a common cap) and their cells wrap.
 */
export function fitTable(head: string[] | undefined, rows: string[][], color: ChalkInstance, maxWidth = TABLE_WIDTH): string {
  const cols = Math.max(head?.length ?? 0, ...rows.map((r) => r.length));
  const natural = Array.from({ length: cols }, (_, i) =>
    Math.max(1, ...[head ?? [], ...rows].map((r) => Math.max(0, ...String(r[i] ?? '').split('\n').map(visibleWidth)))),
  );
  // Each column takes its text plus one space either side, and the borders one column each.
  const budget = maxWidth - (cols + 1) - 2 * cols;
  let cap = Math.max(...natural);
  const used = (c: number) => natural.reduce((n, w) => n + Math.min(w, c), 0);
  while (cap > 4 && used(cap) > budget) cap--;
  const widths = natural.map((w) => Math.min(w, cap));
  const fit = (r: string[]) => widths.map((w, i) => wrapCell(String(r[i] ?? ''), w));
  const table = new Table({
    ...(head ? { head: fit(head) } : {}),
    colWidths: widths.map((w) => w + 2),
    style: { head: [], border: color.level > 0 ? ['grey'] : [] },
  });
  for (const r of rows) table.push(fit(r));
  return table.toString();
}

export function keyValueTable(rows: [string, string][], color: ChalkInstance): string {
  return fitTable(undefined, rows.map(([k, v]) => [color.bold(k), v]), color);
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
  const rows = issues.map((i) => [i.payment_id, i.reason, i.last_type ?? '-', i.types.join(' → '), `${i.age_s}s`]);
  return `${color.bold(title)}\n${fitTable(['payment', 'reason', 'last event', 'events seen', 'age'], rows, color)}`;
}

// ------------------------------------------------------------------------------------------------
// bench and report: a payq.report/v1 report as tables, a latency chart and markdown.


function formatMs(ms: number): string {
  return ms >= 1000 ? `${(ms / 1000).toFixed(2)} s` : ms >= 10 ? `${ms.toFixed(1)} ms` : `${ms.toFixed(3)} ms`;
}

function formatPct(fraction: number): string {
  if (fraction === 0) return '0%';
  if (fraction === 1) return '100%';
  return `${(fraction * 100).toFixed(fraction < 0.001 ? 4 : 2)}%`;
}

function formatMb(bytes: number): string {
  return `${(bytes / 1e6).toFixed(1)} MB`;
}

/** The latency rows of a report, in pipeline order: publish, hops, end to end. */
function latencyRows(r: BenchReport): [string, LatencySummary][] {
  const rows: [string, LatencySummary][] = [['publish (send → ack)', r.latency.publish]];
  if (r.latency.publish_delay) rows.push(['publish delay (intended → send)', r.latency.publish_delay]);
  if (r.latency.publish_from_intended) rows.push(['publish from intended', r.latency.publish_from_intended]);
  for (const [hop, s] of Object.entries(r.latency.hops)) rows.push([`hop → ${hop}`, s]);
  rows.push(['end to end', r.latency.end_to_end]);
  return rows;
}

function classesText(r: BenchReport): string {
  const parts = Object.entries(r.payments.by_class)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${formatCount(n)}`);
  return parts.length > 0 ? parts.join(' · ') : '-';
}

/** The summary lines of a report: settings and the headline figures. */
function summaryRows(r: BenchReport, color: ChalkInstance): [string, string][] {
  const s = r.settings;
  const t = r.throughput;
  const e = r.events;
  const dlq = Object.entries(r.dlq.by_reason)
    .filter(([, n]) => n > 0)
    .map(([k, n]) => `${k} ${formatCount(n)}`)
    .join(' · ');
  const load =
    s.rate_per_s === null ? `flat out${s.max_backlog === null ? '' : ` (backlog ≤ ${countOf(s.max_backlog, 'event')})`}` : `${formatCount(s.rate_per_s)} payments/s (open loop)`;
  const window = s.count === null ? `${s.duration_s ?? '-'} s` : countOf(s.count, 'payment');
  return [
    ['broker', s.broker],
    ...(s.broker_version ? [['broker version', color.dim(s.broker_version)] as [string, string]] : []),
    ['scenario', `${s.scenario} · seed ${s.seed} · run ${r.run_id}${r.merged_from > 1 ? ` · merged from ${r.merged_from} reports` : ''}`],
    ['load', `${load} · ${window} after ${s.warmup_s} s warm-up · ${s.producers} producer(s) · ${s.consumers} per stage`],
    ['measured', `${r.elapsed_s} s`],
    ['APT', `${color.bold(`${r.apt_ms} ms`)}${r.apt_wall_ms > 0 ? color.dim(` (wall ${r.apt_wall_ms} ms)`) : ''}`],
    ['throughput', `${color.bold(`${formatRate(t.events_per_s)} events/s`)} · ${t.consumed.mb_per_s} MB/s · ${formatRate(t.payments_per_s)} payments/s finished`],
    ['produced / consumed / processed', `${formatCount(t.produced.events)} · ${formatCount(t.consumed.events)} · ${formatCount(t.processed.events)} events (${formatMb(t.consumed.bytes)} consumed)`],
    ['end-to-end latency', formatLatency(r.latency.end_to_end)],
    [
      'loss',
      r.loss === null || e.lost === null
        ? `n/a: the report of one part (${r.role}) of a run; merge the parts' reports (${formatCount(e.acknowledged)} acknowledged · ${formatCount(e.consumed)} consumed here)`
        : `${r.loss === 0 ? color.green('0') : color.red(formatPct(r.loss))} · ${e.lost === 0 ? 'none' : formatCount(e.lost)} of ${formatCount(e.acknowledged - e.in_flight - e.not_drained)} acknowledged events whose fate is known ${e.lost === 0 ? 'lost' : 'never consumed'}`,
    ],
    ...(e.in_flight > 0
      ? [['in flight', color.yellow(`${formatCount(e.in_flight)} acknowledged events not yet consumed when ${r.connection?.broker_gone ? 'the broker was gone' : 'interrupted'} (fate unknown, not lost)`)] as [string, string]]
      : []),
    ...(e.not_drained > 0 ? [['not drained', color.yellow(`${formatCount(e.not_drained)} acknowledged events still on the broker when the drain timed out (the backlog; not lost)`)] as [string, string]] : []),
    ['duplicates / out of order', `${e.duplicates === 0 ? '0' : color.yellow(formatCount(e.duplicates))} · ${e.out_of_order === 0 ? '0' : color.yellow(formatCount(e.out_of_order))}`],
    ['availability', `${r.availability === 1 ? color.green(formatPct(1)) : color.red(formatPct(r.availability))} of ${formatCount(r.windows.total)} one-second windows`],
    ...(r.connection && (r.connection.reconnects > 0 || r.connection.unavailable_s > 0)
      ? ([['broker away', `${r.connection.unavailable_s.toFixed(1)} s, ${countOf(r.connection.reconnects, 'reconnect')}${r.connection.broker_gone ? color.red(' · gone: it stayed away past --reconnect-timeout') : ''}`]] as [string, string][])
      : []),
    ['payments', `${formatCount(r.payments.produced)} produced · ${formatCount(r.payments.finished)} finished (${classesText(r)})${r.payments.in_flight > 0 ? color.yellow(` · ${formatCount(r.payments.in_flight)} unfinished`) : ''}${r.payments.stuck > 0 ? color.red(` · ${formatCount(r.payments.stuck)} stuck`) : ''}`],
    ['dead-lettered', r.dlq.total === 0 ? '0' : `${formatCount(r.dlq.total)} (${r.dlq.per_s}/s: ${dlq})`],
  ];
}

function handlersTable(r: BenchReport, color: ChalkInstance): string {
  const rows = Object.entries(r.handlers).map(([stage, h]) => [
    stage,
    formatCount(h.count),
    formatMs(h.t_ms),
    formatMs(h.p50_ms),
    formatMs(h.p99_ms),
    formatMs(h.wall_t_ms),
    formatCount(h.retries),
    formatCount(h.dead_lettered),
  ]);
  rows.push([color.bold('APT = Σtᵢcᵢ/Σcᵢ'), '', color.bold(formatMs(r.apt_ms)), '', '', formatMs(r.apt_wall_ms), '', '']);
  return fitTable(['handler', 'cᵢ', 'tᵢ', 'p50', 'p99', 'wall tᵢ', 'retries', 'DLQ'].map((h) => color.bold(h)), rows, color);
}

function latencyTable(r: BenchReport, color: ChalkInstance): string {
  const rows = latencyRows(r).map(([name, s]) => [
    name,
    formatCount(s.count),
    ...[s.p50_ms, s.p90_ms, s.p99_ms, s.p999_ms, s.max_ms].map((v) => (s.count === 0 ? '-' : formatMs(v))),
  ]);
  return fitTable(['latency', 'count', 'p50', 'p90', 'p99', 'p99.9', 'max'].map((h) => color.bold(h)), rows, color);
}

const BAR = ['', '▏', '▎', '▍', '▌', '▋', '▊', '▉'];

/** A small chart of a latency distribution: one bar per percentile, scaled to the largest. */
export function latencyChart(title: string, s: LatencySummary, color: ChalkInstance, width = 40): string {
  if (s.count === 0) return `${title}: no samples`;
  const points: [string, number][] = [
    ['p50', s.p50_ms],
    ['p90', s.p90_ms],
    ['p99', s.p99_ms],
    ['p99.9', s.p999_ms],
    ['max', s.max_ms],
  ];
  const top = Math.max(...points.map(([, v]) => v), 1e-9);
  const lines = points.map(([label, v]) => {
    const eighths = Math.round((v / top) * width * 8);
    const bar = '█'.repeat(Math.floor(eighths / 8)) + BAR[eighths % 8];
    const paint = label === 'p50' ? color.green : label === 'p90' ? color.cyan : label === 'max' ? color.red : color.yellow;
    return `  ${label.padEnd(5)} ${formatMs(v).padStart(10)} ${paint(bar || '▏')}`;
  });
  return `${color.bold(title)}\n${lines.join('\n')}`;
}

/** The full human rendering of a report (bench's table, `payq report`). */
export function benchReportText(r: BenchReport, color: ChalkInstance): string {
  return [
    keyValueTable(summaryRows(r, color), color),
    handlersTable(r, color),
    latencyTable(r, color),
    latencyChart(`end-to-end latency (${countOf(r.latency.end_to_end.count, 'payment')})`, r.latency.end_to_end, color),
  ].join('\n');
}

export function assertionLines(outcomes: AssertionOutcome[], color: ChalkInstance): string {
  return outcomes
    .map((o) => {
      const actual = o.actual === undefined ? 'not in the report' : String(o.actual);
      return o.passed ? `${color.green('✓')} ${o.assertion.text} (${actual})` : `${color.red('✗')} ${o.assertion.text}: ${o.assertion.path} is ${actual}`;
    })
    .join('\n');
}

const md = (text: string) => text.replace(/\|/g, '\\|');

function mdTable(head: string[], rows: string[][]): string {
  return [`| ${head.map(md).join(' | ')} |`, `|${head.map(() => ' --- ').join('|')}|`, ...rows.map((r) => `| ${r.map(md).join(' | ')} |`)].join('\n');
}

/** Markdown for CI step summaries ($GITHUB_STEP_SUMMARY). */
export function benchReportMarkdown(r: BenchReport, outcomes: AssertionOutcome[] = []): string {
  const plain = new Chalk({ level: 0 });
  const parts = [`### payq bench: ${r.settings.scenario} on ${r.settings.broker}`, ''];
  if (outcomes.length > 0) {
    const failed = outcomes.filter((o) => !o.passed).length;
    parts.push(failed === 0 ? `**All ${outcomes.length} assertions passed.**` : `**${failed} of ${outcomes.length} assertions failed.**`, '');
    parts.push(
      mdTable(
        ['assertion', 'value', 'result'],
        outcomes.map((o) => [`\`${o.assertion.text}\``, o.actual === undefined ? 'n/a' : String(o.actual), o.passed ? '✅ pass' : '❌ fail']),
      ),
      '',
    );
  }
  parts.push(mdTable(['figure', 'value'], summaryRows(r, plain)), '');
  parts.push(
    mdTable(
      ['handler', 'cᵢ', 'tᵢ (ms)', 'p50 (ms)', 'p99 (ms)', 'wall tᵢ (ms)', 'dead-lettered'],
      [
        ...Object.entries(r.handlers).map(([stage, h]) => [stage, String(h.count), String(h.t_ms), String(h.p50_ms), String(h.p99_ms), String(h.wall_t_ms), String(h.dead_lettered)]),
        ['**APT**', '', `**${r.apt_ms}**`, '', '', String(r.apt_wall_ms), ''],
      ],
    ),
    '',
  );
  parts.push(
    mdTable(
      ['latency', 'count', 'p50 (ms)', 'p90 (ms)', 'p99 (ms)', 'p99.9 (ms)', 'max (ms)'],
      latencyRows(r).map(([name, s]) => [name, String(s.count), String(s.p50_ms), String(s.p90_ms), String(s.p99_ms), String(s.p999_ms), String(s.max_ms)]),
    ),
    '',
  );
  parts.push(`<sub>payq ${r.settings.payq_version} · Node ${r.settings.node_version} · started ${r.settings.started_at}</sub>`, '');
  return parts.join('\n');
}

function formatDelta(row: ComparisonRow): string {
  if (row.delta_pct === null) return row.change === 'same' ? '0%' : row.current > row.baseline ? '+∞' : '-∞';
  if (row.change === 'same') return '0%';
  return `${row.delta_pct > 0 ? '+' : ''}${row.delta_pct}%`;
}

/** regression (worse beyond the threshold), worse (within it), better, or same (a 0% change). */
function changeText(row: ComparisonRow, color: ChalkInstance): string {
  if (row.regression) return color.red('regression');
  return row.change === 'better' ? color.green('better') : row.change === 'worse' ? color.yellow('worse') : color.dim('same');
}

export function comparisonTable(rows: ComparisonRow[], color: ChalkInstance): string {
  return fitTable(
    ['figure', 'baseline', 'current', 'change', ''].map((h) => color.bold(h)),
    rows.map((row) => [row.label, String(row.baseline), String(row.current), formatDelta(row), changeText(row, color)]),
    color,
  );
}

export function comparisonMarkdown(rows: ComparisonRow[]): string {
  return mdTable(
    ['figure', 'baseline', 'current', 'change', ''],
    rows.map((r) => [r.label, String(r.baseline), String(r.current), formatDelta(r), r.regression ? '❌ regression' : r.change]),
  );
}

// ------------------------------------------------------------------------------------------------
// bench --find-max: the steps and the capacity.

export function capacityText(c: NonNullable<BenchReport['capacity']>, color: ChalkInstance): string {
  const rows = c.steps.map((s) => [
    String(s.index),
    s.phase,
    formatCount(s.rate_per_s),
    formatCount(Math.round(s.achieved_per_s)),
    formatCount(Math.round(s.events_per_s)),
    String(s.p99_ms),
    s.passed ? 'pass' : `fail: ${s.limit}`,
  ]);
  const table = fitTable(['step', 'phase', 'rate/s', 'achieved/s', 'events/s', 'p99 ms', 'verdict'], rows, color);
  const slos = c.slos.join(', ');
  if (c.payments_per_s === null) {
    return `${table}\n${color.red.bold('capacity: none')} — even ${formatCount(c.min_rate_per_s)} payments/s breaks ${c.first_failure?.limit ?? 'an SLO'} (SLOs: ${slos})`;
  }
  const failure = c.first_failure ? ` · first failure at ${formatCount(c.first_failure.rate_per_s)}/s: ${c.first_failure.limit}` : '';
  const why = c.bracketed ? `within ${+(c.precision * 100).toFixed(2)}%` : `not bracketed (${c.stopped_by}): a lower bound`;
  return `${table}\n${color.green.bold(`capacity: ${formatCount(c.payments_per_s)} payments/s`)} (${formatCount(Math.round(c.events_per_s ?? 0))} events/s) meeting ${slos}, ${why}${failure}`;
}
