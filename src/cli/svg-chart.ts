/**
 * Small SVG charts for the HTML report, written as text: no charting library, nothing fetched at
 * view time. Colours come from CSS variables (`--series-0` …, `--axis`, `--grid`), so the same
 * markup follows the page's light, dark and print themes.
 */

export interface Series {
  name: string;
  points: [number, number][];
  dashed?: boolean;
}

export interface Marker {
  /** Where the marker sits on its axis, in data units. */
  at: number;
  label: string;
}

export interface LineChartSpec {
  title: string;
  xLabel: string;
  yLabel: string;
  series: Series[];
  /** Tick positions and labels on x; default: five evenly spaced ticks. */
  xTicks?: Marker[];
  /** A horizontal line (an SLO, say). */
  hLines?: Marker[];
  /** A vertical line (a found capacity, say). */
  vLines?: Marker[];
  /** Logarithmic y axis (latencies spanning decades). */
  yLog?: boolean;
}

export interface Bar {
  label: string;
  value: number;
  /** Shown on the bar; default the value itself. */
  text?: string;
}

const W = 640;
const H = 300;
const M = { top: 34, right: 34, bottom: 46, left: 64 };
const PW = W - M.left - M.right;
const PH = H - M.top - M.bottom;

export function escapeXml(text: string): string {
  return text.replace(/[&<>"']/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;', "'": '&#39;' })[c]!);
}

const fmt = (n: number) => {
  if (n === 0) return '0';
  const a = Math.abs(n);
  if (a >= 1e6) return `${+(n / 1e6).toPrecision(3)}M`;
  if (a >= 1e4) return `${+(n / 1e3).toPrecision(3)}k`;
  if (a >= 100) return String(Math.round(n));
  return String(+n.toPrecision(3));
};

/** Round-number ticks covering [lo, hi]. */
function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 2.5, 5, 10].map((f) => f * mag).find((s) => s >= raw) ?? raw;
  const ticks: number[] = [];
  for (let t = Math.ceil(lo / step) * step; t <= hi + step * 1e-9; t += step) ticks.push(+t.toPrecision(12));
  return ticks;
}

function logTicks(lo: number, hi: number): number[] {
  const ticks: number[] = [];
  for (let e = Math.floor(Math.log10(lo)); e <= Math.ceil(Math.log10(hi)); e++) ticks.push(10 ** e);
  return ticks;
}

function frame(title: string, body: string, kind: string, height = H): string {
  return (
    `<figure class="chart" data-chart="${escapeXml(kind)}">` +
    `<svg viewBox="0 0 ${W} ${height}" role="img" aria-label="${escapeXml(title)}" xmlns="http://www.w3.org/2000/svg">` +
    `<text class="chart-title" x="${M.left}" y="20">${escapeXml(title)}</text>${body}</svg></figure>`
  );
}

/** A line chart; `series` with no points draws the frame and says "no data". */
export function lineChart(spec: LineChartSpec): string {
  const all = spec.series.flatMap((s) => s.points);
  const kind = 'line';
  if (all.length === 0) return frame(spec.title, `<text class="empty" x="${W / 2}" y="${H / 2}" text-anchor="middle">no data</text>`, kind);
  const xs = all.map((p) => p[0]).concat((spec.vLines ?? []).map((v) => v.at), (spec.xTicks ?? []).map((t) => t.at));
  const ysRaw = all.map((p) => p[1]).concat((spec.hLines ?? []).map((h) => h.at));
  const xMin = Math.min(...xs);
  const xMax = Math.max(...xs) > xMin ? Math.max(...xs) : xMin + 1;
  const positive = ysRaw.filter((y) => y > 0);
  const yLog = spec.yLog === true && positive.length > 0;
  let yLo: number;
  let yHi: number;
  if (yLog) {
    yLo = 10 ** Math.floor(Math.log10(Math.min(...positive)));
    yHi = 10 ** Math.ceil(Math.log10(Math.max(...positive)));
    if (yHi <= yLo) yHi = yLo * 10;
  } else {
    yLo = Math.min(0, ...ysRaw);
    yHi = Math.max(...ysRaw);
    if (yHi <= yLo) yHi = yLo + 1;
    yHi = niceTicks(yLo, yHi).at(-1)! < yHi ? yHi * 1.05 : niceTicks(yLo, yHi).at(-1)!;
  }
  const px = (x: number) => M.left + ((x - xMin) / (xMax - xMin)) * PW;
  const py = (y: number) => {
    const f = yLog ? (Math.log10(Math.max(y, yLo)) - Math.log10(yLo)) / (Math.log10(yHi) - Math.log10(yLo)) : (y - yLo) / (yHi - yLo);
    return M.top + PH - f * PH;
  };
  const parts: string[] = [];
  const yTicks = yLog ? logTicks(yLo, yHi) : niceTicks(yLo, yHi);
  for (const t of yTicks) {
    const y = py(t).toFixed(1);
    parts.push(`<line class="grid" x1="${M.left}" x2="${M.left + PW}" y1="${y}" y2="${y}"/>`);
    parts.push(`<text class="tick" x="${M.left - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${fmt(t)}</text>`);
  }
  const xTicks = spec.xTicks ?? niceTicks(xMin, xMax).map((t) => ({ at: t, label: fmt(t) }));
  for (const t of xTicks) {
    const x = px(t.at).toFixed(1);
    parts.push(`<line class="grid" x1="${x}" x2="${x}" y1="${M.top}" y2="${M.top + PH}"/>`);
    parts.push(`<text class="tick" x="${x}" y="${M.top + PH + 16}" text-anchor="middle">${escapeXml(t.label)}</text>`);
  }
  parts.push(`<rect class="axis" x="${M.left}" y="${M.top}" width="${PW}" height="${PH}" fill="none"/>`);
  parts.push(`<text class="axis-label" x="${M.left + PW / 2}" y="${H - 8}" text-anchor="middle">${escapeXml(spec.xLabel)}</text>`);
  parts.push(`<text class="axis-label" transform="translate(14 ${M.top + PH / 2}) rotate(-90)" text-anchor="middle">${escapeXml(spec.yLabel)}</text>`);
  spec.series.forEach((s, i) => {
    if (s.points.length === 0) return;
    const d = s.points.map((p, j) => `${j === 0 ? 'M' : 'L'}${px(p[0]).toFixed(1)},${py(p[1]).toFixed(1)}`).join('');
    parts.push(`<path class="series series-${i % 6}${s.dashed ? ' dashed' : ''}" data-series="${escapeXml(s.name)}" d="${d}" fill="none"/>`);
  });
  for (const h of spec.hLines ?? []) {
    const y = py(h.at).toFixed(1);
    parts.push(`<line class="marker" x1="${M.left}" x2="${M.left + PW}" y1="${y}" y2="${y}"/><text class="marker-label" x="${M.left + PW - 4}" y="${Number(y) - 4}" text-anchor="end">${escapeXml(h.label)}</text>`);
  }
  for (const v of spec.vLines ?? []) {
    const x = px(v.at).toFixed(1);
    parts.push(`<line class="marker" x1="${x}" x2="${x}" y1="${M.top}" y2="${M.top + PH}"/><text class="marker-label" x="${Number(x) + 4}" y="${M.top + 12}">${escapeXml(v.label)}</text>`);
  }
  // The legend goes under the plot, never over the lines.
  let height = H;
  if (spec.series.length > 1) {
    spec.series.forEach((s, i) => {
      const x = M.left + (i % 3) * 190;
      const y = H + 4 + Math.floor(i / 3) * 16;
      parts.push(`<line class="series series-${i % 6}${s.dashed ? ' dashed' : ''}" x1="${x}" x2="${x + 16}" y1="${y - 4}" y2="${y - 4}"/><text class="legend" x="${x + 20}" y="${y}">${escapeXml(s.name)}</text>`);
    });
    height = H + 12 + Math.ceil(spec.series.length / 3) * 16;
  }
  return frame(spec.title, parts.join(''), kind, height);
}

/** Horizontal bars, one per label, scaled to the largest value. */
export function barChart(title: string, bars: Bar[], unit: string): string {
  const rowH = 24;
  const height = M.top + Math.max(1, bars.length) * rowH + 16;
  const left = 170;
  const width = W - left - 90;
  const max = Math.max(0, ...bars.map((b) => b.value));
  const parts: string[] = [];
  if (bars.length === 0) parts.push(`<text class="empty" x="${W / 2}" y="${M.top + 16}" text-anchor="middle">no data</text>`);
  bars.forEach((b, i) => {
    const y = M.top + i * rowH;
    const w = max > 0 ? Math.max(1, (b.value / max) * width) : 1;
    parts.push(`<text class="tick" x="${left - 8}" y="${y + rowH / 2}" text-anchor="end" dominant-baseline="middle">${escapeXml(b.label)}</text>`);
    parts.push(`<rect class="bar series-${i % 6}" x="${left}" y="${y + 4}" width="${w.toFixed(1)}" height="${rowH - 8}" data-value="${b.value}"/>`);
    parts.push(`<text class="bar-label" x="${left + w + 6}" y="${y + rowH / 2}" dominant-baseline="middle">${escapeXml(b.text ?? `${fmt(b.value)} ${unit}`)}</text>`);
  });
  return (
    `<figure class="chart" data-chart="bar">` +
    `<svg viewBox="0 0 ${W} ${height}" role="img" aria-label="${escapeXml(title)}" xmlns="http://www.w3.org/2000/svg">` +
    `<text class="chart-title" x="${M.left}" y="20">${escapeXml(title)}</text>${parts.join('')}</svg></figure>`
  );
}
