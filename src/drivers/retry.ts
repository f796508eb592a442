/**
 * The one retry/backoff policy of the drivers (as kafkajs decides retrying in one module): how
 * long to wait between attempts, when to give up, and what a failing handler costs.
 *
 * - `backoffDelays` yields the waits: `initialMs`, then × `factor` each time, at most `maxMs`,
 *   each spread by ±`jitter` (a fraction) so clients that failed together do not retry together.
 * - `retry(fn, …)` calls `fn` until it resolves, an error is not retryable (`isRetryable`), the
 *   attempts run out, the deadline would pass before the next attempt (`deadlineMs` from the
 *   start, or the clock time `until`), `signal` aborts, or `stop` did before the next attempt; it
 *   then throws the last error (or `signal`'s abort reason). Connects, group joins, topic-leader waits and reconnects after a lost
 *   connection go through it, bounded by their own deadline (reconnects: `--reconnect-timeout`).
 *
 * Handler failures, the same on every driver (types.ts, DeliveryHandler): when a subscription's
 * handler throws, every delivery it left unsettled is nacked (given back for redelivery), and the
 * subscription hands out nothing more for a pause that grows with each consecutive failing call
 * (`HANDLER_FAILURE_BACKOFF`: 50 ms doubling up to 2 s) and starts again at the first call that
 * succeeds — like a consumer that keeps retrying, without spinning on a poison message. A
 * subscription has no error channel: the handler reports its own errors. Closing ends a pause.
 */

export interface BackoffOptions {
  /** The first wait. */
  initialMs: number;
  /** No wait is longer than this (jitter included). */
  maxMs: number;
  /** Each wait is the previous one times this; default 2. */
  factor?: number;
  /** Each wait is spread by ± this fraction of it (0 … 1); default 0.2. */
  jitter?: number;
}

/** Time as retry sees it: injected in tests so no test waits for real. */
export interface RetryClock {
  now(): number;
  /** Resolves after `ms`, or rejects at once with the abort reason when `signal` aborts. */
  sleep(ms: number, signal?: AbortSignal): Promise<void>;
}

export const systemRetryClock: RetryClock = {
  now: () => Date.now(),
  sleep: (ms, signal) =>
    new Promise<void>((resolve, reject) => {
      if (signal?.aborted) {
        reject(abortReason(signal));
        return;
      }
      const onAbort = () => {
        clearTimeout(timer);
        reject(abortReason(signal!));
      };
      const timer = setTimeout(() => {
        signal?.removeEventListener('abort', onAbort);
        resolve();
      }, ms);
      signal?.addEventListener('abort', onAbort, { once: true });
    }),
};

function abortReason(signal: AbortSignal): unknown {
  return signal.reason ?? new Error('aborted');
}

/** The waits between attempts, without end (the caller stops taking them). */
export function* backoffDelays(options: BackoffOptions, random: () => number = Math.random): Generator<number, never> {
  const factor = options.factor ?? 2;
  const jitter = Math.min(1, Math.max(0, options.jitter ?? 0.2));
  let base = Math.max(0, Math.min(options.initialMs, options.maxMs));
  for (;;) {
    const spread = jitter === 0 ? 0 : base * jitter * (2 * random() - 1);
    yield Math.round(Math.max(0, Math.min(options.maxMs, base + spread)));
    base = Math.min(options.maxMs, base * factor);
  }
}

export interface RetryOptions {
  backoff: BackoffOptions;
  /** Whether an error is worth another attempt; default: every error. */
  isRetryable?: (err: unknown, attempt: number) => boolean;
  /** At most this many calls of `fn` in all; default: no limit but the deadline. */
  attempts?: number;
  /** Give up when the next attempt would start more than this long after the first. */
  deadlineMs?: number;
  /** Give up when the next attempt would start after this clock time (ms). */
  until?: number;
  /** Wait the first backoff delay before the first attempt too (a reconnect after a loss). */
  delayFirst?: boolean;
  /** Told of each failed attempt that will be retried, and the wait before the next. */
  onRetry?: (err: unknown, attempt: number, delayMs: number) => void;
  signal?: AbortSignal;
  /**
   * No new attempt once this aborts (the command's stop, common.ts DriverStop): unlike `signal`,
   * the attempt under way and a first attempt still run, a wait under way ends at once, and the
   * last attempt's own error is thrown.
   */
  stop?: AbortSignal;
  clock?: RetryClock;
  random?: () => number;
}

/** Calls `fn(attempt)` (attempt 1, 2, …) until it resolves or retrying ends (see the header). */
export async function retry<T>(fn: (attempt: number) => Promise<T>, options: RetryOptions): Promise<T> {
  const clock = options.clock ?? systemRetryClock;
  const { signal, stop } = options;
  const wake = signal && stop ? AbortSignal.any([signal, stop]) : (signal ?? stop);
  const start = clock.now();
  const deadlines = [options.until, options.deadlineMs === undefined ? undefined : start + options.deadlineMs].filter(
    (d): d is number => d !== undefined,
  );
  const until = deadlines.length === 0 ? Infinity : Math.min(...deadlines);
  const delays = backoffDelays(options.backoff, options.random);
  if (options.delayFirst) await clock.sleep(delays.next().value, signal);
  for (let attempt = 1; ; attempt++) {
    if (signal?.aborted) throw abortReason(signal);
    try {
      return await fn(attempt);
    } catch (err) {
      if (signal?.aborted) throw abortReason(signal);
      if (stop?.aborted) throw err;
      if (options.attempts !== undefined && attempt >= options.attempts) throw err;
      if (options.isRetryable && !options.isRetryable(err, attempt)) throw err;
      const delay = delays.next().value;
      if (clock.now() + delay > until) throw err;
      options.onRetry?.(err, attempt, delay);
      try {
        await clock.sleep(delay, wake);
      } catch (woken) {
        if (signal?.aborted) throw abortReason(signal);
        if (stop?.aborted) throw err;
        throw woken;
      }
    }
  }
}

/** Handler failures: see the header. */
export const HANDLER_FAILURE_BACKOFF: BackoffOptions = { initialMs: 50, maxMs: 2000, factor: 2, jitter: 0 };

/**
 * The pause after each consecutive failing handler call (see the header), reset by a success;
 * one per subscription, stopped when it closes.
 */
export class HandlerFailures {
  private delays: Generator<number, never> | undefined;
  private readonly stopped = new AbortController();

  constructor(private readonly clock: RetryClock = systemRetryClock) {}

  /** A handler call failed (its deliveries are nacked): resolves when more may be handed out. */
  async failed(): Promise<void> {
    if (this.stopped.signal.aborted) return;
    this.delays ??= backoffDelays(HANDLER_FAILURE_BACKOFF);
    await this.clock.sleep(this.delays.next().value, this.stopped.signal).catch(() => undefined);
  }

  succeeded(): void {
    this.delays = undefined;
  }

  /** Ends the pause under way, and skips any later one: the subscription is closing. */
  stop(): void {
    this.stopped.abort();
  }
}
