/**
 * The in-process broker behind `memory://`: destinations are append-only logs, consumer groups
 * keep a cursor per destination plus a redelivery queue, subscribers pull batches. It is a
 * product feature (the default broker of `payq bench`), so the hot path allocates one object per
 * message and one promise per batch, never a timer or promise per message.
 *
 * Taps (SubscribeOptions.tap) are groups like any other, keyed by a Symbol so no group name can
 * collide with them; the subscription removes its tap group when it closes, so a finished tap
 * neither pins log segments nor counts for flow control.
 *
 * Topology policy: a destination that is sent to, subscribed to or dead-lettered into without
 * having been declared is created on the spot, like Kafka with auto.create.topics.enable (its
 * default). payq's readers never rely on that: they check with `exists` first and wait
 * (core/destinations.ts), as on every broker. Declaring stays the way to get `<name>.dlq` created
 * up front.
 */
import { DeliveryError, InternalError } from '../../errors.js';
import type { Delivery, DeliveryHandler, Headers, OutgoingMessage } from '../types.js';
import { tapDeadLetterRefused } from '../common.js';
import { HandlerFailures } from '../retry.js';
import { RedeliveryQueue } from './redelivery-queue.js';
import { SEGMENT_SIZE, SegmentedLog } from './segmented-log.js';

/** One message as the broker keeps it; shared by every group that reads it, never mutated. */
export class StoredMessage {
  constructor(
    readonly offset: number,
    readonly key: string,
    readonly type: string,
    readonly value: Buffer,
    readonly headers: Readonly<Headers>,
  ) {}
}

// ---------------------------------------------------------------------------------------------
// Tick-batched completion: everything that settles in one event-loop turn shares one setImmediate.
// Resolving on the next turn (not synchronously) keeps a flat-out producer from starving timers,
// signals and consumers, the way a real broker's network round trip would.

let tickQueue: Array<() => void> = [];
let tickScheduled = false;

function flushTick(): void {
  const queue = tickQueue;
  tickQueue = [];
  tickScheduled = false;
  for (const fn of queue) fn();
}

function onNextTurn(fn: () => void): void {
  tickQueue.push(fn);
  if (!tickScheduled) {
    tickScheduled = true;
    setImmediate(flushTick);
  }
}

function nextTurn(): Promise<void> {
  return new Promise((resolve) => setImmediate(resolve));
}

// ---------------------------------------------------------------------------------------------

export class MemoryBroker {
  private readonly destinations = new Map<string, Destination>();
  /**
   * Messages each destination keeps after every group has read them, for groups that join later
   * reading from the beginning: the most any client of this broker asked for (`retain=N`).
   */
  retain = 0;
  /**
   * The most messages a destination keeps, read or not (`maxLength=N`, like a RabbitMQ queue's
   * max-length with drop-head): the most any client asked for, a client without it asking for no
   * limit. -Infinity until a client says; only a finite value limits anything.
   */
  maxLength = -Infinity;

  constructor(readonly name: string) {}

  /** The destination, created if missing (see the topology policy above). */
  destination(name: string): Destination {
    let dest = this.destinations.get(name);
    if (dest === undefined) {
      dest = new Destination(name, this);
      this.destinations.set(name, dest);
    }
    return dest;
  }

  has(name: string): boolean {
    return this.destinations.has(name);
  }
}

interface BlockedSend {
  limit: number;
  resolve: () => void;
}

export class Destination {
  readonly log = new SegmentedLog<StoredMessage>();
  /** Named groups by name; taps by a Symbol of their own. */
  readonly groups = new Map<string | symbol, GroupCursor>();
  private members = 0;
  private wakeScheduled = false;
  private blocked: BlockedSend[] = [];

  constructor(
    readonly name: string,
    readonly broker: MemoryBroker,
  ) {}

  append(messages: readonly OutgoingMessage[]): void {
    const log = this.log;
    for (let i = 0; i < messages.length; i++) {
      const m = messages[i]!;
      // Copy the headers: the producer may reuse its object; the value Buffer is kept as is.
      log.append(new StoredMessage(log.endOffset, m.key, m.type, m.value, { ...m.headers }));
    }
    if (messages.length > 0) {
      this.enforceMaxLength();
      this.scheduleWake();
    }
  }

  appendStored(message: StoredMessage, extraHeaders: Headers): void {
    const log = this.log;
    log.append(
      new StoredMessage(log.endOffset, message.key, message.type, message.value, { ...message.headers, ...extraHeaders }),
    );
    this.enforceMaxLength();
    this.scheduleWake();
  }

  /**
   * Drops the oldest messages beyond the broker's maxLength, read or not (whole segments, so up
   * to 255 more stay). A group whose next message went this way resumes at the oldest kept one.
   */
  private enforceMaxLength(): void {
    const max = this.broker.maxLength;
    if (max >= 0 && this.log.size > max) this.log.trimBefore(this.log.endOffset - max);
  }

  /**
   * Resolves once the append is "acknowledged": on the next event-loop turn, or, when the slowest
   * live group lags more than `maxBacklog` messages behind, once it has caught up to half of that
   * (flow control, like RabbitMQ's memory alarm: it keeps a flat-out producer from filling RAM).
   */
  acknowledge(maxBacklog: number): Promise<void> {
    return new Promise((resolve) => {
      if (maxBacklog > 0 && this.lag() > maxBacklog) {
        this.blocked.push({ limit: maxBacklog >> 1, resolve });
      } else {
        onNextTurn(resolve);
      }
    });
  }

  /** How far the slowest group with a live subscriber is behind the end of the log. */
  private lag(): number {
    if (this.members === 0) return 0;
    let min = this.log.endOffset;
    for (const group of this.groups.values()) {
      if (group.members.length > 0 && group.cursor < min) min = group.cursor;
    }
    return this.log.endOffset - min;
  }

  private releaseBlocked(): void {
    const lag = this.lag();
    const still: BlockedSend[] = [];
    for (const b of this.blocked) {
      if (lag <= b.limit) onNextTurn(b.resolve);
      else still.push(b);
    }
    this.blocked = still;
  }

  group(name: string, fromBeginning: boolean): GroupCursor {
    let group = this.groups.get(name);
    if (group === undefined) {
      // Like a Kafka group without committed offsets: fromBeginning picks the earliest retained
      // message, otherwise only what is sent from now on. An existing group keeps its position.
      group = new GroupCursor(this, fromBeginning ? this.log.startOffset : this.log.endOffset, name);
      this.groups.set(name, group);
    }
    return group;
  }

  /** A new group nobody else can join, for one tap subscription; removed with removeGroup. */
  tapGroup(fromBeginning: boolean): GroupCursor {
    const key = Symbol('tap');
    const group = new GroupCursor(this, fromBeginning ? this.log.startOffset : this.log.endOffset, key);
    this.groups.set(key, group);
    return group;
  }

  /** Forgets a tap group, then frees the segments only it was holding on to. */
  removeGroup(group: GroupCursor): void {
    if (this.groups.get(group.key) !== group) return;
    this.groups.delete(group.key);
    this.trim();
    if (this.blocked.length > 0) this.releaseBlocked();
  }

  memberJoined(): void {
    this.members++;
  }

  memberLeft(): void {
    this.members--;
    if (this.blocked.length > 0) this.releaseBlocked();
  }

  /** A group's cursor moved from `from` to `to`. */
  advanced(from: number, to: number): void {
    if (this.blocked.length > 0) this.releaseBlocked();
    if (Math.floor(from / SEGMENT_SIZE) !== Math.floor(to / SEGMENT_SIZE)) this.trim();
  }

  /**
   * Drops the log segments every group (taps included) has read past, but for the last `retain`
   * messages; a destination no group reads yet keeps everything. Dropping what was read keeps a
   * busy broker's messages short-lived, so memory stays flat and the garbage collector cheap —
   * also for a DLQ that only trace watches in a long bench run.
   */
  trim(): void {
    let min = Infinity;
    for (const group of this.groups.values()) if (group.cursor < min) min = group.cursor;
    if (min !== Infinity) this.log.trimBefore(Math.min(min, this.log.endOffset - this.broker.retain));
  }

  /** One wake-up per destination per turn, however many messages arrived. */
  scheduleWake(): void {
    if (this.wakeScheduled || this.members === 0) return;
    this.wakeScheduled = true;
    setImmediate(() => {
      this.wakeScheduled = false;
      for (const group of this.groups.values()) {
        for (const member of group.members) member.kick();
      }
    });
  }
}

/** One consumer group's position on one destination. */
export class GroupCursor {
  readonly members: Subscriber[] = [];
  readonly redeliveries = new RedeliveryQueue<StoredMessage>();

  constructor(
    readonly destination: Destination,
    public cursor: number,
    /** The group's name, or a Symbol for a tap's private group. */
    readonly key: string | symbol,
  ) {}

  get isTap(): boolean {
    return typeof this.key === 'symbol';
  }

  join(member: Subscriber): void {
    this.members.push(member);
    this.destination.memberJoined();
  }

  leave(member: Subscriber): void {
    const i = this.members.indexOf(member);
    if (i === -1) return;
    this.members.splice(i, 1);
    this.destination.memberLeft();
    if (this.redeliveries.size > 0) this.destination.scheduleWake();
  }

  /** Back to the group, to be handed out again (flagged redelivered) before anything newer. */
  requeue(message: StoredMessage): void {
    this.redeliveries.push(message);
    this.destination.scheduleWake();
  }

  /** Moves up to `max - batch.deliveries.length` messages into the batch: redeliveries first. */
  takeInto(batch: Batch, max: number): void {
    const out = batch.deliveries;
    const name = this.destination.name;
    while (out.length < max && this.redeliveries.size > 0) {
      out.push(new MemoryDelivery(this.redeliveries.pop()!, name, this, batch, true));
    }
    const log = this.destination.log;
    const from = this.cursor;
    const end = log.endOffset;
    // maxLength may have dropped messages this group had not read yet.
    let c = Math.max(from, log.startOffset);
    while (out.length < max && c < end) {
      out.push(new MemoryDelivery(log.get(c)!, name, this, batch, false));
      c++;
    }
    if (c !== from) {
      this.cursor = c;
      this.destination.advanced(from, c);
    }
  }
}

const PENDING = 0;
const ACKED = 1;
const NACKED = 2;
const DEAD_LETTERED = 3;
/** The subscription closed before it was settled: the message went back to the group. */
const RETURNED = 4;

/** The deliveries handed to one handler call; tracked until all of them are settled. */
export class Batch {
  readonly deliveries: MemoryDelivery[] = [];
  unsettled = 0;
  constructor(readonly subscriber: Subscriber) {}
}

/**
 * Settling methods live on the prototype (no closures per message); they use `this`, so call them
 * as `delivery.ack()`, not detached. Broker internals are #private: spreading, logging or
 * JSON-serialising a delivery shows only the Delivery fields.
 */
export class MemoryDelivery implements Delivery {
  readonly partition: number | undefined = undefined;
  readonly offset: string | undefined = undefined;
  readonly key: string | undefined;
  readonly value: Buffer;
  /** Each delivery gets its own copy: a consumer may edit it and send it on. */
  headers: Headers;
  #state = PENDING;
  readonly #message: StoredMessage;
  readonly #group: GroupCursor;
  readonly #batch: Batch;

  constructor(
    message: StoredMessage,
    readonly destination: string,
    group: GroupCursor,
    batch: Batch,
    readonly redelivered: boolean,
  ) {
    this.key = message.key;
    this.value = message.value;
    this.headers = { ...message.headers };
    this.#message = message;
    this.#group = group;
    this.#batch = batch;
  }

  /** Its subscription closed and gave it back to the group (types.ts). */
  get settleable(): boolean {
    return this.#state !== RETURNED;
  }

  /** Acks and nacks after settling, or after the subscription closed, are ignored. */
  ack(): void {
    if (this.#state !== PENDING) return;
    this.#state = ACKED;
    this.#batch.subscriber.settled(this.#batch);
  }

  nack(): void {
    if (this.#state !== PENDING) return;
    this.#state = NACKED;
    this.#group.requeue(this.#message);
    this.#batch.subscriber.settled(this.#batch);
  }

  deadLetter(extraHeaders: Headers): Promise<void> {
    if (this.#state === RETURNED) {
      return Promise.reject(
        new DeliveryError(`cannot dead-letter a message from ${this.destination}: its subscription closed and it went back for redelivery`),
      );
    }
    if (this.#state !== PENDING) {
      return Promise.reject(new InternalError(`a message from ${this.destination} was dead-lettered after it was already acked or nacked`));
    }
    if (this.#group.isTap) return Promise.reject(tapDeadLetterRefused(this.destination));
    this.#state = DEAD_LETTERED;
    // The stored original, not this.headers: what a consumer edited is not part of the message.
    this.#group.destination.broker.destination(`${this.destination}.dlq`).appendStored(this.#message, extraHeaders);
    this.#batch.subscriber.settled(this.#batch);
    return Promise.resolve();
  }

  /** Called by a closing subscriber: unsettled messages go back to the group. */
  returnToGroup(): void {
    if (this.#state !== PENDING) return;
    this.#state = RETURNED;
    this.#group.requeue(this.#message);
  }
}

/** Messages one subscriber may handle in one event-loop turn before letting others run. */
const TURN_BUDGET = 4096;

/** One `subscribe` call: a member of its group on each of its destinations. */
export class Subscriber {
  private readonly cursors: GroupCursor[];
  private next = 0;
  private unacked = 0;
  private active = false;
  private closing = false;
  private kickQueued = false;
  private readonly failures = new HandlerFailures();
  private readonly open = new Set<Batch>();
  private stopped: (() => void) | undefined;
  private closePromise: Promise<void> | undefined;

  constructor(
    cursors: GroupCursor[],
    private readonly prefetch: number,
    private readonly handler: DeliveryHandler,
  ) {
    this.cursors = cursors;
    for (const c of cursors) c.join(this);
  }

  /** Starts pulling if it isn't already; safe to call any number of times. */
  kick(): void {
    if (this.active || this.closing) return;
    this.active = true;
    void this.pump();
  }

  /** A delivery of `batch` was acked, nacked or dead-lettered. */
  settled(batch: Batch): void {
    this.unacked--;
    if (--batch.unsettled === 0) this.open.delete(batch);
    // An ack outside the handler may free room for the next batch. Never run the handler from
    // inside someone's ack(): defer the kick.
    if (!this.active && !this.closing && !this.kickQueued) {
      this.kickQueued = true;
      queueMicrotask(() => {
        this.kickQueued = false;
        this.kick();
      });
    }
  }

  private take(room: number): Batch | undefined {
    const batch = new Batch(this);
    const cursors = this.cursors;
    const n = cursors.length;
    if (n === 1) {
      cursors[0]!.takeInto(batch, room);
    } else {
      // Start from a different destination each time so a busy one cannot starve the others.
      for (let i = 0; i < n && batch.deliveries.length < room; i++) cursors[(this.next + i) % n]!.takeInto(batch, room);
      this.next = (this.next + 1) % n;
    }
    const count = batch.deliveries.length;
    if (count === 0) return undefined;
    batch.unsettled = count;
    this.unacked += count;
    this.open.add(batch);
    return batch;
  }

  private async pump(): Promise<void> {
    let budget = TURN_BUDGET;
    try {
      while (!this.closing) {
        const room = this.prefetch - this.unacked;
        if (room <= 0) break; // resumed by settled()
        const batch = this.take(room);
        if (batch === undefined) break; // resumed by the destination's wake-up
        try {
          await this.handler(batch.deliveries);
          this.failures.succeeded();
        } catch {
          // The handler-failure policy of every driver (retry.ts): unsettled messages back, a pause.
          for (const d of batch.deliveries) d.nack();
          await this.failures.failed();
          continue;
        }
        budget -= batch.deliveries.length;
        if (budget <= 0) {
          budget = TURN_BUDGET;
          await nextTurn();
        }
      }
    } finally {
      this.active = false;
      this.stopped?.();
    }
  }

  /** Stops fetching, waits for the running handler, gives unsettled messages back to the group. */
  close(): Promise<void> {
    this.closePromise ??= this.doClose();
    return this.closePromise;
  }

  private async doClose(): Promise<void> {
    this.closing = true;
    this.failures.stop();
    if (this.active) await new Promise<void>((resolve) => (this.stopped = resolve));
    for (const batch of this.open) {
      for (const d of batch.deliveries) d.returnToGroup();
    }
    this.open.clear();
    this.unacked = 0;
    for (const c of this.cursors) {
      c.leave(this);
      if (c.isTap) c.destination.removeGroup(c);
    }
  }
}
