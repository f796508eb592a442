import { describe, expect, it } from 'vitest';
import { createLatencyHistogram, decodeHistogram, recordUs } from '../../src/metrics/histogram.js';
import { MAX_POINTS, mergeTimeSeries, TimeSeriesRecorder } from '../../src/metrics/timeseries.js';

const T0 = 1_800_000_000 * 1e6; // epoch µs on a whole second

/** A recorder fed `events` (epoch µs, e2e µs) as cumulative samples every 250 ms. */
function record(events: { atUs: number; e2eUs: number }[], untilUs: number) {
  const r = new TimeSeriesRecorder();
  const h = createLatencyHistogram();
  let i = 0;
  let count = 0;
  for (let t = T0; t <= untilUs; t += 250_000) {
    while (i < events.length && events[i]!.atUs <= t) {
      recordUs(h, events[i]!.e2eUs);
      count++;
      i++;
    }
    r.sample(t, { sent: count, acknowledged: count, consumed: count, completed: count, backlog: 0 }, h);
  }
  return r.finish(() => true)!;
}

describe('time series', () => {
  it('puts each second\'s counts and latencies in its point', () => {
    const events = Array.from({ length: 30 }, (_, k) => ({ atUs: T0 + 100_000 + k * 100_000, e2eUs: 1000 * (k + 1) }));
    const ts = record(events, T0 + 3_000_000);
    expect(ts.start_epoch_s).toBe(1_800_000_000);
    expect(ts.sent_per_s.reduce((a, b) => a + b, 0)).toBe(30);
    expect(ts.e2e.filter(Boolean).map((e) => decodeHistogram(e!).totalCount).reduce((a, b) => a + b, 0)).toBe(30);
    // Later seconds hold the slower events: p99 grows along the series.
    const p99 = ts.e2e_p99_ms.filter((x): x is number => x !== null);
    for (let i = 1; i < p99.length; i++) expect(p99[i]!).toBeGreaterThan(p99[i - 1]!);
  });

  it('merges the parts of one run exactly into the series of the whole', () => {
    const all = Array.from({ length: 400 }, (_, k) => ({ atUs: T0 + k * 12_345, e2eUs: 500 + ((k * 7919) % 90_000) }));
    const whole = record(all, T0 + 6_000_000);
    const a = record(all.filter((_, k) => k % 3 === 0), T0 + 6_000_000);
    const b = record(all.filter((_, k) => k % 3 !== 0), T0 + 6_000_000);
    const merged = mergeTimeSeries([a, b])!;
    expect(merged.sent_per_s).toEqual(whole.sent_per_s);
    expect(merged.completed_per_s).toEqual(whole.completed_per_s);
    expect(merged.e2e_p50_ms).toEqual(whole.e2e_p50_ms);
    expect(merged.e2e_p99_ms).toEqual(whole.e2e_p99_ms);
    // The same part twice is not the whole: counts double.
    expect(mergeTimeSeries([a, a])!.sent_per_s).toEqual(a.sent_per_s.map((x) => x * 2));
  });

  it('aligns parts that started in different seconds', () => {
    const early = record([{ atUs: T0 + 200_000, e2eUs: 1000 }], T0 + 1_000_000);
    const lateRecorder = new TimeSeriesRecorder();
    lateRecorder.sample(T0 + 2_300_000, { sent: 5, acknowledged: 5, consumed: 5, completed: 5, backlog: 3 }, undefined);
    const late = lateRecorder.finish(() => undefined)!;
    const merged = mergeTimeSeries([late, early])!;
    expect(merged.start_epoch_s).toBe(1_800_000_000);
    expect(merged.t_s).toEqual([0, 1, 2]);
    expect(merged.sent_per_s).toEqual([1, 0, 5]);
    expect(merged.availability).toEqual([1, 1, null]);
  });

  it(`stays within ${MAX_POINTS} points on a long run, keeping every count`, () => {
    const r = new TimeSeriesRecorder();
    let n = 0;
    for (let s = 0; s < 9_000; s++) r.sample(T0 + s * 1e6 + 10, { sent: (n += 3), acknowledged: n, consumed: n, completed: n, backlog: 1 }, undefined);
    const ts = r.finish(() => true)!;
    expect(ts.t_s.length).toBeLessThanOrEqual(MAX_POINTS);
    expect(ts.interval_s).toBe(8);
    const total = ts.sent_per_s.reduce((a, b) => a + b * ts.interval_s, 0);
    expect(total).toBeCloseTo(3 * 9_000, 6);
  });
});
