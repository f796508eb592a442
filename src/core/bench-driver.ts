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
 *
 * With bench --procs N the run's parts are in threads, each with a metered driver of its own:
 * each keeps its own counts (its part of the run data, merged at the end), and adds them as it
 * goes into a LiveTally all of them share, which is what the drain and the backlog bound read; the
 * ids counted once are in it too, so an event is counted once over every thread.
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

const SLOTS = { acknowledged: 0, consumed: 1, outstanding: 2, activity: 3 } as const;
type Slot = keyof typeof SLOTS;
const SLOT_COUNT = Object.keys(SLOTS).length;
/** The counts, then the ids acknowledged, then the ids consumed. */
const TALLY_BYTES = SLOT_COUNT * 8 + 2 * RecentIdHashes.bytesFor(COUNTED_ONCE);

/**
 * The whole run's live counts, in memory that a bench run's threads share (a SharedArrayBuffer,
 * added to atomically): the run's acknowledged and consumed events, the events waiting in the
 * broker and the activity, over every thread's driver at once, as one process sees its own.
 */
export class LiveTally {
  private readonly slots: BigInt64Array;
  /** The run's event ids acknowledged and consumed lately, over every thread: each counted once (see the top). */
  readonly ackedIds: RecentIdHashes;
  readonly consumedIds: RecentIdHashes;

  constructor(readonly buffer: SharedArrayBuffer = new SharedArrayBuffer(TALLY_BYTES)) {
    this.slots = new BigInt64Array(buffer, 0, SLOT_COUNT);
    this.ackedIds = new RecentIdHashes(COUNTED_ONCE, { buffer, byteOffset: SLOT_COUNT * 8 });
    this.consumedIds = new RecentIdHashes(COUNTED_ONCE, { buffer, byteOffset: SLOT_COUNT * 8 + RecentIdHashes.bytesFor(COUNTED_ONCE) });
  }

  add(slot: Slot, n: number): void {
    if (n !== 0) Atomics.add(this.slots, SLOTS[slot], BigInt(n));
  }

  get(slot: Slot): number {
    return Number(Atomics.load(this.slots, SLOTS[slot]));
  }
}

/** How often a producer held back by the backlog looks again when other threads consume. */
const SHARED_BACKLOG_POLL_MS = 5;

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
  private readonly tally: LiveTally;
  /** The tally is other threads' too: their deliveries lower the backlog without this driver seeing them. */
  private readonly shared: boolean;
  private poll: NodeJS.Timeout | undefined;

  constructor(
    private readonly inner: Driver,
    private readonly clock: Clock,
    /** The measured run's id: only its events count in `run`. */
    private readonly runId: string,
    /** Shared with the other threads of one run (bench --procs); default: this driver's alone. */
    tally?: LiveTally,
  ) {
    this.tally = tally ?? new LiveTally();
    this.shared = tally !== undefined;
    this.name = inner.name;
    this.capabilities = inner.capabilities;
    this.tuning = inner.tuning;
    this.headerBinding = inner.headerBinding;
    this.url = inner.url;
  }

  /** Events sent (or being sent) and not yet handed to a consumer, over every run and every thread. */
  get backlog(): number {
    return this.tally.get('outstanding');
  }

  /** This driver's part of the backlog (its sends minus its deliveries): what its part's series shows. */
  get ownBacklog(): number {
    return this.outstanding;
  }

  /** The run's counts over every thread (this driver's own when it shares its tally with none). */
  get whole(): { acknowledged: number; consumed: number; activity: number } {
    return { acknowledged: this.tally.get('acknowledged'), consumed: this.tally.get('consumed'), activity: this.tally.get('activity') };
  }

  /** Resolves once the backlog is below `below` (at once if it is), or when `signal` aborts. */
  backlogBelow(below: number, signal?: AbortSignal): Promise<void> {
    if (this.backlog < below || signal?.aborted) return Promise.resolve();
    return new Promise((resolve) => {
      const done = () => {
        signal?.removeEventListener('abort', done);
        resolve();
      };
      this.waiters.push({ below, resolve: done });
      signal?.addEventListener('abort', done, { once: true });
      if (this.shared) this.poll ??= setInterval(() => this.release(), SHARED_BACKLOG_POLL_MS).unref();
    });
  }

  private release(): void {
    if (this.waiters.length === 0) return;
    const backlog = this.backlog;
    const still: typeof this.waiters = [];
    for (const w of this.waiters) {
      if (backlog < w.below) w.resolve();
      else still.push(w);
    }
    this.waiters = still;
    if (still.length === 0 && this.poll) {
      clearInterval(this.poll);
      this.poll = undefined;
    }
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
    this.tally.add('outstanding', n);
    this.tally.add('activity', 1);
    return this.inner.send(destination, messages).then(
      () => {
        this.pending.delete(id);
        if (ours > 0) this.acknowledge(messages);
        this.availability.settled(sentUs, this.clock.nowUs(), true);
      },
      (err: unknown) => {
        this.pending.delete(id);
        this.outstanding -= n;
        this.tally.add('outstanding', -n);
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
      if (eventId === undefined || this.tally.ackedIds.addNew(eventId)) {
        this.run.acknowledged++;
        this.tally.add('acknowledged', 1);
      }
    }
  }

  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    if (options.tap) {
      // A tap only observes: it counts as activity (events still flow) and nothing else.
      return this.inner.subscribe(options, (deliveries: Delivery[]) => {
        this.activity++;
        this.tally.add('activity', 1);
        return handler(deliveries);
      });
    }
    return this.inner.subscribe(options, (deliveries: Delivery[]) => {
      this.activity++;
      let first = 0;
      let consumed = 0;
      for (let i = 0; i < deliveries.length; i++) {
        const d = deliveries[i]!;
        if (d.headers[PayqHeader.runId] === this.runId) {
          if (d.redelivered) this.run.redelivered++;
          const eventId = ceId(d.headers);
          if (eventId === undefined ? !d.redelivered : this.tally.consumedIds.addNew(eventId)) consumed++;
        }
        if (!d.redelivered) first++;
      }
      this.outstanding -= first;
      this.run.consumed += consumed;
      this.tally.add('outstanding', -first);
      this.tally.add('consumed', consumed);
      this.tally.add('activity', 1);
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
    clearInterval(this.poll);
    return this.inner.close();
  }

  /** The availability windows from the tracker's start to `endUs`. */
  windows(endUs: number): AvailabilityWindows {
    return this.availability.finish(endUs, this.pendingSends());
  }
}
