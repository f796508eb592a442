/**
 * The lifecycle helpers every driver shares, written once: what a driver takes from its
 * descriptor, the error for a driver used after close(), work that close() lets settle first, subscriptions tracked from the start so close()
 * closes them, a deadline on a promise, and the refusal to dead-letter what a tap saw.
 * Retrying and handler failures are retry.ts.
 */
import { DeliveryError, UsageError } from '../errors.js';
import type { DriverCapabilities, DriverDescriptor, DriverTuning, HeaderBinding, LinkStatus } from './types.js';

/** The part of a Driver its folder's descriptor declares: each driver class extends this. */
export abstract class DeclaredDriver {
  readonly name: string;
  readonly capabilities: DriverCapabilities;
  readonly tuning: DriverTuning;
  readonly headerBinding: HeaderBinding;

  protected constructor(descriptor: DriverDescriptor) {
    this.name = descriptor.name;
    this.capabilities = descriptor.capabilities;
    this.tuning = descriptor.tuning;
    this.headerBinding = descriptor.headerBinding;
  }
}

/** A driver used after close(): the caller's bug, said alike by every driver. */
export function usedAfterClose(broker: string, redactedUrl: string, what: string): DeliveryError {
  return new DeliveryError(`${broker} ${redactedUrl}: ${what} after the driver was closed`, {
    hint: 'a bug in the caller: close() ends the driver for good',
  });
}

/**
 * A tap delivery's deadLetter(), on every driver: a tap observes, the destination's own
 * consumers decide (a dead letter from the tap would be a duplicate).
 */
export function tapDeadLetterRefused(destination: string): UsageError {
  return new UsageError(`cannot dead-letter a message seen by a tap on ${destination}: a tap observes, the destination's consumers decide`);
}

/** Starts a subscription, tracked in `live` from the start (a close() meanwhile closes it too); forgotten if it fails to start. */
export async function startTracked<S extends { start(): Promise<unknown> }>(live: Set<S>, subscription: S): Promise<S> {
  live.add(subscription);
  try {
    await subscription.start();
    return subscription;
  } catch (err) {
    live.delete(subscription);
    throw err;
  }
}

/** Work under way (sends, dead letters) that a driver's close() lets settle before it closes. */
export class PendingWork {
  private readonly work = new Set<Promise<unknown>>();

  get size(): number {
    return this.work.size;
  }

  /** Remembers `work` until it settles; returns it unchanged. */
  track<T>(work: Promise<T>): Promise<T> {
    this.work.add(work);
    const forget = () => this.work.delete(work);
    work.then(forget, forget);
    return work;
  }

  /** Resolves when everything tracked so far has settled, however it did. */
  async settled(): Promise<void> {
    await Promise.allSettled([...this.work]);
  }
}

/** `work`, or the error `onTimeout` makes if it has not settled within `ms` (work itself goes on). */
export function withDeadline<T>(work: Promise<T>, ms: number, onTimeout: () => Error): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const deadline = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(onTimeout()), ms);
  });
  return Promise.race([work, deadline]).finally(() => clearTimeout(timer));
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
