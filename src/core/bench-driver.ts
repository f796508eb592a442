/**
 * bench's view of the broker: a Driver that passes everything through to the real one and counts
 * on the way. Every send of the run (producers and workers alike) and every delivery to a
 * consuming subscription (the stages and bench's sink consumer; taps such as trace only observe)
 * passes here, so this is where loss (acknowledged vs consumed), availability (per-second send
 * outcomes) and the flat-out backlog bound are measured, without touching produce or worker.
 *
 * The books count events, by their CloudEvents id: an event acknowledged or consumed again is
 * counted once. A broker back from an outage hands out again what it did not know was acked
 * (after a SIGKILL, nats-server may even do so without the redelivered flag), workers handle
 * those again and emit the same event ids, and a delivery lost in transit at the loss comes back
 * flagged redelivered although it was never consumed: counting deliveries would take the first
 * for events consumed twice, the last for a loss (README "Loss probability").
 */
import type { Delivery, DeliveryHandler, DestinationSpec, Driver, LinkStatus, OutgoingMessage, SubscribeOptions, Subscription } from '../drivers/types.js';
import { ceId } from '../events/codec.js';
import { PayqHeader } from '../events/headers.js';
import { AvailabilityTracker, type AvailabilityWindows } from '../metrics/availability.js';
import type { Clock } from './clock.js';
import { RecentIdHashes } from './recent-ids.js';

/**
 * Event ids remembered each way to count an event once (4 MB each): more than an outage hands out
 * again at the rates a broker takes (what was unsettled or acked just before the loss, and the
 * children emitted again for it).
 */
const COUNTED_ONCE = 250_000;

/** Events of the measured run, counted once each way. */
export interface RunCounts {
  /** Sends of the run handed to the broker (events), acknowledged or not yet. */
  sent: number;
  /** Events of the run the broker acknowledged, each once. */
  acknowledged: number;
  /** Of the run's sends, those the broker refused or failed (events). */
  unacknowledged: number;
  /** Events of the run delivered to a consuming subscription, each once however often it came. */
  consumed: number;
  /** Deliveries the broker flagged as redelivered. */
  redelivered: number;
}

export class MeteredDriver implements Driver {
  readonly name: string;
  readonly capabilities: Driver['capabilities'];
  readonly tuning: Driver['tuning'];
  readonly headerBinding: Driver['headerBinding'];
  readonly url: Driver['url'];
  readonly availability = new AvailabilityTracker();
  readonly run: RunCounts = { sent: 0, acknowledged: 0, unacknowledged: 0, consumed: 0, redelivered: 0 };
  /** Events sent and not yet failed, minus deliveries to consumers: what waits in the broker. */
  private outstanding = 0;
  /** Activity of any run: lets bench tell a quiet pipeline from a busy one. */
  activity = 0;
  private readonly pending = new Map<number, number>();
  private nextSend = 0;
  private waiters: { below: number; resolve: () => void }[] = [];
  /** The run's event ids acknowledged and consumed lately: each counted once (see the top). */
  private readonly ackedIds = new RecentIdHashes(COUNTED_ONCE);
  private readonly consumedIds = new RecentIdHashes(COUNTED_ONCE);

  constructor(
    private readonly inner: Driver,
    private readonly clock: Clock,
    /** The measured run's id: only its events count in `run`. */
    private readonly runId: string,
  ) {
    this.name = inner.name;
    this.capabilities = inner.capabilities;
    this.tuning = inner.tuning;
    this.headerBinding = inner.headerBinding;
    this.url = inner.url;
  }

  /** Events sent (or being sent) and not yet handed to a consumer, over every run. */
  get backlog(): number {
    return this.outstanding;
  }

  /** Resolves once the backlog is below `below` (at once if it is), or when `signal` aborts. */
  backlogBelow(below: number, signal?: AbortSignal): Promise<void> {
    if (this.outstanding < below || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.push({ below, resolve: done });
      signal?.addEventListener('abort', done, { once: true });
    });
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (this.outstanding < w.below) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
  }

  /** Start times of the sends still waiting on the broker. */
  pendingSends(): Iterable<number> {
    return this.pending.values();
  }

  connect(): Promise<void> {
    return this.inner.connect();
  }

  declare(destinations: DestinationSpec[]): Promise<string[]> {
    return this.inner.declare(destinations);
  }

  exists(destinations: string[]): Promise<Set<string>> {
    return this.inner.exists(destinations);
  }

  send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    const n = messages.length;
    let ours = 0;
    for (let i = 0; i < n; i++) if (messages[i]!.headers[PayqHeader.runId] === this.runId) ours++;
    const sentUs = this.clock.nowUs();
    const id = this.nextSend++;
    this.pending.set(id, sentUs);
    this.run.sent += ours;
    this.outstanding += n;
    this.activity++;
    return this.inner.send(destination, messages).then(
      () => {
        this.pending.delete(id);
        if (ours > 0) this.acknowledge(messages);
        this.availability.settled(sentUs, this.clock.nowUs(), true);
      },
      (err: unknown) => {
        this.pending.delete(id);
        this.outstanding -= n;
        this.run.unacknowledged += ours;
        this.availability.settled(sentUs, this.clock.nowUs(), false);
        this.release();
        throw err;
      },
    );
  }

  /** The run's events of an acknowledged send, each counted once. */
  private acknowledge(messages: OutgoingMessage[]): void {
    for (let i = 0; i < messages.length; i++) {
      const headers = messages[i]!.headers;
      if (headers[PayqHeader.runId] !== this.runId) continue;
      const eventId = ceId(headers);
      if (eventId === undefined || this.ackedIds.addNew(eventId)) this.run.acknowledged++;
    }
  }

  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (options.tap) {
      // A tap only observes: it counts as activity (events still flow) and nothing else.
      return this.inner.subscribe(options, (deliveries: Delivery[]) => {
        this.activity++;
        return handler(deliveries);
      });
    }
    return this.inner.subscribe(options, (deliveries: Delivery[]) => {
      this.activity++;
      for (let i = 0; i < deliveries.length; i++) {
        const d = deliveries[i]!;
        const ours = d.headers[PayqHeader.runId] === this.runId;
        if (ours) {
          if (d.redelivered) this.run.redelivered++;
          const eventId = ceId(d.headers);
          if (eventId === undefined ? !d.redelivered : this.consumedIds.addNew(eventId)) this.run.consumed++;
        }
        if (!d.redelivered) this.outstanding--;
      }
      this.release();
      return handler(deliveries);
    });
  }

  brokerVersion(): Promise<string | undefined> {
    return this.inner.brokerVersion();
  }

  link(): LinkStatus {
    return this.inner.link();
  }

  /** Closes the real driver: bench owns it only when it created it, so the caller decides. */
  close(): Promise<void> {
    return this.inner.close();
  }

  /** The availability windows from the tracker's start to `endUs`. */
  windows(endUs: number): AvailabilityWindows {
    return this.availability.finish(endUs, this.pendingSends());
  }
}
