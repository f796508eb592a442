/**
 * A report's time series (README "JSON report"): per second of the measured run, the events sent,
 * acknowledged and consumed, the payments completed, the backlog, availability and the end-to-end
 * p50/p99. Points sit on whole epoch seconds, so the series of the parts of one run (each measured
 * on its own machine) line up and merge exactly: rates add, each point's end-to-end histogram is
 * kept encoded and merged, and the percentiles are read again. Past MAX_POINTS, neighbours are
 * merged two by two (the interval doubles), so a long soak keeps a bounded series.
 */
import { createLatencyHistogram, decodeHistogram, encodeHistogram, summarize, type LatencyHistogram } from './histogram.js';

export const MAX_POINTS = 2000;

export interface TimeSeries {
  /** Epoch seconds of the first point's start (a whole number). */
  start_epoch_s: number;
  interval_s: number;
  /** Seconds since the first point, for each point. */
  t_s: number[];
  sent_per_s: number[];
  acknowledged_per_s: number[];
  consumed_per_s: number[];
  completed_per_s: number[];
  /** Events sent and not yet consumed at the end of the point (parts add theirs). */
  backlog: number[];
  /** Share of the point's one-second windows in which the broker accepted sends; null where no part sent. */
  availability: (number | null)[];
  e2e_p50_ms: (number | null)[];
  e2e_p99_ms: (number | null)[];
  /** Each point's end-to-end histogram, encoded (null when empty): what makes merging exact. */
  e2e: (string | null)[];
}

export interface Counts {
  sent: number;
  acknowledged: number;
  consumed: number;
  completed: number;
  backlog: number;
}

interface Point {
  sent: number;
  acknowledged: number;
  consumed: number;
  completed: number;
  backlog: number;
  e2e: LatencyHistogram | undefined;
}

/** Samples cumulative counts as the run goes; each delta lands in the epoch second it was seen in. */
export class TimeSeriesRecorder {
  private readonly points = new Map<number, Point>();
  private last: Counts = { sent: 0, acknowledged: 0, consumed: 0, completed: 0, backlog: 0 };
  private lastE2e: LatencyHistogram | undefined;

  sample(nowUs: number, counts: Counts, e2e: LatencyHistogram | undefined): void {
    const second = Math.floor(nowUs / 1e6);
    const p = this.points.get(second) ?? { sent: 0, acknowledged: 0, consumed: 0, completed: 0, backlog: 0, e2e: undefined };
    p.sent += counts.sent - this.last.sent;
    p.acknowledged += counts.acknowledged - this.last.acknowledged;
    p.consumed += counts.consumed - this.last.consumed;
    p.completed += counts.completed - this.last.completed;
    p.backlog = counts.backlog;
    if (e2e && e2e.totalCount > (this.lastE2e?.totalCount ?? 0)) {
      const delta = createLatencyHistogram();
      delta.add(e2e);
      if (this.lastE2e) delta.subtract(this.lastE2e);
      if (!p.e2e) p.e2e = delta;
      else p.e2e.add(delta);
      const copy = createLatencyHistogram();
      copy.add(e2e);
      this.lastE2e = copy;
    }
    this.last = { ...counts };
    this.points.set(second, p);
  }

  /** The series, with each second's availability (true: the broker accepted sends) where known. */
  finish(available: (epochSecond: number) => boolean | undefined): TimeSeries | undefined {
    if (this.points.size === 0) return undefined;
    const seconds = [...this.points.keys()].sort((a, b) => a - b);
    const start = seconds[0]!;
    const end = seconds.at(-1)!;
    const rows: SeriesRow[] = [];
    for (let s = start; s <= end; s++) {
      const p = this.points.get(s);
      const a = available(s);
      rows.push({
        sent: p?.sent ?? 0,
        acknowledged: p?.acknowledged ?? 0,
        consumed: p?.consumed ?? 0,
        completed: p?.completed ?? 0,
        backlog: p?.backlog ?? rows.at(-1)?.backlog ?? 0,
        availability: a === undefined ? null : a ? 1 : 0,
        e2e: p?.e2e,
      });
    }
    const d = downsample(rows, 1);
    return toSeries(start, d.rows, d.interval);
  }
}

interface SeriesRow {
  sent: number;
  acknowledged: number;
  consumed: number;
  completed: number;
  backlog: number;
  availability: number | null;
  e2e: LatencyHistogram | undefined;
}

function mergeRows(a: SeriesRow, b: SeriesRow): SeriesRow {
  let e2e: LatencyHistogram | undefined;
  if (a.e2e || b.e2e) {
    e2e = createLatencyHistogram();
    if (a.e2e) e2e.add(a.e2e);
    if (b.e2e) e2e.add(b.e2e);
  }
  const av = a.availability === null ? b.availability : b.availability === null ? a.availability : (a.availability + b.availability) / 2;
  return {
    sent: a.sent + b.sent,
    acknowledged: a.acknowledged + b.acknowledged,
    consumed: a.consumed + b.consumed,
    completed: a.completed + b.completed,
    backlog: b.backlog,
    availability: av,
    e2e,
  };
}

/** Halves the point count (neighbours merged) until at most MAX_POINTS remain. Rows hold counts per point. */
function downsample(rows: SeriesRow[], interval: number): { rows: SeriesRow[]; interval: number } {
  let out = rows;
  let iv = interval;
  while (out.length > MAX_POINTS) {
    const next: SeriesRow[] = [];
    for (let i = 0; i < out.length; i += 2) next.push(i + 1 < out.length ? mergeRows(out[i]!, out[i + 1]!) : out[i]!);
    out = next;
    iv *= 2;
  }
  return { rows: out, interval: iv };
}

const rate = (n: number, interval: number) => Math.round((n / interval) * 10) / 10;

function toSeries(start: number, rows: SeriesRow[], interval: number): TimeSeries {
  const pct = (h: LatencyHistogram | undefined, key: 'p50_ms' | 'p99_ms') => (h && h.totalCount > 0 ? summarize(h)[key] : null);
  return {
    start_epoch_s: start,
    interval_s: interval,
    t_s: rows.map((_, i) => i * interval),
    sent_per_s: rows.map((r) => rate(r.sent, interval)),
    acknowledged_per_s: rows.map((r) => rate(r.acknowledged, interval)),
    consumed_per_s: rows.map((r) => rate(r.consumed, interval)),
    completed_per_s: rows.map((r) => rate(r.completed, interval)),
    backlog: rows.map((r) => r.backlog),
    availability: rows.map((r) => (r.availability === null ? null : Math.round(r.availability * 1000) / 1000)),
    e2e_p50_ms: rows.map((r) => pct(r.e2e, 'p50_ms')),
    e2e_p99_ms: rows.map((r) => pct(r.e2e, 'p99_ms')),
    e2e: rows.map((r) => (r.e2e && r.e2e.totalCount > 0 ? encodeHistogram(r.e2e) : null)),
  };
}

/**
 * The series of several parts of one run as one: points aligned on their epoch seconds, counts
 * and backlogs added, histograms merged, availability averaged over the parts that sent. Exact:
 * merging the parts gives the series one process measuring everything would have given (up to
 * the coarsest interval among them).
 */
export function mergeTimeSeries(parts: (TimeSeries | undefined)[]): TimeSeries | undefined {
  const present = parts.filter((p): p is TimeSeries => p !== undefined);
  if (present.length === 0) return undefined;
  const interval = Math.max(...present.map((p) => p.interval_s));
  const start = Math.min(...present.map((p) => p.start_epoch_s));
  const slot = (epoch: number) => Math.floor((epoch - start) / interval);
  const rows: (SeriesRow & { parts: number })[] = [];
  for (const p of present) {
    p.t_s.forEach((t, i) => {
      const k = slot(p.start_epoch_s + t);
      const row = rows[k] ?? { sent: 0, acknowledged: 0, consumed: 0, completed: 0, backlog: 0, availability: null, e2e: undefined, parts: 0 };
      row.sent += p.sent_per_s[i]! * p.interval_s;
      row.acknowledged += p.acknowledged_per_s[i]! * p.interval_s;
      row.consumed += p.consumed_per_s[i]! * p.interval_s;
      row.completed += p.completed_per_s[i]! * p.interval_s;
      row.backlog += p.backlog[i]!;
      const a = p.availability[i];
      if (a !== null && a !== undefined) {
        row.availability = row.availability === null ? a : (row.availability * row.parts + a) / (row.parts + 1);
        row.parts++;
      }
      const enc = p.e2e[i];
      if (enc) {
        row.e2e ??= createLatencyHistogram();
        row.e2e.add(decodeHistogram(enc));
      }
      rows[k] = row;
    });
  }
  const dense: SeriesRow[] = [];
  for (let i = 0; i < rows.length; i++) dense.push(rows[i] ?? { sent: 0, acknowledged: 0, consumed: 0, completed: 0, backlog: dense.at(-1)?.backlog ?? 0, availability: null, e2e: undefined });
  const d = downsample(dense, interval);
  return toSeries(start, d.rows, d.interval);
}
