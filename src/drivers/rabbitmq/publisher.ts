/**
 * Sends over one confirm channel shared by every concurrent batch. Each message gets its own
 * confirm callback, so batches in flight at once settle independently; a batch resolves when the
 * broker has confirmed all of its messages.
 *
 * - Backpressure: when `publish()` returns false (the channel's write buffer is full) every
 *   sender waits for the channel's 'drain' before publishing more.
 * - Routing: to the topic exchange with `D.<type>.<key>` (topology.ts).
 * - A send never creates a queue, and a send to a missing queue is never silently lost:
 *   1. before the first send to a destination, the queue is checked (passive declare; missing →
 *      TopologyError, nothing sent) and bound to the exchange with `D.*.*` (idempotent; a queue
 *      payq did not declare, e.g. a user's own queue that replay-dlq returns messages to, is
 *      thereby reachable). `mandatory` alone can't guarantee this: any catch-all queue bound to
 *      the exchange (a tap on `#`) makes every message "routed" even when D is gone.
 *   2. everything is published `mandatory`: RabbitMQ sends basic.return before the basic.ack of a
 *      message that reached no queue, and it counts as failed (DeliveryError); the destination is
 *      then checked again before its next send. Returns are matched to messages by message-id +
 *      exchange + routing key.
 *   A user who may not bind, or a vhost where the exchange can't be created, sends by queue name
 *   through the default exchange instead (still mandatory, exact).
 * - A lost connection (README "Failure drills"): messages published and not yet confirmed fail
 *   their batch with an error flagged `unconfirmed` (and retriable): the broker may have stored
 *   them, so they are never published again here; the caller counts them failed (unconfirmed).
 *   A batch not yet begun, and new sends, wait for the reconnect (connection.ts) and go on the
 *   new channel; when the reconnect gives up they fail with its BrokerUnavailableError.
 */
import type { ConfirmChannel, Message, Options } from 'amqplib';
import { AuthError, BrokerUnavailableError, DeliveryError, PayqError, TopologyError } from '../../errors.js';
import type { OutgoingMessage } from '../types.js';
import type { BrokerUrl } from '../url.js';
import type { RabbitMqConfig } from './config.js';
import { channelCloseReason, closeQuietly, type AmqpConnection } from './connection.js';
import { PendingWork } from '../common.js';
import { nackedError, operationError, replyCode, ReplyCode, serverText, unroutableError } from './errors.js';
import { publishOptions } from './message.js';
import { bindingPattern, routingKey, validateDestination } from './topology.js';

interface PubChannel {
  ch: ConfirmChannel;
  closed: boolean;
  needDrain: boolean;
  drainWaiters: Array<() => void>;
  /** Unconfirmed messages by message-id, to match basic.return frames. */
  byId: Map<string, Pending | Pending[]>;
  /** Whether the topic exchange exists (else everything goes by queue name). */
  topic: boolean;
}

interface Pending {
  batch: Batch;
  exchange: string;
  routingKey: string;
  content: Buffer;
  options: Options.Publish;
  returned: boolean;
  settled: boolean;
}

/**
 * 'closed': published, and the channel closed before its confirm (the broker may hold it);
 * 'unsent': not published, the channel being closed. Why is asked when the batch finishes.
 */
type Outcome = 'ok' | 'nacked' | 'unroutable' | 'closed' | 'unsent' | PayqError;
/** topic: via the exchange, the queue is bound; queue: by name through the default exchange. */
type Route = 'topic' | 'queue';

class Batch {
  private remaining: number;
  private nacked = 0;
  private unroutable = 0;
  private closed = 0;
  private unsent = 0;
  private error: PayqError | undefined;
  readonly promise: Promise<void>;
  private resolve!: () => void;
  private reject!: (err: Error) => void;

  constructor(
    readonly destination: string,
    readonly total: number,
    /** Why the channel closed; `unconfirmed`: some of the batch were published and not confirmed. */
    private readonly closedError: (unconfirmed: number) => PayqError,
  ) {
    this.remaining = total;
    this.promise = new Promise<void>((resolve, reject) => {
      this.resolve = resolve;
      this.reject = reject;
    });
  }

  settle(outcome: Outcome, count = 1): void {
    if (outcome === 'nacked') this.nacked += count;
    else if (outcome === 'unroutable') this.unroutable += count;
    else if (outcome === 'closed') this.closed += count;
    else if (outcome === 'unsent') this.unsent += count;
    else if (outcome !== 'ok') this.error ??= outcome;
    this.remaining -= count;
    // A microtask later: when a connection drops, amqplib fails the confirms before it emits the
    // connection's 'close', and the error should say why the connection went.
    if (this.remaining === 0) queueMicrotask(() => this.finish());
  }

  private finish(): void {
    if (this.closed + this.unsent > 0) this.error ??= this.closedError(this.closed);
    if (this.error) this.reject(this.error);
    else if (this.unroutable > 0) this.reject(unroutableError(this.destination, this.unroutable, this.total));
    else if (this.nacked > 0) this.reject(nackedError(this.destination, this.nacked, this.total));
    else this.resolve();
  }
}

export interface PublisherTuning {
  /** Frames amqplib buffers per channel before `publish()` returns false. */
  highWaterMark: number;
}

export class Publisher {
  private current: PubChannel | undefined;
  private opening: Promise<PubChannel> | undefined;
  private closing = false;
  private readonly inFlight = new PendingWork();
  /** Per destination: checked to exist and bound (topic), or to be sent by queue name. */
  private readonly routes = new Map<string, Promise<Route>>();

  constructor(
    private readonly conn: AmqpConnection,
    private readonly url: BrokerUrl,
    private readonly config: RabbitMqConfig,
    private readonly tuning: PublisherTuning,
  ) {}

  /** declare() created and bound this queue. */
  declared(name: string): void {
    this.routes.set(name, Promise.resolve('topic'));
  }

  /** Resolves when the broker confirmed every message; close() waits for sends already begun. */
  send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    if (this.closing) return Promise.reject(this.closedByPayq(destination));
    return this.inFlight.track(this.sendBatch(destination, messages));
  }

  /** deadLetter's copy: one message to `queue` by name; the queue must exist. */
  sendToQueue(queue: string, content: Buffer, options: Options.Publish): Promise<void> {
    if (this.closing) return Promise.reject(this.closedByPayq(queue));
    return this.inFlight.track(this.sendOne(queue, content, options));
  }

  private async sendBatch(destination: string, messages: OutgoingMessage[]): Promise<void> {
    validateDestination(destination);
    if (messages.length === 0) return;
    for (const m of messages) {
      // amqplib would throw mid-publish, after registering the confirm callback.
      if (!Buffer.isBuffer(m.value)) throw new DeliveryError(`a message sent to '${destination}' has no Buffer value`);
    }
    const pc = await this.channel();
    const byName = !pc.topic || (await this.route(destination)) === 'queue';
    const batch = new Batch(destination, messages.length, (unconfirmed) => this.closedError(pc, destination, unconfirmed, messages.length));
    const timestamp = Math.floor(Date.now() / 1000);
    for (let i = 0; i < messages.length; i++) {
      if (pc.needDrain && !pc.closed) await new Promise<void>((resolve) => pc.drainWaiters.push(resolve));
      if (pc.closed && i === 0 && this.conn.recovering) {
        // Lost before anything of this batch was published: safe to send it all after the reconnect.
        return this.sendBatch(destination, messages);
      }
      if (pc.closed) {
        batch.settle('unsent', messages.length - i);
        break;
      }
      const m = messages[i]!;
      this.publish(pc, {
        batch,
        exchange: byName ? '' : this.config.exchange,
        routingKey: byName ? destination : routingKey(destination, m.type, m.key),
        content: m.value,
        options: publishOptions(m, timestamp),
        returned: false,
        settled: false,
      });
    }
    return batch.promise;
  }

  private async sendOne(queue: string, content: Buffer, options: Options.Publish): Promise<void> {
    const pc = await this.channel();
    const batch = new Batch(queue, 1, (unconfirmed) => this.closedError(pc, queue, unconfirmed, 1));
    if (pc.needDrain && !pc.closed) await new Promise<void>((resolve) => pc.drainWaiters.push(resolve));
    if (pc.closed && this.conn.recovering) return this.sendOne(queue, content, options);
    if (pc.closed) batch.settle('unsent');
    else {
      this.publish(pc, {
        batch,
        exchange: '',
        routingKey: queue,
        content,
        options: { ...options, mandatory: true, messageId: options.messageId ?? `payq-dead-letter-${Date.now().toString(36)}-${Math.random().toString(36).slice(2)}` },
        returned: false,
        settled: false,
      });
    }
    return batch.promise;
  }

  /** Waits (up to `timeoutMs`) for batches in flight, then closes the channel. */
  async close(timeoutMs: number): Promise<void> {
    this.closing = true;
    if (this.inFlight.size > 0) {
      let timer: NodeJS.Timeout | undefined;
      await Promise.race([
        this.inFlight.settled(),
        new Promise((resolve) => (timer = setTimeout(resolve, timeoutMs))),
      ]);
      clearTimeout(timer);
    }
    const pc = this.current ?? (await this.opening?.catch(() => undefined));
    this.current = undefined;
    if (pc && !pc.closed) {
      try {
        await pc.ch.close();
      } catch {
        // The connection went first; amqplib has already failed what was pending.
      }
    }
  }

  private publish(pc: PubChannel, p: Pending): void {
    const id = p.options.messageId as string;
    indexAdd(pc.byId, id, p);
    const callback = (err: unknown) => this.confirmed(pc, p, err);
    try {
      if (!pc.ch.publish(p.exchange, p.routingKey, p.content, p.options, callback)) pc.needDrain = true;
    } catch (err) {
      indexRemove(pc.byId, id, p);
      // ConfirmChannel.publish registers the callback before encoding; if encoding threw, that
      // callback has no delivery tag and would shift every later confirm by one. Take it back.
      // (On a closing/closed channel amqplib has already failed or will fail that window itself.)
      const window = (pc.ch as unknown as { unconfirmed?: unknown[] }).unconfirmed;
      // IllegalOperationError: the channel is closing or closed (by payq, the broker or the network).
      const closing = pc.closed || (err instanceof Error && err.name === 'IllegalOperationError');
      if (!closing) {
        if (window && window[window.length - 1] === callback) window.pop();
        else void pc.ch.close().catch(() => undefined);
      }
      if (!p.settled) {
        p.settled = true;
        p.batch.settle(
          closing
            ? 'unsent'
            : new DeliveryError(`cannot encode a message for '${p.batch.destination}': ${err instanceof Error ? err.message : String(err)}`, { cause: err }),
        );
      }
    }
  }

  private confirmed(pc: PubChannel, p: Pending, err: unknown): void {
    if (p.settled) return;
    indexRemove(pc.byId, p.options.messageId as string, p);
    let outcome: Outcome;
    if (err) {
      outcome = pc.closed || /closed/i.test(String((err as Error).message)) ? 'closed' : 'nacked';
    } else if (p.returned) {
      this.routes.delete(p.batch.destination);
      outcome = 'unroutable';
    } else {
      outcome = 'ok';
    }
    p.settled = true;
    p.batch.settle(outcome);
  }

  private onReturn(pc: PubChannel, msg: Message): void {
    const id = msg.properties.messageId as string | undefined;
    if (id === undefined) return;
    const entry = pc.byId.get(id);
    const candidates = entry === undefined ? [] : Array.isArray(entry) ? entry : [entry];
    const p = candidates.find((c) => !c.returned && c.exchange === msg.fields.exchange && c.routingKey === msg.fields.routingKey);
    if (p) p.returned = true;
  }

  private route(destination: string): Promise<Route> {
    let route = this.routes.get(destination);
    if (!route) {
      route = this.ensureRoute(destination);
      this.routes.set(destination, route);
      route.catch(() => this.routes.delete(destination));
    }
    return route;
  }

  private async ensureRoute(queue: string): Promise<Route> {
    const { exchange } = this.config;
    const ch = await this.conn.createChannel();
    try {
      try {
        await ch.checkQueue(queue);
      } catch (err) {
        if (replyCode(err) !== ReplyCode.notFound) throw operationError(err, `check queue '${queue}'`, this.url, this.conn.lost);
        throw new TopologyError(`cannot send to '${queue}': no such queue in vhost '${this.config.vhost}'`, {
          cause: err,
          hint: 'declare the destination first (payq produce declares it), or check the name',
        });
      }
      try {
        await ch.bindQueue(queue, exchange, bindingPattern(queue));
        return 'topic';
      } catch (err) {
        if (replyCode(err) === ReplyCode.accessRefused) return 'queue';
        throw operationError(err, `bind queue '${queue}' to exchange '${exchange}'`, this.url, this.conn.lost);
      }
    } finally {
      await closeQuietly(ch);
    }
  }

  /** The confirm channel, opened again when it closed; waits for a reconnect under way (connection.ts). */
  private async channel(): Promise<PubChannel> {
    for (;;) {
      if (this.current && !this.current.closed) return this.current;
      this.opening ??= this.openChannel().finally(() => {
        this.opening = undefined;
      });
      try {
        return await this.opening;
      } catch (err) {
        // The connection went while the channel opened: wait for the reconnect (get() gives up in time).
        if (!this.conn.recovering) throw err;
        await this.conn.get();
      }
    }
  }

  private async openChannel(): Promise<PubChannel> {
    const topic = await this.exchangeUsable();
    const ch = await this.conn.createConfirmChannel(this.tuning.highWaterMark);
    const pc: PubChannel = { ch, closed: false, needDrain: false, drainWaiters: [], byId: new Map(), topic };
    const wake = () => {
      pc.needDrain = false;
      const waiters = pc.drainWaiters;
      pc.drainWaiters = [];
      for (const w of waiters) w();
    };
    ch.on('drain', wake);
    ch.on('return', (msg: Message) => this.onReturn(pc, msg));
    ch.on('close', () => {
      pc.closed = true;
      if (this.current === pc) this.current = undefined;
      wake();
    });
    this.current = pc;
    return pc;
  }

  /**
   * True when the topic exchange exists or could be created. A passive check first, since a
   * user with write but no configure permission may still publish to an existing exchange; when
   * it is missing and can't be created, everything is sent by queue name. Each step on its own
   * channel: a failed check closes the channel it ran on.
   */
  private async exchangeUsable(): Promise<boolean> {
    const name = this.config.exchange;
    const check = await this.conn.createChannel();
    try {
      await check.checkExchange(name);
      return true;
    } catch (err) {
      if (replyCode(err) !== ReplyCode.notFound) throw operationError(err, `check exchange '${name}'`, this.url, this.conn.lost);
    } finally {
      await closeQuietly(check);
    }
    const declare = await this.conn.createChannel();
    try {
      await declare.assertExchange(name, 'topic', { durable: true });
      return true;
    } catch (err) {
      if (replyCode(err) === ReplyCode.accessRefused) return false;
      throw operationError(err, `declare exchange '${name}'`, this.url, this.conn.lost);
    } finally {
      await closeQuietly(declare);
    }
  }

  /**
   * Why messages in flight on `pc` were not confirmed. `unconfirmed` of the `total` were
   * published: the broker may have stored them (the error says so, flagged `unconfirmed`).
   */
  private closedError(pc: PubChannel, destination: string, unconfirmed: number, total: number): PayqError {
    if (this.closing) return this.closedByPayq(destination);
    if (!this.conn.isOpen || this.conn.down) {
      const why = this.conn.lost ? this.conn.lost.message : `lost the connection to RabbitMQ at ${this.url.redacted}`;
      if (unconfirmed === 0) return new BrokerUnavailableError(`${why} (before ${total} message(s) to '${destination}' were sent)`, { retriable: true, cause: this.conn.lost });
      return new BrokerUnavailableError(`${why}, before it confirmed ${unconfirmed} of ${total} message(s) sent to '${destination}': the broker may have stored them (unconfirmed, not sent again)`, {
        retriable: true,
        unconfirmed: true,
        cause: this.conn.lost,
      });
    }
    const reason = channelCloseReason(pc.ch);
    const text = reason ? serverText(reason) : 'the channel closed';
    switch (replyCode(reason)) {
      case ReplyCode.notFound:
        return new TopologyError(`cannot send to '${destination}': ${text}`, { cause: reason });
      case ReplyCode.accessRefused:
        return new AuthError(`RabbitMQ at ${this.url.redacted} refused a send to '${destination}': ${text}`, { cause: reason });
      case ReplyCode.preconditionFailed:
        return new DeliveryError(`RabbitMQ refused a message sent to '${destination}': ${text}`, { cause: reason });
      default:
        return new BrokerUnavailableError(`the publishing channel to ${this.url.redacted} closed before RabbitMQ confirmed the sends to '${destination}': ${text}`, {
          cause: reason,
          retriable: true,
          unconfirmed: unconfirmed > 0,
        });
    }
  }

  private closedByPayq(destination: string): BrokerUnavailableError {
    return new BrokerUnavailableError(`the RabbitMQ driver was closed before the sends to '${destination}' were confirmed`);
  }
}

function indexAdd(map: Map<string, Pending | Pending[]>, id: string, p: Pending): void {
  const entry = map.get(id);
  if (entry === undefined) map.set(id, p);
  else if (Array.isArray(entry)) entry.push(p);
  else map.set(id, [entry, p]);
}

function indexRemove(map: Map<string, Pending | Pending[]>, id: string, p: Pending): void {
  const entry = map.get(id);
  if (entry === p) map.delete(id);
  else if (Array.isArray(entry)) {
    const i = entry.indexOf(p);
    if (i !== -1) entry.splice(i, 1);
    if (entry.length === 0) map.delete(id);
  }
}
