/**
 * The lifecycle helpers every driver shares, written once: what a driver takes from its
 * descriptor, the error for a driver used after close(), work that close() lets settle first,
 * subscriptions tracked from the start so close() closes them, a deadline on a promise, the
 * command's stop (DriverStop), and the refusal to dead-letter what a tap saw.
 * Retrying and handler failures are retry.ts.
 */
import { setMaxListeners } from 'node:events';
import { DeliveryError, InterruptedError, UsageError } from '../errors.js';
import { STOP_GRACE_MS, type DriverCapabilities, type DriverDescriptor, type DriverTuning, type HeaderBinding, type LinkStatus } from './types.js';

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

/** `work`, or `onAbort()`'s error as soon as `signal` aborts (work itself goes on; its failure is then ignored). */
function unlessAborted<T>(work: Promise<T>, signal: AbortSignal, onAbort: () => Error): Promise<T> {
  if (signal.aborted) {
    work.catch(() => undefined);
    return Promise.reject(onAbort());
  }
  return new Promise<T>((resolve, reject) => {
    const abort = () => {
      work.catch(() => undefined);
      reject(onAbort());
    };
    signal.addEventListener('abort', abort, { once: true });
    work.then(
      (value) => {
        signal.removeEventListener('abort', abort);
        resolve(value);
      },
      (err: unknown) => {
        signal.removeEventListener('abort', abort);
        reject(err);
      },
    );
  });
}

/**
 * The command's stop as a driver keeps it (DriverOptions.signal): starting work gives up at the
 * stop, work in flight `graceMs` later. `signal` aborts at the stop with an InterruptedError as
 * its reason: as retry()'s `signal` for starting work (it then throws that), as its `stop` for
 * work in flight (no attempt after a failure, the failure itself is thrown).
 */
export class DriverStop {
  private readonly stopped = new AbortController();
  private readonly graceOver = new AbortController();

  constructor(
    signal: AbortSignal | undefined,
    private readonly broker: string,
    private readonly graceMs = STOP_GRACE_MS,
  ) {
    // Every subscribe and send under way listens: many at once is normal here, not a leak.
    setMaxListeners(0, this.stopped.signal, this.graceOver.signal);
    if (!signal) return;
    const stop = () => {
      this.stopped.abort(new InterruptedError(`interrupted: ${broker} was not waited for`));
      // Not unref()ed: work that never settles (a client waiting on a socket gone) ends with the grace.
      setTimeout(() => this.graceOver.abort(), graceMs);
    };
    if (signal.aborted) stop();
    else signal.addEventListener('abort', stop, { once: true });
  }

  /** Aborts at the stop (reason: an InterruptedError). */
  get signal(): AbortSignal {
    return this.stopped.signal;
  }

  get isStopped(): boolean {
    return this.stopped.signal.aborted;
  }

  /** Starting work (`what`: "connecting", "subscribing to …"): InterruptedError at the stop. */
  starting<T>(work: Promise<T>, what: string): Promise<T> {
    return unlessAborted(work, this.stopped.signal, () => new InterruptedError(`interrupted while ${what} (${this.broker})`));
  }

  /** Work in flight: goes on after the stop, for at most the grace; then `onOver()`'s error. */
  inFlight<T>(work: Promise<T>, onOver: () => Error): Promise<T> {
    return unlessAborted(work, this.graceOver.signal, onOver);
  }

  /** The grace after the stop, in seconds, for messages. */
  get graceS(): number {
    return this.graceMs / 1000;
  }
}

/**
 * Keeps a driver's LinkStatus: `lost()` when it finds its broker gone, `restored()` when a new
 * connection works. Outages are timed on the monotonic clock. One that lasts longer than the
 * driver's reconnect timeout makes the link `gone`, and it stays so: the driver has given up
 * reconnecting by then (README "Failure drills"), whatever it does later.
 */
export class LinkMonitor {
  private connectedNow = false;
  private everConnected = false;
  private reconnectCount = 0;
  private downTotalMs = 0;
  private downSince: number | undefined;
  private goneForGood = false;

  constructor(
    private readonly reconnectTimeoutMs: number,
    private readonly now: () => number = () => performance.now(),
  ) {}

  /** A connection works (the first one, or again after a loss). */
  restored(): void {
    if (this.connectedNow) return;
    if (this.downSince !== undefined) {
      this.outageLasted(this.now() - this.downSince);
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
    this.outageLasted(current);
    return { connected: this.connectedNow, reconnects: this.reconnectCount, downMs: this.downTotalMs + current, gone: this.goneForGood };
  }

  private outageLasted(ms: number): void {
    if (ms > this.reconnectTimeoutMs) this.goneForGood = true;
  }
}

/**
 * An outage is under way: the driver had its broker and lost it (not merely never connected).
 * Idle timeouts don't count while it lasts (README "Failure drills").
 */
export function brokerAway(link: LinkStatus): boolean {
  return !link.connected && link.downMs > 0;
}
