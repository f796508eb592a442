/**
 * Latency histograms: HdrHistogram in microseconds, 3 significant digits, from 1 µs to one hour
 * (values above are clamped to the top and counted). Encoded as compressed base64 in reports so
 * histograms from several runs or machines merge exactly.
 */
import * as hdr from 'hdr-histogram-js';

export type LatencyHistogram = hdr.Histogram;

/** Highest value tracked: one hour in µs. */
export const HIGHEST_TRACKABLE_US = 3_600_000_000;

export function createLatencyHistogram(): LatencyHistogram {
  return hdr.build({
    bitBucketSize: 32,
    autoResize: false,
    lowestDiscernibleValue: 1,
    highestTrackableValue: HIGHEST_TRACKABLE_US,
    numberOfSignificantValueDigits: 3,
  });
}

/** Records a latency in µs (clamped into the trackable range), `count` times. */
export function recordUs(h: LatencyHistogram, us: number, count = 1): void {
  const v = us < 1 ? 1 : us > HIGHEST_TRACKABLE_US ? HIGHEST_TRACKABLE_US : Math.round(us);
  if (count === 1) h.recordValue(v);
  else h.recordValueWithCount(v, count);
}

export interface LatencySummary {
  count: number;
  mean_ms: number;
  p50_ms: number;
  p90_ms: number;
  p99_ms: number;
  p999_ms: number;
  max_ms: number;
}

const ms = (us: number) => Math.round(us) / 1000;

/**
 * Every figure of a histogram's summary lies within its recorded range: HdrHistogram answers a
 * percentile (and averages) with the highest (median) equivalent value of a bucket, which can
 * lie above the maximum it recorded exactly, or below the minimum. Percentiles are read here and
 * nowhere else, so every table, JSON and markdown figure keeps min ≤ p50 ≤ … ≤ max.
 */
export function summarize(h: LatencyHistogram): LatencySummary {
  if (h.totalCount === 0) return { count: 0, mean_ms: 0, p50_ms: 0, p90_ms: 0, p99_ms: 0, p999_ms: 0, max_ms: 0 };
  const min = h.minNonZeroValue;
  const max = h.maxValue;
  const within = (us: number) => ms(us < min ? min : us > max ? max : us);
  return {
    count: h.totalCount,
    mean_ms: within(h.mean),
    p50_ms: within(h.getValueAtPercentile(50)),
    p90_ms: within(h.getValueAtPercentile(90)),
    p99_ms: within(h.getValueAtPercentile(99)),
    p999_ms: within(h.getValueAtPercentile(99.9)),
    max_ms: ms(max),
  };
}

export function encodeHistogram(h: LatencyHistogram): string {
  return hdr.encodeIntoCompressedBase64(h);
}

export function decodeHistogram(encoded: string): LatencyHistogram {
  return hdr.decodeFromCompressedBase64(encoded, 32, false);
}

/**
 * How many recorded values are ≤ each bound (µs, ascending), exactly at the histogram's own
 * resolution: a value counts under a bound when its bucket's highest equivalent value is ≤ it.
 * For OpenMetrics' cumulative `le` buckets.
 */
export function cumulativeCounts(h: LatencyHistogram, boundsUs: number[]): number[] {
  const counts = boundsUs.map(() => 0);
  if (h.totalCount === 0) return counts;
  if (!(h instanceof hdr.JsHistogram)) throw new Error('cumulativeCounts needs a JS histogram');
  const it = h.recordedValuesIterator;
  it.reset();
  while (it.hasNext()) {
    const v = it.next();
    for (let i = boundsUs.length - 1; i >= 0 && v.valueIteratedTo <= boundsUs[i]!; i--) counts[i]! += v.countAtValueIteratedTo;
  }
  return counts;
}

/** A histogram as `packHistograms` leaves it: its compressed base64 encoding. */
interface PackedHistogram {
  $hdr: string;
}

/** Plain data: what a worker thread can post to its parent (structured clone keeps no classes). */
export type Packed<T> = T extends LatencyHistogram
  ? PackedHistogram
  : T extends (infer U)[]
    ? Packed<U>[]
    : T extends object
      ? { [K in keyof T]: Packed<T[K]> }
      : T;

/**
 * `value` with every histogram in it encoded (encodeHistogram), so that a thread's result crosses
 * to its parent whole and its histograms merge there exactly (`--procs N`, README "payq produce").
 */
export function packHistograms<T>(value: T): Packed<T> {
  if (value instanceof hdr.JsHistogram) return { $hdr: encodeHistogram(value) } as Packed<T>;
  if (Array.isArray(value)) return value.map(packHistograms) as Packed<T>;
  if (value !== null && typeof value === 'object') {
    return Object.fromEntries(Object.entries(value).map(([k, v]) => [k, packHistograms(v)])) as Packed<T>;
  }
  return value as Packed<T>;
}

/** The inverse of packHistograms: each encoded histogram decoded again. */
export function unpackHistograms<T>(value: Packed<T>): T {
  if (Array.isArray(value)) return value.map((v) => unpackHistograms(v as Packed<unknown>)) as T;
  if (value !== null && typeof value === 'object') {
    const o = value as Record<string, unknown>;
    if (typeof o['$hdr'] === 'string' && Object.keys(o).length === 1) return decodeHistogram(o['$hdr']) as T;
    return Object.fromEntries(Object.entries(o).map(([k, v]) => [k, unpackHistograms(v as Packed<unknown>)])) as T;
  }
  return value as T;
}
