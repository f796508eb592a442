/**
 * `bench --find-max`: the highest rate the pipeline holds while every SLO holds (README "Capacity
 * search"). Steps at increasing rates (geometric, ×growth) until one fails, then bisection between
 * the highest passing and the lowest failing rate until they are within the precision, then a
 * confirming run at the found rate. A capacity is only ever a rate whose own step passed: when the
 * confirming run fails, that rate becomes the new upper bound and the search goes on below it.
 *
 * Pure: the caller runs a step (a whole bench at one rate) and says what it measured; the search
 * decides what to run next. No clock of its own beyond the injected one.
 */
import type { Clock } from './clock.js';

export interface StepMeasurement {
  /** Payments/s actually produced and finished over the step. */
  achievedRate: number;
  /** Whether the backlog (events in flight) stayed bounded, i.e. the pipeline kept up. */
  backlogBounded: boolean;
  /** The SLOs (`--assert` texts) the step breached; empty when all held. */
  breaches: string[];
  /** Events/s at this step, for the result. */
  eventsPerS: number;
}

export interface CapacityStep extends StepMeasurement {
  /** 1-based, in the order run. */
  index: number;
  phase: 'search' | 'bisect' | 'confirm';
  /** The intended rate (payments/s). */
  rate: number;
  passed: boolean;
  /** Why it failed: the first breached SLO, or `kept up` / `backlog`; undefined when it passed. */
  limit: string | undefined;
}

export interface CapacityOptions {
  /** The first rate (payments/s); if it fails, there is no capacity. */
  minRate: number;
  /** Never step above this rate (optional). */
  maxRate?: number;
  /** Stop bisecting when (failing − passing) / passing ≤ precision (0.05 = 5%). */
  precision: number;
  /** The search's time budget (ms), steps included. */
  maxDurationMs: number;
  /** Geometric growth of the search phase (default 2). */
  growth?: number;
  /** A step kept up when achieved ≥ rate × (1 − keepUpTolerance) (default KEEP_UP_TOLERANCE). */
  keepUpTolerance?: number;
}

export interface CapacityResult {
  /** The highest rate whose step (the confirming run) passed; null when even minRate failed. */
  capacity: { payments_per_s: number; events_per_s: number } | null;
  /** The lowest failing rate above the capacity, and what limited it; null if none failed. */
  firstFailure: { rate: number; limit: string } | null;
  /** The bracket was narrowed to the precision (false: the time budget ran out first, or maxRate). */
  bracketed: boolean;
  /** Why the search stopped. */
  stoppedBy: 'precision' | 'max-rate' | 'max-duration' | 'min-rate-failed' | 'interrupted';
  steps: CapacityStep[];
}

/** A step kept up when it produced at least this much less than asked (5%). */
export const KEEP_UP_TOLERANCE = 0.05;

export type RunStep = (rate: number, phase: CapacityStep['phase']) => Promise<StepMeasurement>;

/** The verdict of one step: passed only if it kept up, its backlog stayed bounded and every SLO held. */
export function judgeStep(rate: number, m: StepMeasurement, keepUpTolerance: number): { passed: boolean; limit: string | undefined } {
  if (m.breaches.length > 0) return { passed: false, limit: m.breaches[0] };
  if (m.achievedRate < rate * (1 - keepUpTolerance)) return { passed: false, limit: 'kept up' };
  if (!m.backlogBounded) return { passed: false, limit: 'backlog' };
  return { passed: true, limit: undefined };
}

const roundRate = (r: number) => (r >= 100 ? Math.round(r) : Math.round(r * 100) / 100);

export async function findCapacity(runStep: RunStep, options: CapacityOptions, clock: Clock, signal?: AbortSignal): Promise<CapacityResult> {
  const growth = options.growth ?? 2;
  const tolerance = options.keepUpTolerance ?? KEEP_UP_TOLERANCE;
  const deadline = clock.nowUs() + options.maxDurationMs * 1000;
  const steps: CapacityStep[] = [];
  const run = async (rate: number, phase: CapacityStep['phase']): Promise<CapacityStep> => {
    const m = await runStep(rate, phase);
    const verdict = judgeStep(rate, m, tolerance);
    const step: CapacityStep = { index: steps.length + 1, phase, rate, ...m, ...verdict };
    steps.push(step);
    return step;
  };
  const outOfTime = () => clock.nowUs() >= deadline;
  const interrupted = () => signal?.aborted === true;

  const first = await run(roundRate(options.minRate), 'search');
  if (!first.passed) {
    return { capacity: null, firstFailure: { rate: first.rate, limit: first.limit! }, bracketed: true, stoppedBy: 'min-rate-failed', steps };
  }
  let lo: CapacityStep = first; // highest passing
  let hi: CapacityStep | undefined; // lowest failing
  let stoppedBy: CapacityResult['stoppedBy'] = 'precision';

  // Search up.
  while (!hi) {
    if (interrupted()) { stoppedBy = 'interrupted'; break; }
    if (outOfTime()) { stoppedBy = 'max-duration'; break; }
    let next = roundRate(lo.rate * growth);
    if (options.maxRate !== undefined && next > options.maxRate) next = options.maxRate;
    if (next <= lo.rate) { stoppedBy = 'max-rate'; break; }
    const s = await run(next, 'search');
    if (s.passed) lo = s;
    else hi = s;
  }

  // Bisect, then confirm; a failed confirmation lowers the upper bound and bisection resumes.
  let confirmed: CapacityStep | undefined;
  while (hi && !confirmed) {
    while ((hi.rate - lo.rate) / lo.rate > options.precision) {
      if (interrupted()) { stoppedBy = 'interrupted'; break; }
      if (outOfTime()) { stoppedBy = 'max-duration'; break; }
      const mid = roundRate((lo.rate + hi.rate) / 2);
      if (mid <= lo.rate || mid >= hi.rate) break;
      const s = await run(mid, 'bisect');
      if (s.passed) lo = s;
      else hi = s;
    }
    if (stoppedBy !== 'precision') break;
    if (outOfTime() || interrupted()) { stoppedBy = interrupted() ? 'interrupted' : 'max-duration'; break; }
    const c = await run(lo.rate, 'confirm');
    if (c.passed) {
      confirmed = c;
    } else {
      hi = c;
      // The highest rate below the failed one that passed (each passing step is a candidate).
      const below = steps.filter((s) => s.passed && s.rate < c.rate).sort((a, b) => b.rate - a.rate)[0];
      if (!below) return { capacity: null, firstFailure: { rate: c.rate, limit: c.limit! }, bracketed: true, stoppedBy: 'min-rate-failed', steps };
      lo = below;
    }
  }
  if (!hi && stoppedBy === 'precision') stoppedBy = 'max-rate';

  // Without a passed confirmation, the capacity is the highest rate whose own step passed.
  const best = confirmed ?? lo;
  return {
    capacity: { payments_per_s: best.rate, events_per_s: best.eventsPerS },
    firstFailure: hi ? { rate: hi.rate, limit: hi.limit! } : null,
    bracketed: confirmed !== undefined,
    stoppedBy,
    steps,
  };
}
