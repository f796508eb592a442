/**
 * APT, the seed's average processing time, computed here for every command that reports it
 * (worker and bench, hence report and merge): APT = Σ tᵢ·cᵢ / Σ cᵢ over handlers i, with tᵢ the
 * mean of handler i's processing-time histogram and cᵢ its count (README "Metrics"). What goes in
 * the histograms is the caller's choice of the one documented time: the processing time of each
 * handled event's successful attempt. The same formula over the attempts' wall times is shown
 * beside it under its own name (`apt_wall_ms`).
 */
import type { LatencyHistogram } from './histogram.js';

const round4 = (n: number) => Math.round(n * 10_000) / 10_000;

/** tᵢ: a handler's mean processing time (ms), 0 when it handled nothing. */
export function handlerTMs(h: LatencyHistogram): number {
  return h.totalCount === 0 ? 0 : round4(h.mean / 1000);
}

/** APT = Σ tᵢ·cᵢ / Σ cᵢ, with tᵢ each histogram's mean and cᵢ its count (ms); 0 with no events. */
export function aptMs(histograms: LatencyHistogram[]): number {
  let c = 0;
  let tc = 0;
  for (const h of histograms) {
    if (h.totalCount === 0) continue;
    c += h.totalCount;
    tc += h.mean * h.totalCount;
  }
  return c === 0 ? 0 : round4(tc / c / 1000);
}
