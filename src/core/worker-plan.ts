/**
 * What a worker stage does with one event, decided before any waiting happens: the processing
 * time and result of every attempt, the backoffs between them, and the final outcome. The plan
 * depends only on the event id, the stage, the seed and the failure switch (derive.ts), so a
 * worker that handles an event again — after a crash, a nack, on another machine — makes the
 * same decisions and emits the same child ids. Pure: unit-tested without a broker or a clock.
 */
import { attemptPrng, childEventId } from '../events/derive.js';
import { sampleMs } from '../events/distributions.js';
import type { Stage } from '../events/scenario.js';

/** Dead-letter reasons, as written to the `payq-dlq-reason` header. */
export const DeadLetterReason = {
  undecodable: 'undecodable',
  unexpectedType: 'unexpected-type',
  permanentFailure: 'permanent-failure',
  retriesExhausted: 'retries-exhausted',
} as const;
export type DeadLetterReason = (typeof DeadLetterReason)[keyof typeof DeadLetterReason];
export const DEAD_LETTER_REASONS: readonly DeadLetterReason[] = Object.values(DeadLetterReason);

export interface DecisionPolicy {
  /** Seed of the decisions (`--seed`), independent of the generator's seed. */
  seed: number;
  /** false: every failure rate is 0 (`--failures off`); the draws stay the same. */
  failures: boolean;
  /** Multiplies processing times (0: no waiting at all). Backoffs are not scaled: they are policy. */
  timeScale: number;
}

export interface AttemptPlan {
  /** 1-based. */
  attempt: number;
  /** How long this attempt works before its result is known (already scaled). */
  processingMs: number;
  /**
   * The processing time as drawn from the scenario, before the time scale: how long the attempt
   * takes on the payment's business clock (worker-stage.ts), whatever the simulation's speed.
   */
  drawnMs: number;
  result: 'success' | 'transient' | 'permanent';
  /** Wait after this attempt before the next one; 0 when there is no next one. */
  backoffMs: number;
}

export type HandlingPlan =
  | { kind: 'success'; attempts: AttemptPlan[]; /** Index into stage.outcomes, or -1: emits nothing. */ outcome: number }
  | { kind: 'dead-letter'; attempts: AttemptPlan[]; reason: 'permanent-failure' | 'retries-exhausted' };

/** initial_ms × multiplier^(attempt-1), capped at max_ms. */
export function backoffMs(stage: Stage, attempt: number): number {
  const { initial_ms, multiplier, max_ms } = stage.retry.backoff;
  return Math.min(max_ms, initial_ms * multiplier ** (attempt - 1));
}

export function planHandling(stage: Stage, eventId: string, policy: DecisionPolicy): HandlingPlan {
  const permanent = policy.failures ? stage.failures.permanent : 0;
  const transient = policy.failures ? stage.failures.transient : 0;
  const max = stage.retry.max_attempts;
  const attempts: AttemptPlan[] = [];
  for (let a = 1; a <= max; a++) {
    const prng = attemptPrng(eventId, stage.name, a, policy.seed);
    const drawnMs = sampleMs(stage.processing, prng);
    const processingMs = drawnMs * policy.timeScale;
    const u = prng.next();
    if (u < permanent) {
      attempts.push({ attempt: a, processingMs, drawnMs, result: 'permanent', backoffMs: 0 });
      return { kind: 'dead-letter', attempts, reason: DeadLetterReason.permanentFailure };
    }
    if (u < permanent + transient) {
      const last = a === max;
      attempts.push({ attempt: a, processingMs, drawnMs, result: 'transient', backoffMs: last ? 0 : backoffMs(stage, a) });
      if (last) return { kind: 'dead-letter', attempts, reason: DeadLetterReason.retriesExhausted };
      continue;
    }
    attempts.push({ attempt: a, processingMs, drawnMs, result: 'success', backoffMs: 0 });
    const pick = prng.next();
    return { kind: 'success', attempts, outcome: stage.outcomeCumulative.findIndex((c) => pick < c) };
  }
  // max_attempts is at least 1 (scenario schema), so the loop always returns.
  throw new RangeError(`stage ${stage.name}: retry.max_attempts must be at least 1`);
}

/**
 * How long a handling takes on the payment's business clock (ms): every attempt's drawn
 * processing time and the backoffs between them. Its emitted events occur this long after their
 * input, so a payment's events move forward on one clock (README, "Events").
 */
export function businessMs(attempts: readonly AttemptPlan[]): number {
  let ms = 0;
  for (const a of attempts) ms += a.drawnMs + a.backoffMs;
  return ms;
}

/** The error text of a dead letter the plan decided on. */
export function failureText(stage: Stage, plan: Extract<HandlingPlan, { kind: 'dead-letter' }>): string {
  const n = plan.attempts.length;
  return plan.reason === DeadLetterReason.permanentFailure
    ? `simulated permanent failure in stage ${stage.name} at attempt ${n} (p=${stage.failures.permanent})`
    : `simulated transient failure in stage ${stage.name} on all ${n} attempts (p=${stage.failures.transient})`;
}

export interface ChildPlan {
  id: string;
  type: string;
  /** Index within the outcome; the id's derivation input. */
  index: number;
}

/** The events a successful handling emits, with their deterministic ids. */
export function childrenOf(stage: Stage, eventId: string, outcome: number): ChildPlan[] {
  if (outcome < 0) return [];
  const types = stage.outcomes[outcome]?.events ?? [];
  return types.map((type, index) => ({ id: childEventId(eventId, stage.name, index), type, index }));
}
