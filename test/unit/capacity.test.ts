import { describe, expect, it } from 'vitest';
import { findCapacity, type StepMeasurement } from '../../src/core/capacity.js';
import type { Clock } from '../../src/core/clock.js';

/** A clock that moves only when a step "runs" (each step costs its duration). */
function stepClock(): Clock & { advance(ms: number): void } {
  let us = 0;
  return { nowUs: () => us, sleep: async () => {}, advance: (ms) => (us += ms * 1000) };
}

/**
 * A pipeline model: one server with capacity C payments/s and a base p99 of `baseMs`; the p99 at
 * rate r grows like an M/M/1 queue, baseMs / (1 − r/C); above C it does not keep up.
 */
function model(C: number, baseMs: number, sloMs: number, clock: ReturnType<typeof stepClock>, stepMs = 30_000) {
  const knee = C * (1 - baseMs / sloMs); // the highest rate whose p99 meets the SLO
  const run = async (rate: number): Promise<StepMeasurement> => {
    clock.advance(stepMs);
    const achieved = Math.min(rate, C);
    const p99 = rate >= C ? Infinity : baseMs / (1 - rate / C);
    return { achievedRate: achieved, backlogBounded: rate < C, breaches: p99 < sloMs ? [] : [`p99_ms<${sloMs}`], eventsPerS: achieved * 3.8 };
  };
  return { knee, run };
}

describe('capacity search (bench --find-max)', () => {
  for (const [C, base, slo, minRate] of [
    [3000, 10, 250, 100],
    [800, 40, 50, 10],
    [120_000, 0.5, 50, 1000],
    [17, 5, 250, 1],
  ] as const) {
    it(`brackets the knee within the precision: capacity ${C}/s, p99 ${base} ms → SLO ${slo} ms`, async () => {
      const clock = stepClock();
      const m = model(C, base, slo, clock);
      const r = await findCapacity(m.run, { minRate, precision: 0.05, maxDurationMs: 60 * 60_000 }, clock);
      expect(r.capacity).not.toBeNull();
      const cap = r.capacity!.payments_per_s;
      expect(cap).toBeLessThan(m.knee); // never a rate whose step failed
      expect(cap).toBeGreaterThanOrEqual(m.knee * (1 - 0.05) * 0.999);
      expect(r.bracketed).toBe(true);
      expect(r.stoppedBy).toBe('precision');
      expect(r.firstFailure!.rate).toBeGreaterThan(cap);
      expect(r.firstFailure!.limit).toMatch(/p99_ms|kept up|backlog/);
      // The last step is the confirming run at the capacity, and it passed.
      const last = r.steps.at(-1)!;
      expect(last).toMatchObject({ phase: 'confirm', rate: cap, passed: true });
      // Geometric search first, then bisection.
      expect(r.steps[0]!.rate).toBe(minRate);
      expect(r.steps.some((s) => s.phase === 'bisect')).toBe(true);
    });
  }

  it('reports no capacity when even the lowest rate breaks an SLO', async () => {
    const clock = stepClock();
    const m = model(1000, 300, 250, clock);
    const r = await findCapacity(m.run, { minRate: 10, precision: 0.05, maxDurationMs: 600_000 }, clock);
    expect(r.capacity).toBeNull();
    expect(r.stoppedBy).toBe('min-rate-failed');
    expect(r.firstFailure).toEqual({ rate: 10, limit: 'p99_ms<250' });
  });

  it('a step that did not keep up or whose backlog grew fails even when every SLO held', async () => {
    const clock = stepClock();
    // No SLO ever breaks; only keeping up limits (capacity 500/s).
    const run = async (rate: number): Promise<StepMeasurement> => {
      clock.advance(10_000);
      return { achievedRate: Math.min(rate, 500), backlogBounded: rate <= 500, breaches: [], eventsPerS: Math.min(rate, 500) * 4 };
    };
    const r = await findCapacity(run, { minRate: 50, precision: 0.02, maxDurationMs: 3_600_000 }, clock);
    expect(r.capacity!.payments_per_s).toBeLessThanOrEqual(500);
    expect(r.capacity!.payments_per_s).toBeGreaterThanOrEqual(490);
    expect(r.firstFailure!.limit).toMatch(/^(kept up|backlog)$/);
  });

  it('never reports a capacity whose step failed, even on a noisy pipeline', async () => {
    // Near the knee a step passes or fails by chance: a failed confirmation must lower the bound.
    let seed = 7;
    const rand = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31);
    for (let trial = 0; trial < 50; trial++) {
      const clock = stepClock();
      const results = new Map<number, boolean[]>();
      const run = async (rate: number): Promise<StepMeasurement> => {
        clock.advance(20_000);
        const passed = rate < 900 || (rate < 1100 && rand() < 0.5);
        results.set(rate, [...(results.get(rate) ?? []), passed]);
        return { achievedRate: rate, backlogBounded: true, breaches: passed ? [] : ['p99_ms<250'], eventsPerS: rate * 4 };
      };
      const r = await findCapacity(run, { minRate: 100, precision: 0.05, maxDurationMs: 3_600_000 }, clock);
      if (r.capacity === null) continue;
      const cap = r.capacity.payments_per_s;
      // The capacity's latest step at that rate passed.
      const confirming = r.steps.filter((s) => s.rate === cap).at(-1)!;
      expect(confirming.passed).toBe(true);
      expect(cap).toBeLessThan(1100);
    }
  });

  it('stops at --max-duration with the best rate so far, saying it did not bracket', async () => {
    const clock = stepClock();
    const m = model(100_000, 1, 250, clock, 60_000);
    const r = await findCapacity(m.run, { minRate: 10, precision: 0.05, maxDurationMs: 5 * 60_000 }, clock);
    expect(r.stoppedBy).toBe('max-duration');
    expect(r.bracketed).toBe(false);
    expect(r.steps.length).toBe(5);
    expect(r.capacity!.payments_per_s).toBe(160); // 10, 20, 40, 80, 160: all passed
    expect(r.steps.every((s) => s.passed)).toBe(true);
  });

  it('stops at --max-rate when the pipeline holds it', async () => {
    const clock = stepClock();
    const m = model(100_000, 1, 250, clock);
    const r = await findCapacity(m.run, { minRate: 100, maxRate: 1000, precision: 0.05, maxDurationMs: 3_600_000 }, clock);
    expect(r.stoppedBy).toBe('max-rate');
    expect(r.capacity!.payments_per_s).toBe(1000);
    expect(r.firstFailure).toBeNull();
  });
});
