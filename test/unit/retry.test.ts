import { describe, expect, it } from 'vitest';
import { backoffDelays, HandlerFailures, HANDLER_FAILURE_BACKOFF, retry, type RetryClock } from '../../src/drivers/retry.js';

/** A clock that only moves when retry sleeps: records every sleep. */
function fakeClock(start = 1_000): RetryClock & { slept: number[] } {
  let now = start;
  const slept: number[] = [];
  return {
    slept,
    now: () => now,
    sleep: (ms, signal) => {
      if (signal?.aborted) return Promise.reject(signal.reason);
      slept.push(ms);
      now += ms;
      return Promise.resolve();
    },
  };
}

function take(n: number, delays: Iterator<number>): number[] {
  return Array.from({ length: n }, () => delays.next().value as number);
}

describe('backoffDelays', () => {
  it('grows by the factor up to the maximum, without jitter', () => {
    expect(take(6, backoffDelays({ initialMs: 100, maxMs: 1000, factor: 3, jitter: 0 }))).toEqual([100, 300, 900, 1000, 1000, 1000]);
  });

  it('spreads each delay by ± jitter, never above the maximum', () => {
    const low = take(4, backoffDelays({ initialMs: 100, maxMs: 400, jitter: 0.5 }, () => 0));
    const high = take(4, backoffDelays({ initialMs: 100, maxMs: 400, jitter: 0.5 }, () => 1));
    expect(low).toEqual([50, 100, 200, 200]);
    expect(high).toEqual([150, 300, 400, 400]);
  });

  it('defaults to doubling', () => {
    expect(take(3, backoffDelays({ initialMs: 10, maxMs: 100, jitter: 0 }))).toEqual([10, 20, 40]);
  });
});

describe('retry', () => {
  const backoff = { initialMs: 100, maxMs: 1000, jitter: 0 };

  it('returns the first success, waiting the backoff between failures', async () => {
    const clock = fakeClock();
    const seen: Array<[number, number]> = [];
    const result = await retry(
      async (attempt) => {
        if (attempt < 4) throw new Error(`fail ${attempt}`);
        return attempt;
      },
      { backoff, clock, onRetry: (_err, attempt, delay) => seen.push([attempt, delay]) },
    );
    expect(result).toBe(4);
    expect(clock.slept).toEqual([100, 200, 400]);
    expect(seen).toEqual([[1, 100], [2, 200], [3, 400]]);
  });

  it('throws the last error when the attempts run out', async () => {
    const clock = fakeClock();
    let calls = 0;
    await expect(
      retry(async (attempt) => {
        calls++;
        throw new Error(`fail ${attempt}`);
      }, { backoff, clock, attempts: 3 }),
    ).rejects.toThrow('fail 3');
    expect(calls).toBe(3);
    expect(clock.slept).toEqual([100, 200]);
  });

  it('throws at once an error that is not retryable', async () => {
    const clock = fakeClock();
    await expect(
      retry(async (attempt) => {
        throw new Error(attempt === 2 ? 'fatal' : 'transient');
      }, { backoff, clock, isRetryable: (err) => (err as Error).message === 'transient' }),
    ).rejects.toThrow('fatal');
    expect(clock.slept).toEqual([100]);
  });

  it('gives up when the next attempt would start past the deadline', async () => {
    const clock = fakeClock();
    let calls = 0;
    await expect(
      retry(async () => {
        calls++;
        throw new Error('down');
      }, { backoff, clock, deadlineMs: 750 }),
    ).rejects.toThrow('down');
    // 100 + 200 + 400 = 700 ≤ 750; the next wait (800) would end past it.
    expect(clock.slept).toEqual([100, 200, 400]);
    expect(calls).toBe(4);
  });

  it('takes an absolute deadline too, the earlier one winning', async () => {
    const clock = fakeClock(5_000);
    await expect(retry(async () => Promise.reject(new Error('down')), { backoff, clock, until: 5_350, deadlineMs: 10_000 })).rejects.toThrow(
      'down',
    );
    expect(clock.slept).toEqual([100, 200]);
  });

  it('waits before the first attempt when asked (a reconnect)', async () => {
    const clock = fakeClock();
    await retry(async (attempt) => {
      if (attempt === 1) throw new Error('still down');
    }, { backoff, clock, delayFirst: true });
    expect(clock.slept).toEqual([100, 200]);
  });

  it('stops with the abort reason once the signal aborts', async () => {
    const clock = fakeClock();
    const controller = new AbortController();
    const reason = new Error('closed');
    let calls = 0;
    await expect(
      retry(async () => {
        calls++;
        if (calls === 2) controller.abort(reason);
        throw new Error('down');
      }, { backoff, clock, signal: controller.signal }),
    ).rejects.toBe(reason);
    expect(calls).toBe(2);
  });

  it('sleeps for real with the system clock and ends a sleep when aborted', async () => {
    const controller = new AbortController();
    const pending = retry(async () => Promise.reject(new Error('down')), {
      backoff: { initialMs: 60_000, maxMs: 60_000, jitter: 0 },
      signal: controller.signal,
    });
    controller.abort(new Error('closed'));
    await expect(pending).rejects.toThrow('closed');
  });
});

describe('HandlerFailures', () => {
  it('pauses longer after each consecutive failure and starts over after a success', async () => {
    const clock = fakeClock();
    const failures = new HandlerFailures(clock);
    for (let i = 0; i < 8; i++) await failures.failed();
    failures.succeeded();
    await failures.failed();
    const expected = take(8, backoffDelays(HANDLER_FAILURE_BACKOFF));
    expect(clock.slept).toEqual([...expected, expected[0]]);
    expect(expected[0]).toBeLessThan(expected[1]!);
    expect(Math.max(...expected)).toBe(HANDLER_FAILURE_BACKOFF.maxMs);
  });

  it('ends a pause under way and skips later ones once stopped', async () => {
    const failures = new HandlerFailures();
    const pausing = failures.failed();
    failures.stop();
    await pausing; // the system clock's 50 ms timer is cleared, not waited for
    const clock = fakeClock();
    const stopped = new HandlerFailures(clock);
    stopped.stop();
    await stopped.failed();
    expect(clock.slept).toEqual([]);
  });
});
