/**
 * Paced batch sending, shared by `produce` and `replay-dlq`: batches go out with at most
 * `maxInFlight` of them unconfirmed and, with a rate, every message takes a send slot of an
 * open-loop schedule (rate-limiter.ts: the time it was *meant* to go, never "now"). The schedule
 * starts at `start()`, or else when the first slot is taken.
 */
import type { Clock } from './clock.js';
import { RateLimiter } from './rate-limiter.js';

export interface PacedSenderOptions {
  clock: Clock;
  /** Cuts the waits for a send slot short. */
  signal?: AbortSignal | undefined;
  /** Messages per second; undefined: not paced. */
  rate: number | undefined;
  /** Batches sent and not yet settled, at most. */
  maxInFlight: number;
}

export class PacedSender {
  private readonly running = new Set<Promise<void>>();
  private limiter: RateLimiter | undefined;

  constructor(private readonly options: PacedSenderOptions) {}

  get paced(): boolean {
    return this.options.rate !== undefined;
  }

  /** Starts the schedule at `startUs` (paced only; a started schedule stays as it is). */
  start(startUs: number): void {
    if (this.options.rate !== undefined) this.limiter ??= new RateLimiter(this.options.rate, startUs);
  }

  private schedule(): RateLimiter {
    const { rate, clock } = this.options;
    if (rate === undefined) throw new RangeError('an unpaced sender has no send slots');
    return (this.limiter ??= new RateLimiter(rate, clock.nowUs()));
  }

  /** How many send slots are due at `nowUs`: 0 or less while the next one is still to come. */
  due(nowUs: number): number {
    const limiter = this.schedule();
    return Math.floor((nowUs - limiter.peekUs()) / (1e6 / this.options.rate!)) + 1;
  }

  /** Sleeps until the next send slot is due. */
  async untilNext(nowUs: number): Promise<void> {
    await this.options.clock.sleep(Math.max(0, (this.schedule().peekUs() - nowUs) / 1000), this.options.signal);
  }

  /** Takes `n` send slots: their intended times (epoch µs). */
  take(n: number): number[] {
    const limiter = this.schedule();
    const out = new Array<number>(n);
    for (let i = 0; i < n; i++) out[i] = limiter.takeUs();
    return out;
  }

  /** Takes `n` send slots and sleeps until the last of them is due: a whole batch goes at once. */
  async takeAll(n: number): Promise<void> {
    const { clock, signal } = this.options;
    const slots = this.take(n);
    const waitMs = ((slots[n - 1] ?? 0) - clock.nowUs()) / 1000;
    if (waitMs > 0) await clock.sleep(waitMs, signal);
  }

  /** `maxInFlight` batches are in flight: wait for `room()` before sending another. */
  get full(): boolean {
    return this.running.size >= this.options.maxInFlight;
  }

  /** Waits until fewer than `maxInFlight` batches are in flight. */
  async room(): Promise<void> {
    while (this.running.size >= this.options.maxInFlight) await Promise.race(this.running);
  }

  /** Tracks a batch's send until it settles; `send` handles its own failure. */
  track(send: Promise<void>): void {
    const tracked = send.finally(() => this.running.delete(tracked));
    this.running.add(tracked);
  }

  /** Waits for every batch in flight. */
  async settle(): Promise<void> {
    await Promise.all(this.running);
  }
}
