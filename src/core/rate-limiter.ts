/**
 * Open-loop pacing, as OpenMessaging Benchmark does it: the limiter hands out the time each send
 * was *meant* to happen (start + i / rate), never "now". A stalled broker therefore does not slow
 * the schedule down; the delay shows up as publish delay and in the latency measured from the
 * intended time (coordinated omission corrected).
 */
export class RateLimiter {
  private readonly intervalUs: number;
  private issued = 0;

  constructor(
    ratePerSecond: number,
    private readonly startUs: number,
  ) {
    if (!(ratePerSecond > 0)) throw new RangeError('rate must be positive');
    this.intervalUs = 1e6 / ratePerSecond;
  }

  /** Intended time of the next send, without taking it. */
  peekUs(): number {
    return this.startUs + this.issued * this.intervalUs;
  }

  /** Takes the next send slot and returns its intended time. */
  takeUs(): number {
    return this.startUs + this.issued++ * this.intervalUs;
  }

  get taken(): number {
    return this.issued;
  }
}
