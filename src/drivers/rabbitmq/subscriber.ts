/**
 * A subscription: one channel on the consuming connection, one consumer per destination queue,
 * deliveries handed to the handler in micro-batches (what arrived before the next turn of the
 * event loop, at most `prefetch`), one handler call at a time.
 *
 * RabbitMQ semantics behind the interface:
 * - `group` does not select anything: every subscriber of a queue competes for its messages
 *   (RabbitMQ's competing consumers); the group only names the consumer tag.
 * - `fromBeginning` has no meaning: a queue holds what no one has acked yet.
 * - If the channel or connection is lost, the subscription reopens it (backoff up to 5 s, waiting
 *   for the connection's reconnect, connection.ts) and consumes the same queues again, until
 *   closed or the reconnect gives up; unacked messages go back to the queue and are redelivered
 *   with `redelivered` set. A delivery from the lost channel is no longer `settleable`, and its
 *   ack/nack do nothing (RabbitMQ has requeued it already).
 *
 * deadLetter: RabbitMQ dead-letters with the queue's DLX (adding x-death) only when a message
 * is rejected or expires, and a reject can't add headers. payq wants both its provenance headers
 * and x-death, so deadLetter
 *   1. publishes a copy (same body and properties, headers + extra + the `payq-dead-letter` mark,
 *      `expiration: 0`) to the same queue through the default exchange and waits for the confirm,
 *   2. acks the original.
 * The copy reaches the DLX by itself when it gets to the head of the queue: it expires there if
 * no consumer is ready (x-death reason "expired"), or a payq consumer receives it, sees the mark
 * and rejects it without requeue (reason "rejected") without showing it to the handler. So it is
 * dead-lettered even if no payq consumer runs anymore — but only after the messages ahead of it
 * (classic queues expire per-message TTLs at the head only). The mark names the queue and the
 * x-death count it was made at, so a dead letter moved back into the queue later (a shovel, the
 * management UI, replay) is an ordinary message again; payq never hands the mark out in headers
 * and send() drops it. The queue must have payq's DLX (checked once per queue), or the copy would
 * simply be dropped.
 * All consumers of a queue that payq dead-letters from should be payq: another consumer could
 * receive the copy (when it has spare prefetch) and process it twice.
 *
 * Taps (`tap: true`): one queue of the tap's own, `payq.tap.<pid>.<random>`, bound to the topic
 * exchange with `D.*.*` for each destination D and, for a DLQ `D.dlq`, to the DLX with `D.dlq`
 * (dead letters never pass the topic exchange). It sees what is published after it subscribed and
 * takes nothing from D's consumers; acks settle its own copies. A queue cannot replay, so
 * `fromBeginning` with a tap is a ConfigError rather than silently ignored. The queue is durable,
 * so it outlives a broker restart and a lost connection (README "Failure drills": the tap
 * resubscribes to it and sees everything published meanwhile, the copies it had not acked again);
 * it is deleted when the subscription closes, and by the broker (`x-expires`) once nothing used it
 * for twice the reconnect timeout (at least a minute), should payq die without closing. A tap delivery
 * cannot be dead-lettered (UsageError), as on every driver: the destination's consumers decide.
 * The marked copy deadLetter publishes goes to a queue by name, so taps never see it.
 */
import type { Channel, ConsumeMessage } from 'amqplib';
import { randomBytes } from 'node:crypto';
import { BrokerUnavailableError, ConfigError, TopologyError, UsageError } from '../../errors.js';
import type { Delivery, DeliveryHandler, Headers, SubscribeOptions, Subscription } from '../types.js';
import { tapDeadLetterRefused } from '../common.js';
import { DeliveryPump } from '../pump.js';
import { retry, type BackoffOptions } from '../retry.js';
import type { BrokerUrl } from '../url.js';
import type { RabbitMqConfig } from './config.js';
import { closeQuietly, type AmqpConnection } from './connection.js';
import { operationError } from './errors.js';
import { copyOptions, headersFromAmqp } from './message.js';
import type { Publisher } from './publisher.js';
import {
  bindingPattern,
  DEAD_LETTER_MARKER,
  deathCount,
  decodeMark,
  deliveryKey,
  dlqName,
  encodeMark,
  isDeadLetterQueueName,
  isFreshMark,
  tapDestination,
  validateDestination,
} from './topology.js';

export interface SubscriberContext {
  url: BrokerUrl;
  config: RabbitMqConfig;
  conn: AmqpConnection;
  publisher: Publisher;
  /** How `queue` dead-letters to `<queue>.dlq` (see DeadLetterMode); TopologyError when there is no DLQ. */
  checkDeadLetter(queue: string): Promise<DeadLetterMode>;
  /** Whether an existing queue is payq's layout (what is sent to it passes payq's exchange). */
  isPayqQueue(queue: string): Promise<boolean>;
  exchangeExists(name: string): Promise<boolean>;
  /** Passive: the names among `queues` that exist. */
  exists(queues: string[]): Promise<Set<string>>;
  /** The subscription is gone; the driver stops tracking it. */
  forget(sub: RabbitMqSubscription): void;
  /** DriverOptions.reconnectTimeoutMs: a tap's queue outlives an outage this long. */
  reconnectTimeoutMs: number;
}

/** A tap's queue expires once unused for twice the reconnect timeout, at least this long. */
const MIN_TAP_EXPIRES_MS = 60_000;

/**
 * 'native': the queue has payq's DLX; the marked copy reaches `<queue>.dlq` through it and
 * RabbitMQ adds x-death. 'publish': a queue payq did not declare; the copy (provenance headers,
 * no x-death) is published to `<queue>.dlq` by name, then the original acked, as on NATS.
 */
export type DeadLetterMode = 'native' | 'publish';

interface ChannelState {
  ch: Channel;
  closed: boolean;
  /** The consumer tags started on this channel, in order. */
  tags: string[];
}

/** One basic.consume: a destination queue, or a tap's own queue carrying all its destinations. */
interface Source {
  queue: string;
  tap: boolean;
}

/** Reopening a lost channel: tried until it works or the subscription closes. */
const REOPEN_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 5000 };

export class RabbitMqSubscription implements Subscription {
  private state: ChannelState | undefined;
  /** Deliveries of a lost channel are skipped: RabbitMQ has requeued them already. */
  private readonly pump: DeliveryPump<{ state: ChannelState; delivery: Delivery }>;
  private closing = false;
  private closed: Promise<void> | undefined;
  /** Aborted by close(): ends a reopen under way. */
  private readonly closingSignal = new AbortController();
  private readonly tagPrefix: string;
  /** The tap's own queue, once declared: consumed again after a loss, deleted on close. */
  private tapQueue: string | undefined;

  constructor(
    private readonly ctx: SubscriberContext,
    private readonly options: SubscribeOptions,
    handler: DeliveryHandler,
  ) {
    for (const d of options.destinations) validateDestination(d);
    if (options.exchange !== undefined && !options.tap) throw new ConfigError('an exchange is tapped: exchange goes with tap');
    if (options.streamOffset !== undefined && options.tap) throw new ConfigError('a stream queue is read from an offset by its own consumer, not a tap');
    if (options.tap && options.fromBeginning) {
      throw new ConfigError(
        `RabbitMQ cannot replay history: a tap sees messages published after it starts (asked to tap ${options.destinations.join(', ')} from the beginning)`,
        { hint: 'drop --from-beginning, or consume the queue itself with a group (that takes the messages from its consumers)' },
      );
    }
    // A tap's group is ignored (it has a queue of its own); its tag says it is a tap.
    const group = options.tap ? 'tap' : options.group.replace(/[^A-Za-z0-9_.:-]/g, '_').slice(0, 100) || 'payq';
    this.tagPrefix = `payq.${group}.${randomBytes(4).toString('hex')}`;
    this.pump = new DeliveryPump(options.prefetch, handler, (b) => (b.state.closed ? undefined : b.delivery));
  }

  /** Opens the channel and starts consuming; rejects if a queue is missing (TopologyError). */
  async start(): Promise<this> {
    await this.open();
    return this;
  }

  close(): Promise<void> {
    this.closed ??= this.shutdown();
    return this.closed;
  }

  private async shutdown(): Promise<void> {
    this.closing = true;
    this.closingSignal.abort();
    const state = this.state;
    if (state && !state.closed) {
      // Cancel first so nothing new arrives while the running handler finishes.
      for (const tag of state.tags) {
        try {
          await state.ch.cancel(tag);
        } catch {
          break; // the channel went: nothing left to cancel
        }
      }
    }
    // Received but never handed out: the channel close below returns them to their queues.
    await this.pump.stop();
    if (state && !state.closed && this.tapQueue !== undefined) {
      try {
        await state.ch.deleteQueue(this.tapQueue);
      } catch {
        // The channel went: the queue expires by itself (x-expires).
      }
    }
    if (state) await closeQuietly(state.ch);
    this.ctx.forget(this);
  }

  private async open(): Promise<void> {
    const { url, conn } = this.ctx;
    const ch = await conn.createChannel();
    const state: ChannelState = { ch, closed: false, tags: [] };
    ch.on('close', () => {
      state.closed = true;
      if (this.state === state && !this.closing) void this.recover();
    });
    const prefetch = Math.max(1, Math.floor(this.options.prefetch));
    let step = 'set prefetch';
    try {
      // Per consumer, and for the whole channel when it consumes several queues, so the
      // subscriber never holds more than `prefetch` unacked messages.
      await ch.prefetch(prefetch, false);
      let sources: Source[];
      if (this.options.tap) {
        const tapped = await this.declareTap(ch, (s) => (step = s));
        sources = [{ queue: tapped, tap: true }];
      } else {
        if (this.options.destinations.length > 1) await ch.prefetch(prefetch, true);
        sources = this.options.destinations.map((queue) => ({ queue, tap: false }));
      }
      const offset = this.options.streamOffset;
      for (const [i, source] of sources.entries()) {
        step = source.tap ? `consume from the tap queue '${source.queue}'` : `consume from queue '${source.queue}'`;
        const consumerTag = `${this.tagPrefix}.${i}`;
        await ch.consume(source.queue, (msg) => this.onMessage(state, source, msg), {
          noAck: false,
          consumerTag,
          ...(offset === undefined ? {} : { arguments: { 'x-stream-offset': streamOffsetArgument(offset) } }),
        });
        state.tags.push(consumerTag);
      }
    } catch (err) {
      await closeQuietly(ch);
      throw operationError(err, step, url, conn.lost);
    }
    if (this.closing || state.closed) {
      await closeQuietly(ch);
      return;
    }
    this.state = state;
  }

  /**
   * The tap's queue, bound like each destination (see the header), or to the user's exchange.
   * Everything is checked passively first: a tap creates nothing but its own queue. A missing
   * destination or exchange is a TopologyError; a queue payq did not declare is refused
   * (UsageError), as what others publish to it straight through the default exchange would never
   * reach the tap.
   */
  private async declareTap(ch: Channel, step: (what: string) => void): Promise<string> {
    const { exchange, deadLetterExchange } = this.ctx.config;
    const user = this.options.exchange;
    if (user !== undefined) {
      step(`check exchange '${user.name}'`);
      if (!(await this.ctx.exchangeExists(user.name))) {
        throw new TopologyError(`no exchange '${user.name}' in vhost '${this.ctx.config.vhost}' to tap`, { hint: 'check the name (--exchange); payq never creates it' });
      }
      step('declare the tap queue');
      const queue = await this.declareTapQueue(ch);
      step(`bind the tap queue to exchange '${user.name}' with '${user.binding}'`);
      await ch.bindQueue(queue, user.name, user.binding);
      return queue;
    }
    const destinations = [...new Set(this.options.destinations)];
    step(`check queues ${destinations.join(', ')}`);
    const found = await this.ctx.exists(destinations);
    const missing = destinations.filter((d) => !found.has(d));
    if (missing.length > 0) {
      throw new TopologyError(`cannot tap ${missing.map((d) => `'${d}'`).join(', ')}: no such queue in vhost '${this.ctx.config.vhost}'`, { hint: 'check the name; a tap never creates a queue' });
    }
    for (const d of destinations) {
      step(`check queue '${d}'`);
      if (!(await this.ctx.isPayqQueue(d))) {
        throw new UsageError(
          `queue '${d}' was not declared by payq: a tap sees only what passes payq's exchange '${exchange}', never what is published to the queue directly, so it would show nothing`,
          { hint: `choose how to read it: --group NAME (a competing consumer: takes the messages; with --requeue hands each back), --stream-offset first (a stream queue, non-destructive) or --exchange NAME --binding KEY (tap the exchange its publishers use)` },
        );
      }
    }
    step(`check exchange '${exchange}'`);
    if (!(await this.ctx.exchangeExists(exchange))) {
      throw new TopologyError(`cannot tap ${destinations.join(', ')}: exchange '${exchange}' does not exist in vhost '${this.ctx.config.vhost}'`, { hint: 'payq produce and worker create it' });
    }
    let dlqs = destinations.filter(isDeadLetterQueueName);
    if (dlqs.length > 0) {
      step(`check exchange '${deadLetterExchange}'`);
      if (!(await this.ctx.exchangeExists(deadLetterExchange))) dlqs = [];
    }
    step('declare the tap queue');
    const queue = await this.declareTapQueue(ch);
    for (const d of destinations) {
      step(`bind the tap queue to exchange '${exchange}' for '${d}'`);
      await ch.bindQueue(queue, exchange, bindingPattern(d));
    }
    for (const d of dlqs) {
      step(`bind the tap queue to exchange '${deadLetterExchange}' for '${d}'`);
      await ch.bindQueue(queue, deadLetterExchange, d);
    }
    return queue;
  }

  /** The tap's queue: named by payq, durable, expiring when unused (see the header); the same one after a loss. */
  private async declareTapQueue(ch: Channel): Promise<string> {
    this.tapQueue ??= `payq.tap.${process.pid}.${randomBytes(6).toString('hex')}`;
    const expires = Math.max(MIN_TAP_EXPIRES_MS, 2 * this.ctx.reconnectTimeoutMs);
    await ch.assertQueue(this.tapQueue, { durable: true, arguments: { 'x-expires': expires } });
    return this.tapQueue;
  }

  /**
   * Reopens after the channel or its connection was lost, until it works, the subscription
   * closes, or the connection gave up reconnecting (the driver is done then).
   */
  private async recover(): Promise<void> {
    const { conn } = this.ctx;
    // Ends when reopened, closing (the abort) or given up: nothing to report either way.
    await retry(() => this.open(), {
      backoff: REOPEN_BACKOFF,
      delayFirst: true,
      signal: this.closingSignal.signal,
      isRetryable: () => conn.isOpen || conn.recovering,
    }).catch(() => undefined);
  }

  /** amqplib calls this inside its frame loop: it must never throw. */
  private onMessage(state: ChannelState, source: Source, msg: ConsumeMessage | null): void {
    // null: RabbitMQ cancelled the consumer (the queue was deleted). Nothing more will come from
    // that queue; the other destinations carry on.
    if (msg === null || state.closed) return;
    try {
      const raw = msg.properties.headers as Record<string, unknown> | undefined;
      const mark = raw?.[DEAD_LETTER_MARKER] === undefined ? undefined : decodeMark(raw[DEAD_LETTER_MARKER]);
      // A tap's queue never gets a marked copy (those go to a queue by name), and has no DLX.
      if (!source.tap && isFreshMark(mark, source.queue, raw)) {
        state.ch.nack(msg, false, false);
        return;
      }
      if (this.closing) return; // left unacked: requeued when the channel closes
      const destination = source.tap ? this.tapDestinationOf(msg) : source.queue;
      this.pump.push({ state, delivery: this.delivery(state, destination, source.tap, msg, raw, mark) });
    } catch {
      try {
        state.ch.nack(msg, false, true);
      } catch {
        // channel gone: the broker requeues it
      }
    }
  }

  /** Only its bindings route to a tap's queue, so this always finds one; the fallback is a safety net. */
  private tapDestinationOf(msg: ConsumeMessage): string {
    const { destinations } = this.options;
    if (this.options.exchange !== undefined) return this.options.exchange.name;
    const found = tapDestination(destinations, msg.fields.exchange, msg.fields.routingKey, this.ctx.config);
    return found ?? (destinations.length === 1 ? destinations[0]! : msg.fields.routingKey);
  }

  private delivery(
    state: ChannelState,
    queue: string,
    tap: boolean,
    msg: ConsumeMessage,
    raw: Record<string, unknown> | undefined,
    mark: ReturnType<typeof decodeMark>,
  ): Delivery {
    let settled = false;
    // A second ack of one delivery tag is a channel error in RabbitMQ that would requeue every
    // message the subscription holds; settling twice is therefore ignored.
    const settle = (fn: () => void) => {
      if (settled) return;
      settled = true;
      if (state.closed) return;
      try {
        fn();
      } catch {
        // The channel closed between the check and the call: the broker requeues the message.
      }
    };
    const key = deliveryKey(queue, msg.fields.routingKey, mark, raw);
    const headers = headersFromAmqp(raw);
    return {
      destination: queue,
      key,
      value: msg.content,
      headers,
      partition: undefined,
      offset: undefined,
      redelivered: msg.fields.redelivered,
      // Its channel gone, RabbitMQ has requeued it (it comes again, on the new channel).
      get settleable() {
        return !state.closed;
      },
      ack: () => settle(() => state.ch.ack(msg)),
      nack: () => settle(() => state.ch.nack(msg, false, true)),
      deadLetter: async (extra: Headers) => {
        if (settled) return;
        if (tap) {
          throw tapDeadLetterRefused(queue);
        }
        const mode = await this.ctx.checkDeadLetter(queue);
        // Its channel is gone, so RabbitMQ redelivers it: a copy now would be a duplicate dead letter.
        if (state.closed) {
          throw new BrokerUnavailableError(`cannot dead-letter from '${queue}': the channel the message came on was lost; RabbitMQ will redeliver it`, { retriable: true });
        }
        if (mode === 'publish') {
          const options = copyOptions(msg.properties as unknown as Record<string, unknown>, { ...(raw ?? {}), ...extra });
          await this.ctx.publisher.sendToQueue(dlqName(queue), msg.content, options);
          settle(() => state.ch.ack(msg));
          return;
        }
        const copyHeaders: Record<string, unknown> = { ...(raw ?? {}), ...extra };
        copyHeaders[DEAD_LETTER_MARKER] = encodeMark({
          queue,
          deaths: deathCount(raw, queue),
          ...(key === undefined ? {} : { key }),
        });
        const options = copyOptions(msg.properties as unknown as Record<string, unknown>, copyHeaders);
        options.expiration = '0';
        await this.ctx.publisher.sendToQueue(queue, msg.content, options);
        settle(() => state.ch.ack(msg));
      },
    };
  }

}

/** x-stream-offset: first | last | next | an offset | a time (AMQP timestamp, seconds). */
function streamOffsetArgument(offset: string | number | Date): unknown {
  if (offset instanceof Date) return { '!': 'timestamp', value: Math.floor(offset.getTime() / 1000) };
  if (typeof offset === 'number') return { '!': 'long', value: offset };
  return offset;
}
