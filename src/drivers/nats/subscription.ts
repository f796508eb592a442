/**
 * A subscription: per destination, one JetStream pull consumer read with payq's own pull loop
 * over the core NATS connection; deliveries from all destinations go to the handler in
 * micro-batches (what arrived before the next turn of the event loop), one call at a time.
 *
 * Consumers:
 * - a group is a durable pull consumer named after it (layout.ts), created on first use with
 *   explicit acks, deliver policy `all` (fromBeginning) or `new`, unlimited max_ack_pending and
 *   payq's max_deliver (unlimited by default, see config.ts). An existing consumer is used as it
 *   is: like a Kafka group, it resumes where the group left off whatever fromBeginning says.
 *   Every subscriber of the group pulls from the same consumer, so they share the messages.
 * - a tap is an ephemeral consumer of its own per destination (deliver `new`, or `all` with
 *   fromBeginning), deleted on close and by the server 60 s after a crash (inactive_threshold).
 *   It must ack explicitly too (nats-server 2.9 refuses pull consumers without acks); its acks
 *   settle only its own copy. A tap delivery cannot be dead-lettered (UsageError).
 *
 * Why not nats.js' consume()/fetch() iterators: consume() asks for more as soon as messages
 * arrive, not as they are settled, so `prefetch` could not bound what a subscriber holds; and
 * stopping either abandons a pull request whose in-flight messages then wait out ack_wait
 * (30 s) before anyone else gets them. Here, one pull request at a time per destination asks
 * for exactly the room left (prefetch shared evenly between the destinations, minus what is
 * held), and close() naks everything not settled: a closed subscriber's messages go to the
 * group's other subscribers at once, flagged redelivered.
 *
 * close() naks only once its pull requests have ended (each lives 1 s at most; what they still
 * bring is held, not handed out), then drains the inbox subscription. nats-server 2.9 loses
 * track of a nacked message when the only waiting pull request is one whose subscriber is gone
 * (it rewinds the stream cursor instead of requeueing the message, which then comes back only
 * after ack_wait), so payq never leaves such a request behind. A subscriber that crashes leaves
 * one for at most the 1 s it lives.
 *
 * Messages held longer than a third of ack_wait are kept alive with +WPI (in progress), so a
 * slow handler or replay's long dry runs don't get their messages redelivered under them.
 *
 * When the connection drops (the driver calls connectionLost / connectionRestored): the pull
 * requests are gone with it and nothing is pulled until the reconnect; acks and naks of what is
 * held (received before the outage) are kept and sent after the reconnect, since nats.js drops
 * what is written while it is disconnected. The server takes them after a restart too: a durable
 * consumer keeps its pending messages on the store. A settlement written just before the drop
 * may be lost with it; the server then redelivers that message after ack_wait (a duplicate, not
 * a loss). What is still held gets +WPI at once after the reconnect (the outage may have taken
it past ack_wait). A tap's ephemeral consumer that the server no longer has is re-created to start after
 * the last stream sequence the tap saw (or where it started), so it sees everything published
 * after the restart and nothing twice.
 */
import { AckPolicy, DeliverPolicy, ReplayPolicy, RetentionPolicy, type JetStreamManager } from '@nats-io/jetstream';
import { createInbox, type Msg, type NatsConnection, type Subscription as NatsSub } from '@nats-io/transport-node';
import { InternalError, TopologyError, UsageError } from '../../errors.js';
import type { Delivery, DeliveryHandler, Headers, SubscribeOptions, Subscription } from '../types.js';
import { tapDeadLetterRefused } from '../common.js';
import { DeliveryPump } from '../pump.js';
import type { NatsConfig } from './config.js';
import { apiCode, JsCode, mapNatsError } from './errors.js';
import { fromNatsHeaders } from './headers.js';
import { consumerDescription, consumerName, streamSubject, typeTokenOf } from './layout.js';

/** Server-side lifetime of one pull request: an idle subscriber asks again every second. */
const PULL_EXPIRES_MS = 1_000;
/** A request not ended by then is taken as lost (a reconnect drops pull requests). */
const PULL_LOST_AFTER_MS = PULL_EXPIRES_MS + 2_000;
/**
 * Pause after a 409 (limits exceeded, consumer deleted, leader change) or a 503 (no responders:
 * the consumer is gone, or JetStream not ready after a restart) before pulling again.
 */
const PULL_BACKOFF_MS = 500;
const TAP_INACTIVE_THRESHOLD_MS = 60_000;

const ACK = '+ACK';
const NAK = '-NAK';
const WORKING = '+WPI';

const ns = (ms: number) => ms * 1_000_000;

export interface NatsSubscriptionDeps {
  nc: NatsConnection;
  jsm: JetStreamManager;
  /** `$JS.API` unless a JetStream domain or prefix says otherwise. */
  apiPrefix: string;
  config: NatsConfig;
  /** BrokerUrl.redacted */
  url: string;
  /** The stream holding the destination (foreign: a user's stream, read whole); TopologyError when there is none. */
  streamOf(destination: string): Promise<{ stream: string; foreign: boolean }>;
  /** Publishes a dead letter to `<destination>.dlq` and waits for its PubAck. */
  publishDeadLetter(destination: string, typeToken: string, value: Uint8Array, headers: Headers, key: string | undefined): Promise<void>;
  forget(sub: NatsSubscription): void;
}

/**
 * A number from a JetStream ack subject: v1 `$JS.ACK.stream.consumer.delivered.sseq.cseq.ts.pending`
 * (9 tokens); v2 adds domain and account hash after ACK (and may end with a random token).
 * `field` 0 is the delivery count, 1 the stream sequence.
 */
function ackToken(reply: string | undefined, field: 0 | 1): number {
  if (!reply) return NaN;
  const t = reply.split('.');
  const at = t.length === 9 ? 4 : t.length >= 11 ? 6 : -1;
  return at === -1 ? NaN : Number(t[at + field]);
}

/** The delivery count from a JetStream ack subject ($JS.ACK.<stream>.<consumer>.<delivered>.…). */
export function deliveryCount(reply: string | undefined): number {
  const n = ackToken(reply, 0);
  return Number.isFinite(n) && n > 0 ? n : 1;
}

/** The stream sequence of a delivery, from its ack subject; 0 when it cannot be read. */
export function streamSequence(reply: string | undefined): number {
  const n = ackToken(reply, 1);
  return Number.isFinite(n) && n > 0 ? n : 0;
}

interface Held {
  msg: Msg;
  source: Source;
  receivedAt: number;
  settled: boolean;
  /** Given back by close() (nacked, or left to ack_wait): it comes again. */
  returned: boolean;
  delivery: Delivery;
}

/** One destination's consumer and its pull loop. */
interface Source {
  destination: string;
  stream: string;
  consumer: string;
  /** Most unsettled deliveries this source may hold. */
  share: number;
  unsettled: number;
  sub: NatsSub | undefined;
  inbox: string;
  requests: number;
  /** Reply subject of the pull request in flight, and how many messages it still owes. */
  current: string | undefined;
  owed: number;
  lostTimer: NodeJS.Timeout | undefined;
  backoffTimer: NodeJS.Timeout | undefined;
  /** close() waiting for the request in flight to end. */
  onEnd: (() => void) | undefined;
  pullScheduled: boolean;
  /** The consumer's subject filter (undefined on a user's stream: read whole). */
  filter: string | undefined;
  /** A tap: the last stream sequence it has seen (or the one before where it started). */
  lastSeq: number;
}

export class NatsSubscription implements Subscription {
  private readonly sources: Source[] = [];
  private readonly held = new Set<Held>();
  private readonly pump: DeliveryPump<Held>;
  private closing = false;
  private closed: Promise<void> | undefined;
  private workingTimer: NodeJS.Timeout | undefined;
  private readonly tap: boolean;
  /** A tap's ephemeral consumers, deleted on close. */
  private readonly tapConsumers: Array<{ stream: string; name: string }> = [];
  /** Between connectionLost and connectionRestored (see the header). */
  private offline = false;
  /** Settlements made while offline, sent after the reconnect. */
  private readonly unsent: Array<{ msg: Msg; reply: string }> = [];
  /** A tap re-checking its consumers after a reconnect. */
  private resuming: Promise<void> | undefined;

  constructor(
    private readonly deps: NatsSubscriptionDeps,
    private readonly options: SubscribeOptions,
    handler: DeliveryHandler,
  ) {
    this.tap = options.tap === true;
    this.pump = new DeliveryPump(options.prefetch, handler, (h) => (h.settled ? undefined : h.delivery));
  }

  /** Creates the consumers and starts pulling; rejects (TopologyError…) if a destination is missing. */
  async start(): Promise<this> {
    const destinations = [...new Set(this.options.destinations)];
    const share = Math.max(1, Math.ceil(this.options.prefetch / destinations.length));
    try {
      for (const destination of destinations) {
        const { stream, foreign } = await this.deps.streamOf(destination);
        // A user's stream is read as it is: every subject it holds.
        const filter = foreign ? undefined : streamSubject(destination);
        if (this.tap && foreign) await this.refuseWorkQueueTap(stream, destination);
        const tapStart = this.tap ? await this.createTapConsumer(stream, destination, filter, undefined) : undefined;
        const consumer = tapStart ? tapStart.name : await this.ensureGroupConsumer(stream, destination, filter);
        const source: Source = {
          destination,
          stream,
          consumer,
          share,
          unsettled: 0,
          sub: undefined,
          inbox: createInbox(),
          requests: 0,
          current: undefined,
          owed: 0,
          lostTimer: undefined,
          backoffTimer: undefined,
          onEnd: undefined,
          pullScheduled: false,
          filter,
          lastSeq: tapStart?.lastSeq ?? 0,
        };
        this.sources.push(source);
      }
    } catch (err) {
      await this.deleteTapConsumers();
      throw mapNatsError(err, { operation: 'subscribe', url: this.deps.url, subject: destinations.join(', ') });
    }
    for (const source of this.sources) {
      source.sub = this.deps.nc.subscribe(`${source.inbox}.*`, { callback: (err, msg) => this.onMessage(source, err, msg) });
      this.pull(source);
    }
    const every = Math.max(1000, Math.floor(this.deps.config.ackWaitMs / 3));
    this.workingTimer = setInterval(() => this.keepAlive(every), every);
    this.workingTimer.unref();
    return this;
  }

  /** On a work-queue stream an ack removes the message: a tap there would take it from its consumers. */
  private async refuseWorkQueueTap(stream: string, destination: string): Promise<void> {
    const info = await this.deps.jsm.streams.info(stream);
    if (info.config.retention === RetentionPolicy.Workqueue) {
      throw new UsageError(`stream '${stream}' is a work queue: reading '${destination}' takes its messages, so a tap (which takes nothing) cannot read it`, {
        hint: 'consume it as one of its competing consumers with --group NAME (that takes the messages)',
      });
    }
  }

  private async ensureGroupConsumer(stream: string, destination: string, filter: string | undefined): Promise<string> {
    const { jsm, config } = this.deps;
    const { group, fromBeginning } = this.options;
    const name = consumerName(group);
    const existing = await jsm.consumers.info(stream, name).catch((err: unknown) => {
      if (apiCode(err) === JsCode.consumerNotFound) return undefined;
      throw err;
    });
    if (existing) {
      if (existing.config.deliver_subject) {
        throw new TopologyError(`consumer '${name}' on stream '${stream}' is a push consumer: payq needs a pull consumer for group '${group}'`, {
          hint: 'delete it (nats consumer rm) or use another --group',
        });
      }
      return name;
    }
    try {
      await jsm.consumers.add(stream, {
        durable_name: name,
        description: consumerDescription(group, destination),
        // payq's own streams hold one destination; an operator's stream may hold more.
        ...(filter === undefined ? {} : { filter_subject: filter }),
        ack_policy: AckPolicy.Explicit,
        deliver_policy: fromBeginning ? DeliverPolicy.All : DeliverPolicy.New,
        replay_policy: ReplayPolicy.Instant,
        ack_wait: ns(config.ackWaitMs),
        max_deliver: config.maxDeliver,
        max_ack_pending: -1,
      });
    } catch (err) {
      // Another subscriber of the group created it first: use theirs.
      const code = apiCode(err);
      if (code !== JsCode.consumerNameExists && code !== JsCode.consumerExists) throw err;
    }
    return name;
  }

  /**
   * A tap's consumer: from the beginning or what comes next, or (re-created after a restart)
   * from just after `afterSeq`. Resolves with its name and the stream sequence it starts after.
   */
  private async createTapConsumer(stream: string, destination: string, filter: string | undefined, afterSeq: number | undefined): Promise<{ name: string; lastSeq: number }> {
    const { jsm, config } = this.deps;
    const start =
      afterSeq !== undefined
        ? { deliver_policy: DeliverPolicy.StartSequence, opt_start_seq: afterSeq + 1 }
        : { deliver_policy: this.options.fromBeginning ? DeliverPolicy.All : DeliverPolicy.New };
    const info = await jsm.consumers.add(stream, {
      description: `payq tap on '${destination}' (pid ${process.pid})`,
      ...(filter === undefined ? {} : { filter_subject: filter }),
      ack_policy: AckPolicy.Explicit,
      ...start,
      replay_policy: ReplayPolicy.Instant,
      ack_wait: ns(config.ackWaitMs),
      max_deliver: -1,
      max_ack_pending: -1,
      inactive_threshold: ns(TAP_INACTIVE_THRESHOLD_MS),
    });
    // Recorded at once so a failure later in start() still deletes it.
    this.tapConsumers.push({ stream, name: info.name });
    // DeliverNew starts after the stream's last message at creation, which `delivered` tells.
    return { name: info.name, lastSeq: afterSeq ?? (this.options.fromBeginning ? 0 : info.delivered.stream_seq) };
  }

  /** The driver found the connection gone: pull requests are lost, settlements wait. */
  connectionLost(): void {
    if (this.closing) return;
    this.offline = true;
    for (const source of this.sources) {
      clearTimeout(source.lostTimer);
      clearTimeout(source.backoffTimer);
      source.lostTimer = undefined;
      source.backoffTimer = undefined;
      source.current = undefined;
      source.owed = 0;
      const onEnd = source.onEnd;
      source.onEnd = undefined;
      onEnd?.();
    }
  }

  /** The connection works again: kept settlements go, a tap gets its consumers back, pulling resumes. */
  connectionRestored(): void {
    if (!this.offline) return;
    this.offline = false;
    for (const { msg, reply } of this.unsent.splice(0)) this.respond(msg, reply);
    // What the handler still holds may be past ack_wait by now: +WPI before any pull, so the
    // server does not hand it out again under the handler.
    this.keepAlive(0);
    if (this.closing) return;
    if (!this.tap) {
      for (const source of this.sources) this.pull(source);
      return;
    }
    this.resuming ??= this.recheckTapConsumers().finally(() => (this.resuming = undefined));
  }

  /** Each tap consumer the server lost is re-created after what the tap saw; then it pulls. */
  private async recheckTapConsumers(): Promise<void> {
    for (const source of this.sources) {
      if (this.closing || this.offline) return;
      try {
        await this.ensureTapConsumer(source);
      } catch {
        // Not now (the server is still starting, or away again): the next 503 or reconnect retries.
      }
      this.pull(source);
    }
  }

  private async ensureTapConsumer(source: Source): Promise<void> {
    const { jsm } = this.deps;
    try {
      await jsm.consumers.info(source.stream, source.consumer);
      return;
    } catch (err) {
      if (apiCode(err) !== JsCode.consumerNotFound) throw err;
    }
    const gone = source.consumer;
    const at = this.tapConsumers.findIndex((c) => c.stream === source.stream && c.name === gone);
    if (at !== -1) this.tapConsumers.splice(at, 1);
    const fresh = await this.createTapConsumer(source.stream, source.destination, source.filter, source.lastSeq);
    source.consumer = fresh.name;
  }

  private respond(msg: Msg, reply: string): void {
    if (this.offline) {
      this.unsent.push({ msg, reply });
      return;
    }
    try {
      msg.respond(reply);
    } catch {
      // Connection closed for good: the server redelivers it after ack_wait.
    }
  }

  private async deleteTapConsumers(): Promise<void> {
    const doomed = this.tapConsumers.splice(0);
    await Promise.allSettled(doomed.map(({ stream, name }) => this.deps.jsm.consumers.delete(stream, name)));
  }

  /** Asks for the room left, unless a request is in flight (see the header). */
  private pull(source: Source): void {
    if (this.closing || this.offline || source.current !== undefined || source.backoffTimer !== undefined) return;
    const room = source.share - source.unsettled;
    if (room <= 0) return;
    const reply = `${source.inbox}.${++source.requests}`;
    source.current = reply;
    source.owed = room;
    try {
      this.deps.nc.publish(
        `${this.deps.apiPrefix}.CONSUMER.MSG.NEXT.${source.stream}.${source.consumer}`,
        JSON.stringify({ batch: room, expires: ns(PULL_EXPIRES_MS) }),
        { reply },
      );
    } catch {
      // The connection is closed: nothing more will come.
      source.current = undefined;
      return;
    }
    source.lostTimer = setTimeout(() => {
      if (source.current === reply) this.endRequest(source, 0);
    }, PULL_LOST_AFTER_MS);
    source.lostTimer.unref();
  }

  /**
   * A pull once this turn's settlements are all in: a handler acking its batch in a loop then
   * makes one request for the whole room, not one for the first slot freed and one for the rest.
   */
  private schedulePull(source: Source): void {
    if (source.pullScheduled || source.current !== undefined) return;
    source.pullScheduled = true;
    setImmediate(() => {
      source.pullScheduled = false;
      this.pull(source);
    });
  }

  private endRequest(source: Source, backoffMs: number): void {
    clearTimeout(source.lostTimer);
    source.lostTimer = undefined;
    source.current = undefined;
    source.owed = 0;
    const onEnd = source.onEnd;
    source.onEnd = undefined;
    onEnd?.();
    if (this.closing) return;
    if (backoffMs > 0) {
      source.backoffTimer = setTimeout(() => {
        source.backoffTimer = undefined;
        this.pull(source);
      }, backoffMs);
      source.backoffTimer.unref();
      return;
    }
    this.pull(source);
  }

  /** nats.js calls this from its socket reader: it must never throw. */
  private onMessage(source: Source, err: Error | null, msg: Msg): void {
    if (err) return; // a permissions error ends the subscription; nothing to settle
    try {
      const status = !msg.reply && msg.headers !== undefined ? msg.headers.code : 0;
      if (status !== 0) {
        // 404 no messages, 408 request expired, 409 limits / consumer deleted / leader change,
        // 503 no responders: the request is over. A status of an older request (its subject
        // differs) changes nothing. A tap whose consumer is gone gets it back (after a restart).
        if (msg.subject === source.current) {
          const busy = status === 409 || status === 503;
          this.endRequest(source, busy ? PULL_BACKOFF_MS : 0);
          if (busy && this.tap && !this.closing) this.resuming ??= this.recheckTapConsumers().finally(() => (this.resuming = undefined));
        }
        return;
      }
      if (!msg.reply) return; // not a JetStream delivery
      const held = this.hold(source, msg);
      // While closing it is only held, and nacked with the rest (see the header).
      if (!this.closing) this.pump.push(held);
      // Counted as held first, so the next request asks for the right room.
      if (source.current !== undefined && --source.owed <= 0) this.endRequest(source, 0);
    } catch {
      try {
        if (msg.reply) msg.respond(NAK);
      } catch {
        // connection gone: the server redelivers after ack_wait
      }
    }
  }

  private hold(source: Source, msg: Msg): Held {
    const { headers, key } = fromNatsHeaders(msg.headers);
    const destination = source.destination;
    const tap = this.tap;
    const held: Held = { msg, source, receivedAt: Date.now(), settled: false, returned: false, delivery: undefined as unknown as Delivery };
    source.lastSeq = Math.max(source.lastSeq, streamSequence(msg.reply));
    source.unsettled++;
    this.held.add(held);
    const settle = (reply: string): boolean => {
      if (held.settled) return false;
      held.settled = true;
      source.unsettled--;
      this.held.delete(held);
      this.respond(msg, reply);
      this.schedulePull(source);
      return true;
    };
    const value = Buffer.from(msg.data);
    const { nc } = this.deps;
    held.delivery = {
      destination,
      key,
      value,
      headers,
      partition: undefined,
      offset: undefined,
      redelivered: deliveryCount(msg.reply) > 1,
      // Settlements wait out a reconnect (see the header); a connection closed for good takes them with it.
      get settleable() {
        return !held.returned && !nc.isClosed();
      },
      ack: () => void settle(ACK),
      nack: () => void settle(NAK),
      deadLetter: async (extra: Headers) => {
        if (tap) {
          throw tapDeadLetterRefused(destination);
        }
        if (held.settled) throw new InternalError(`dead-letter of a message from ${destination}: already settled`);
        await this.deps.publishDeadLetter(destination, typeTokenOf(msg.subject), value, { ...headers, ...extra }, key);
        settle(ACK);
      },
    };
    return held;
  }

  /** +WPI for what has been held a while, so JetStream doesn't redeliver it under the handler. */
  private keepAlive(olderThanMs: number): void {
    if (this.offline) return;
    const before = Date.now() - olderThanMs;
    for (const held of this.held) {
      if (held.receivedAt > before) continue;
      try {
        held.msg.respond(WORKING);
      } catch {
        return;
      }
    }
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    clearInterval(this.workingTimer);
    const { nc } = this.deps;
    for (const source of this.sources) clearTimeout(source.backoffTimer);
    // The running handler finishes (it may still settle what it has) while the pull requests in
    // flight end: answered in full, expired (1 s), or taken as lost.
    await Promise.all([
      this.pump.stop(),
      ...this.sources.map((source) =>
        source.current === undefined || nc.isClosed() ? undefined : new Promise<void>((resolve) => (source.onEnd = resolve)),
      ),
    ]);
    for (const source of this.sources) clearTimeout(source.lostTimer);
    // Offline (the server away, maybe for good) nothing reaches the server, and waiting for its
    // answer could be for ever: the subscriptions end here, the server redelivers what was not
    // settled after ack_wait, and a tap's consumers expire by themselves (inactive_threshold).
    // Online, what waits for the server ends too should the connection close meanwhile.
    const offline = this.offline || nc.isClosed();
    const orClosed = (work: Promise<unknown> | undefined) => Promise.race([work, nc.closed()]);
    if (offline) {
      for (const source of this.sources) {
        try {
          source.sub?.unsubscribe();
        } catch {
          // closed with the connection already
        }
      }
    } else {
      // UNSUB and a round trip: anything still under way arrives (and is held) first.
      await Promise.allSettled(this.sources.map((s) => orClosed(s.sub?.drain())));
    }
    for (const held of [...this.held]) {
      held.settled = true;
      held.returned = true;
      held.source.unsettled--;
      if (!this.tap) {
        try {
          held.msg.respond(NAK);
        } catch {
          break; // connection closed: the server redelivers after ack_wait
        }
      }
    }
    this.held.clear();
    if (!offline) {
      await orClosed(this.deleteTapConsumers());
      // The acks and naks reach the server before close() resolves.
      if (!nc.isClosed()) await orClosed(nc.flush()).catch(() => undefined);
    }
    this.deps.forget(this);
  }
}
