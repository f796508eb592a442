/**
 * `payq report FILE... --html OUT.html` and `bench --html OUT.html`: one self-contained HTML file
 * (README "HTML report"). Charts are inline SVG drawn by svg-chart.ts; styles are inline; the
 * only script is the theme switch. Nothing is fetched when the file is opened, so it works from
 * a CI artifact with no server. Data is written as it is in the report, escaped, never rewritten
 * (the report's broker URL is already the redacted one).
 */
import type { AssertionOutcome } from '../metrics/assert.js';
import type { ComparisonRow } from '../metrics/compare.js';
import { decodeHistogram, summarize } from '../metrics/histogram.js';
import type { Report } from '../metrics/report.js';
import { barChart, escapeXml as esc, lineChart, type Marker, type Series } from './svg-chart.js';

export interface HtmlReportInput {
  /** The reports to show, each under its name (a file name, or "merged"). */
  reports: { name: string; report: Report }[];
  /** With `--compare`: the baseline, overlaid on the first report's charts. */
  baseline?: { name: string; report: Report; rows: ComparisonRow[]; thresholdPct: number };
  /** `--assert` outcomes per report (same order as `reports`). */
  outcomes?: AssertionOutcome[][];
}

/** Percentiles on an HdrHistogram-style axis: x = log10(1 / (1 − p)), so 90%, 99%, 99.9% … sit one apart. */
const PERCENTILE_TICKS: Marker[] = [
  { at: 0, label: '0%' },
  { at: 1, label: '90%' },
  { at: 2, label: '99%' },
  { at: 3, label: '99.9%' },
  { at: 4, label: '99.99%' },
  { at: 5, label: '99.999%' },
];

/**
 * The latency distribution of an encoded histogram as (x, ms) points on the percentile axis, up
 * to the resolution the count allows (a histogram of 1,000 values says nothing past p99.9), and
 * never outside the recorded minimum and maximum.
 */
export function percentilePoints(encoded: string | null | undefined): [number, number][] {
  if (!encoded) return [];
  const h = decodeHistogram(encoded);
  if (h.totalCount === 0) return [];
  // The same bounds the report's figures use, so the plot never disagrees with the tables.
  const min = h.minNonZeroValue;
  const max = summarize(h).max_ms * 1000;
  const xMax = Math.min(5, Math.max(1, Math.log10(h.totalCount)));
  const points: [number, number][] = [];
  for (let x = 0; x <= xMax + 1e-9; x += 0.05) {
    const p = 100 * (1 - 10 ** -x);
    const us = Math.min(max, Math.max(min, h.getValueAtPercentile(p)));
    points.push([+x.toFixed(2), us / 1000]);
  }
  points.push([+xMax.toFixed(2), max / 1000]);
  return points;
}

function ticksUpTo(series: Series[]): Marker[] {
  const xMax = Math.max(1, ...series.flatMap((s) => s.points.map((p) => p[0])));
  return PERCENTILE_TICKS.filter((t) => t.at <= Math.ceil(xMax));
}

const num = (n: number, digits = 3) => (Number.isInteger(n) ? n.toLocaleString('en-US') : (+n.toFixed(digits)).toLocaleString('en-US', { maximumFractionDigits: digits }));
const pct = (f: number | null) => (f === null ? 'n/a (one part of a run)' : f === 0 ? '0%' : f === 1 ? '100%' : `${+(f * 100).toFixed(4)}%`);

function table(head: string[], rows: (string | number)[][], cls = ''): string {
  const th = head.map((h) => `<th>${esc(h)}</th>`).join('');
  const body = rows.map((r) => `<tr>${r.map((c) => `<td>${esc(String(c))}</td>`).join('')}</tr>`).join('');
  return `<table class="${cls}"><thead><tr>${th}</tr></thead><tbody>${body}</tbody></table>`;
}

function card(label: string, value: string, state: 'ok' | 'bad' | 'plain' = 'plain'): string {
  return `<div class="card ${state}"><div class="card-value">${esc(value)}</div><div class="card-label">${esc(label)}</div></div>`;
}

/** A time series, where a report carries one: `{ t_s: [...], <name>: [...] }`. */
type TimeSeries = Record<string, unknown> & { t_s?: number[] };

function timeSeriesOf(report: Report): TimeSeries | undefined {
  const ts = (report as unknown as { timeseries?: TimeSeries }).timeseries;
  return ts && Array.isArray(ts.t_s) && ts.t_s.length > 0 ? ts : undefined;
}

function seriesFrom(ts: TimeSeries, key: string, name: string): Series {
  const ys = ts[key];
  if (!Array.isArray(ys)) return { name, points: [] };
  const points: [number, number][] = [];
  ts.t_s!.forEach((t, i) => {
    const y = ys[i];
    if (typeof y === 'number' && Number.isFinite(y)) points.push([t, y]);
  });
  return { name, points };
}

function overTime(report: Report): string {
  const ts = timeSeriesOf(report);
  if (!ts) return `<p class="note">This report has no time series (it was written by a payq that did not record one).</p>`;
  const rates = lineChart({
    title: 'Throughput over time',
    xLabel: 'seconds since start',
    yLabel: 'per second',
    series: [
      seriesFrom(ts, 'sent_per_s', 'sent'),
      seriesFrom(ts, 'acknowledged_per_s', 'acknowledged'),
      seriesFrom(ts, 'consumed_per_s', 'consumed'),
      seriesFrom(ts, 'completed_per_s', 'payments completed'),
    ],
  });
  const latency = lineChart({
    title: 'End-to-end latency over time',
    xLabel: 'seconds since start',
    yLabel: 'ms',
    series: [seriesFrom(ts, 'e2e_p50_ms', 'p50'), seriesFrom(ts, 'e2e_p99_ms', 'p99')],
  });
  const backlog = lineChart({ title: 'Backlog over time', xLabel: 'seconds since start', yLabel: 'events sent, not yet consumed', series: [seriesFrom(ts, 'backlog', 'backlog')] });
  const availability = lineChart({ title: 'Availability over time', xLabel: 'seconds since start', yLabel: 'share of windows', series: [seriesFrom(ts, 'availability', 'availability')] });
  return rates + latency + `<div class="pair">${backlog}${availability}</div>`;
}

function distribution(report: Report, baseline: Report | undefined): string {
  const main: Series[] = [
    { name: 'end to end', points: percentilePoints(report.histograms.end_to_end) },
    { name: 'publish (send → ack)', points: percentilePoints(report.histograms.publish) },
  ];
  if (report.histograms.publish_from_intended) main.push({ name: 'publish from intended', points: percentilePoints(report.histograms.publish_from_intended) });
  if (baseline) main.push({ name: 'end to end (baseline)', points: percentilePoints(baseline.histograms.end_to_end), dashed: true });
  const hops: Series[] = Object.entries(report.histograms.hops).map(([name, h]) => ({ name, points: percentilePoints(h) }));
  return (
    lineChart({ title: 'Latency by percentile', xLabel: 'percentile', yLabel: 'ms (log)', series: main, xTicks: ticksUpTo(main), yLog: true }) +
    lineChart({ title: 'Per-hop latency by percentile (published → consumed by the next stage)', xLabel: 'percentile', yLabel: 'ms (log)', series: hops, xTicks: ticksUpTo(hops), yLog: true })
  );
}

function latencyTable(report: Report): string {
  const rows: (string | number)[][] = [];
  const add = (name: string, s: Report['latency']['publish'] | null) => {
    if (s) rows.push([name, num(s.count), num(s.p50_ms), num(s.p90_ms), num(s.p99_ms), num(s.p999_ms), num(s.max_ms)]);
  };
  add('publish (send → ack)', report.latency.publish);
  add('publish delay (intended → send)', report.latency.publish_delay);
  add('publish from intended', report.latency.publish_from_intended);
  for (const [name, s] of Object.entries(report.latency.hops)) add(`hop → ${name}`, s);
  add('end to end', report.latency.end_to_end);
  return table(['latency (ms)', 'count', 'p50', 'p90', 'p99', 'p99.9', 'max'], rows, 'numbers');
}

function apt(report: Report): string {
  const handlers = Object.entries(report.handlers);
  return (
    `<p>APT = Σ tᵢ·cᵢ / Σ cᵢ = <strong>${esc(num(report.apt_ms))} ms</strong>, over ${handlers.length} handlers (tᵢ: the handler's mean processing time, cᵢ: the events it handled).</p>` +
    `<div class="pair">` +
    barChart('tᵢ — mean processing time per handler', handlers.map(([name, h]) => ({ label: name, value: h.t_ms, text: `${num(h.t_ms)} ms` })), 'ms') +
    barChart('cᵢ — events handled per handler', handlers.map(([name, h]) => ({ label: name, value: h.count, text: num(h.count) })), 'events') +
    `</div>` +
    table(
      ['handler', 'tᵢ ms', 'cᵢ', 'p50 ms', 'p99 ms', 'max ms', 'retries', 'dead-lettered'],
      handlers.map(([name, h]) => [name, num(h.t_ms), num(h.count), num(h.p50_ms), num(h.p99_ms), num(h.max_ms), num(h.retries), num(h.dead_lettered)]),
      'numbers',
    )
  );
}

function outcomes(report: Report): string {
  const e = report.events;
  const rows: (string | number)[][] = [
    ['loss', pct(report.loss)],
    ['events acknowledged', num(e.acknowledged)],
    ['events consumed', num(e.consumed)],
    ['events lost', e.lost === null ? 'n/a' : num(e.lost)],
    ['unacknowledged sends', num(e.unacknowledged)],
    ['duplicates', num(e.duplicates)],
    ['out of order', num(e.out_of_order)],
    ['missing steps', num(e.missing_steps)],
    ['availability', `${pct(report.availability)} (${num(report.windows.available)} of ${num(report.windows.total)} one-second windows)`],
    ['payments produced / finished / in flight / stuck', `${num(report.payments.produced)} / ${num(report.payments.finished)} / ${num(report.payments.in_flight)} / ${num(report.payments.stuck)}`],
    ['dead letters', `${num(report.dlq.total)} (${num(report.dlq.per_s)}/s)`],
  ];
  const reasons = Object.entries(report.dlq.by_reason).map(([label, value]) => ({ label, value, text: num(value) }));
  const classes = Object.entries(report.payments.by_class).map(([label, value]) => ({ label, value, text: num(value) }));
  return table(['outcome', 'value'], rows) + `<div class="pair">${barChart('Dead letters by reason', reasons, '')}${barChart('Payments by class', classes, '')}</div>`;
}

function settings(report: Report): string {
  const s = report.settings;
  const rows: [string, string][] = [
    ['broker', s.broker],
    ['broker version', s.broker_version ?? 'unknown'],
    ['scenario', s.scenario],
    ['seed', String(s.seed)],
    ['rate', s.rate_per_s === null ? 'flat out' : `${num(s.rate_per_s)} payments/s`],
    ['duration', s.duration_s === null ? `${num(s.count ?? 0)} payments` : `${num(s.duration_s)} s (warm-up ${num(s.warmup_s)} s)`],
    ['producers / consumers', `${s.producers} / ${s.consumers}`],
    ['time scale', String(s.time_scale)],
    ['failures', s.failures ? 'on' : 'off'],
    ['run', `${report.run_id} · role ${report.role} · ${report.merged_from} part${report.merged_from === 1 ? '' : 's'}`],
    ['started', s.started_at],
    ['elapsed', `${num(report.elapsed_s)} s`],
    ['payq / Node.js', `${s.payq_version} / ${s.node_version}`],
  ];
  return table(['setting', 'value'], rows);
}

function assertions(list: AssertionOutcome[] | undefined): string {
  if (!list || list.length === 0) return '';
  const rows = list.map((o) => [o.passed ? 'pass' : 'FAIL', o.assertion.text, o.actual === undefined ? 'missing' : String(o.actual)]);
  return `<h3>Assertions</h3>${table(['verdict', 'assertion', 'actual'], rows, 'assertions')}`;
}

function comparison(b: NonNullable<HtmlReportInput['baseline']>): string {
  const rows = b.rows.map((r) => [
    r.label,
    num(r.baseline),
    num(r.current),
    r.delta_pct === null ? 'n/a' : `${r.delta_pct > 0 ? '+' : ''}${+r.delta_pct.toFixed(2)}%`,
    r.regression ? 'regression' : '',
  ]);
  return `<section><h2>Compared with ${esc(b.name)}</h2><p>A regression is a change for the worse by more than ${esc(String(b.thresholdPct))}%. The baseline's end-to-end distribution is drawn dashed in the latency chart above.</p>${table(['metric', 'baseline', 'current', 'change', ''], rows, 'numbers')}</section>`;
}

function headline(report: Report, list: AssertionOutcome[] | undefined): string {
  const failed = (list ?? []).filter((o) => !o.passed).length;
  const lossState = report.loss === null ? 'plain' : report.loss === 0 ? 'ok' : 'bad';
  return (
    `<div class="cards">` +
    card('events/s', num(report.throughput.events_per_s, 1)) +
    card('payments/s', num(report.throughput.payments_per_s, 1)) +
    card('APT', `${num(report.apt_ms)} ms`) +
    card('end-to-end p99', `${num(report.latency.end_to_end.p99_ms)} ms`) +
    card('loss', pct(report.loss), lossState) +
    card('availability', pct(report.availability), report.availability === 1 ? 'ok' : 'bad') +
    card('dead letters', num(report.dlq.total)) +
    (list && list.length > 0 ? card('assertions', failed === 0 ? `${list.length} passed` : `${failed} failed`, failed === 0 ? 'ok' : 'bad') : '') +
    `</div>`
  );
}

function reportSection(name: string, report: Report, baseline: Report | undefined, list: AssertionOutcome[] | undefined): string {
  return (
    `<section class="report" data-report="${esc(name)}">` +
    `<h2>${esc(report.settings.scenario)} on ${esc(report.settings.broker)} <span class="sub">${esc(name)}</span></h2>` +
    headline(report, list) +
    assertions(list) +
    `<h3>Over time</h3>${overTime(report)}` +
    `<h3>Latency distribution</h3>${distribution(report, baseline)}${latencyTable(report)}` +
    `<h3>APT and handlers</h3>${apt(report)}` +
    `<h3>Loss, availability and dead letters</h3>${outcomes(report)}` +
    `<h3>Settings</h3>${settings(report)}` +
    `</section>`
  );
}

const STYLE = `
:root { color-scheme: light dark; --bg: #ffffff; --fg: #1d2430; --muted: #5b6575; --panel: #f4f6f9; --line: #d5dae1;
  --axis: #6b7482; --grid: #e3e7ec; --ok: #1f7a3a; --bad: #b3261e;
  --series-0: #1f6feb; --series-1: #d9480f; --series-2: #2f9e44; --series-3: #9c36b5; --series-4: #0c8599; --series-5: #e67700; }
@media (prefers-color-scheme: dark) { :root:not([data-theme=light]) { --bg: #12161c; --fg: #e4e8ee; --muted: #9aa4b2; --panel: #1b2129;
  --line: #333c48; --axis: #8d97a5; --grid: #262e38; --ok: #57c878; --bad: #ff7b72;
  --series-0: #58a6ff; --series-1: #ff9a5c; --series-2: #69db7c; --series-3: #da77f2; --series-4: #3bc9db; --series-5: #ffc078; } }
:root[data-theme=dark] { --bg: #12161c; --fg: #e4e8ee; --muted: #9aa4b2; --panel: #1b2129; --line: #333c48; --axis: #8d97a5;
  --grid: #262e38; --ok: #57c878; --bad: #ff7b72; --series-0: #58a6ff; --series-1: #ff9a5c; --series-2: #69db7c;
  --series-3: #da77f2; --series-4: #3bc9db; --series-5: #ffc078; }
body { background: var(--bg); color: var(--fg); font: 14px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1320px; padding: 24px; }
h1 { font-size: 22px; margin: 0 0 4px; } h2 { font-size: 18px; margin: 28px 0 8px; } h3 { font-size: 15px; margin: 22px 0 8px; color: var(--muted); }
.sub, .note, header p { color: var(--muted); font-weight: normal; }
.cards { display: flex; flex-wrap: wrap; gap: 10px; }
.card { background: var(--panel); border: 1px solid var(--line); border-radius: 6px; padding: 10px 14px; min-width: 120px; }
.card-value { font-size: 20px; font-weight: 600; } .card-label { color: var(--muted); font-size: 12px; }
.card.ok .card-value { color: var(--ok); } .card.bad .card-value { color: var(--bad); }
table { border-collapse: collapse; margin: 8px 0 12px; font-variant-numeric: tabular-nums; }
th, td { border-bottom: 1px solid var(--line); padding: 4px 10px; text-align: left; }
table.numbers td:not(:first-child), table.numbers th:not(:first-child) { text-align: right; }
.pair { display: flex; flex-wrap: wrap; gap: 12px; } .pair .chart { flex: 1 1 480px; }
.chart { margin: 8px 0; max-width: 760px; } .chart svg { width: 100%; height: auto; }
.chart-title { font-size: 14px; font-weight: 600; fill: var(--fg); } .tick, .legend, .bar-label, .marker-label, .empty { font-size: 11px; fill: var(--muted); }
.axis-label { font-size: 12px; fill: var(--muted); } .axis { stroke: var(--axis); } .grid { stroke: var(--grid); stroke-width: 1; }
.series { stroke-width: 2; } .dashed { stroke-dasharray: 6 4; } .marker { stroke: var(--bad); stroke-dasharray: 3 3; }
${[0, 1, 2, 3, 4, 5].map((i) => `.series-${i} { stroke: var(--series-${i}); } rect.series-${i} { fill: var(--series-${i}); stroke: none; }`).join('\n')}
#theme { float: right; background: var(--panel); color: var(--fg); border: 1px solid var(--line); border-radius: 4px; padding: 4px 10px; cursor: pointer; }
@media print { :root { --bg: #fff; --fg: #000; --muted: #444; --panel: #fff; } #theme { display: none; } body { max-width: none; padding: 0; }
  .chart, table, .cards { break-inside: avoid; } section.report { break-before: page; } section.report:first-of-type { break-before: auto; } }
`;

const THEME_SCRIPT = `document.getElementById('theme').addEventListener('click', function () {
  var root = document.documentElement; var dark = root.dataset.theme ? root.dataset.theme === 'dark' : matchMedia('(prefers-color-scheme: dark)').matches;
  root.dataset.theme = dark ? 'light' : 'dark'; });`;

export function renderHtmlReport(input: HtmlReportInput): string {
  const first = input.reports[0]?.report;
  const title = first ? `payq report — ${first.settings.scenario} on ${first.settings.broker}` : 'payq report';
  const sections = input.reports.map((r, i) => reportSection(r.name, r.report, i === 0 ? input.baseline?.report : undefined, input.outcomes?.[i])).join('');
  return (
    `<!doctype html>\n<html lang="en"><head><meta charset="utf-8">` +
    `<meta name="viewport" content="width=device-width, initial-scale=1">` +
    // No network at view time: nothing may load from anywhere, the inline style and script aside.
    `<meta http-equiv="Content-Security-Policy" content="default-src 'none'; style-src 'unsafe-inline'; script-src 'unsafe-inline'; img-src data:">` +
    `<title>${esc(title)}</title><style>${STYLE}</style></head><body>` +
    `<header><button id="theme" type="button">light / dark</button><h1>${esc(title)}</h1>` +
    `<p>${input.reports.length} report${input.reports.length === 1 ? '' : 's'} · written by payq ${esc(first?.settings.payq_version ?? '')}</p></header>` +
    sections +
    (input.baseline ? comparison(input.baseline) : '') +
    `<script>${THEME_SCRIPT}</script></body></html>\n`
  );
}
