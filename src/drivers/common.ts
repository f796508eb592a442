/**
 * What every network driver does the same way: the error for a driver used after close(), and
 * keeping track of the subscriptions it has started (close() closes them).
 */
import { DeliveryError } from '../errors.js';
import type { LinkStatus } from './types.js';

/** A driver used after close(): the caller's bug, said alike by every driver. */
export function usedAfterClose(broker: string, redactedUrl: string, what: string): DeliveryError {
  return new DeliveryError(`${broker} ${redactedUrl}: ${what} after the driver was closed`, {
    hint: 'a bug in the caller: close() ends the driver for good',
  });
}

/** Starts a subscription, tracked in `live` from the start (a close() meanwhile closes it too); forgotten if it fails to start. */
export async function startTracked<S extends { start(): Promise<S> }>(live: Set<S>, subscription: S): Promise<S> {
  live.add(subscription);
  try {
    return await subscription.start();
  } catch (err) {
    live.delete(subscription);
    throw err;
  }
}

/**
 * Keeps a driver's LinkStatus: `lost()` when it finds its broker gone, `restored()` when a new
 * connection works. Outages are timed on the monotonic clock.
 */
export class LinkMonitor {
  private connectedNow = false;
  private everConnected = false;
  private reconnectCount = 0;
  private downTotalMs = 0;
  private downSince: number | undefined;

  constructor(private readonly now: () => number = () => performance.now()) {}

  /** A connection works (the first one, or again after a loss). */
  restored(): void {
    if (this.connectedNow) return;
    if (this.downSince !== undefined) {
      this.downTotalMs += this.now() - this.downSince;
      this.downSince = undefined;
    }
    if (this.everConnected) this.reconnectCount++;
    this.connectedNow = true;
    this.everConnected = true;
  }

  /** The broker went away; an outage starts now (once, however many times it is said). */
  lost(): void {
    if (!this.connectedNow) return;
    this.connectedNow = false;
    this.downSince = this.now();
  }

  status(): LinkStatus {
    const current = this.downSince === undefined ? 0 : this.now() - this.downSince;
    return { connected: this.connectedNow, reconnects: this.reconnectCount, downMs: this.downTotalMs + current };
  }
}

/**
 * An outage is under way: the driver had its broker and lost it (not merely never connected).
 * Idle timeouts don't count while it lasts (README "Failure drills").
 */
export function brokerAway(link: LinkStatus): boolean {
  return !link.connected && link.downMs > 0;
}
