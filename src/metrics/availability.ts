/**
 * Availability (PRODUCT.md §5): the share of the run's one-second windows in which the broker
 * accepted sends. A window is available when no send failed in it and either a send was
 * acknowledged in it or no send was waiting on the broker during it (an idle producer is not an
 * outage; a send that hangs through a whole window is). Fed by bench's metered driver.
 */

export interface AvailabilityWindows {
  /** One-second windows in the run (the last, partial one included). */
  total: number;
  available: number;
}

const WINDOW_US = 1_000_000;

export class AvailabilityTracker {
  private readonly acked: number[] = [];
  private readonly failed: number[] = [];
  /** A send was waiting on the broker at some point of the window. */
  private readonly busy: boolean[] = [];
  private startUs: number | undefined;
  private endUs: number | undefined;
  /** Each window's verdict, once finished. */
  private verdicts: boolean[] = [];

  /** After finish(): whether the window holding `us` was available (undefined outside the run). */
  availableAt(us: number): boolean | undefined {
    if (this.startUs === undefined || us < this.startUs) return undefined;
    return this.verdicts[this.windowOf(us)];
  }

  /** Starts counting windows at `startUs`; sends settled before it are ignored. */
  start(startUs: number): void {
    this.startUs = startUs;
  }

  private windowOf(us: number): number {
    return Math.max(0, Math.floor((us - this.startUs!) / WINDOW_US));
  }

  /** A send that started at `sentUs` settled at `settledUs` (acknowledged or not). */
  settled(sentUs: number, settledUs: number, ok: boolean): void {
    if (this.startUs === undefined || settledUs < this.startUs) return;
    if (this.endUs !== undefined && settledUs > this.endUs) return;
    const last = this.windowOf(settledUs);
    for (let w = this.windowOf(sentUs); w <= last; w++) this.busy[w] = true;
    const counts = ok ? this.acked : this.failed;
    counts[last] = (counts[last] ?? 0) + 1;
  }

  /** Closes the run at `endUs`; `pendingSinceUs` are the start times of sends still waiting. */
  finish(endUs: number, pendingSinceUs: Iterable<number> = []): AvailabilityWindows {
    if (this.startUs === undefined) return { total: 0, available: 0 };
    this.endUs = endUs;
    const total = Math.max(1, Math.ceil((endUs - this.startUs) / WINDOW_US));
    const lastWindow = total - 1;
    for (const sentUs of pendingSinceUs) {
      for (let w = this.windowOf(sentUs); w <= lastWindow; w++) this.busy[w] = true;
    }
    let available = 0;
    this.verdicts = [];
    for (let w = 0; w < total; w++) {
      const ok = (this.failed[w] ?? 0) === 0 && ((this.acked[w] ?? 0) > 0 || !this.busy[w]);
      this.verdicts.push(ok);
      if (ok) available++;
    }
    return { total, available };
  }
}
