/**
 * The RabbitMQ (AMQP 0-9-1) driver, on amqplib's promise API. The layout and routing rules are in
 * topology.ts, sending in publisher.ts, consuming and dead-lettering in subscriber.ts.
 */
import { TopologyError } from '../../errors.js';
import type { DeliveryHandler, DestinationSpec, Driver, DriverOptions, LinkStatus, OutgoingMessage, SubscribeOptions, Subscription } from '../types.js';
import { DEFAULT_DRIVER_OPTIONS } from '../types.js';
import { DeclaredDriver, DriverStop, LinkMonitor, startTracked, usedAfterClose } from '../common.js';
import type { BrokerUrl } from '../url.js';
import { rabbitMqConfig, type RabbitMqConfig } from './config.js';
import { AmqpConnection, closeQuietly } from './connection.js';
import { RABBITMQ_DRIVER } from './descriptor.js';
import { operationError, replyCode, ReplyCode } from './errors.js';
import { Publisher } from './publisher.js';
import { RabbitMqSubscription, type DeadLetterMode } from './subscriber.js';
import { bindingPattern, dlqName, isDeadLetterQueueName, queueArguments, validateDestination } from './topology.js';

/** Frames amqplib buffers per channel before publish() reports backpressure (its default is 1024). */
const WRITE_HIGH_WATER_MARK = 1024;
/** close() waits this long for batches in flight to be confirmed. */
const CLOSE_TIMEOUT_MS = 10_000;

export function createDriver(url: BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Driver {
  return new RabbitMqDriver(url, options);
}

class RabbitMqDriver extends DeclaredDriver implements Driver {
  private readonly config: RabbitMqConfig;
  private readonly pub: AmqpConnection;
  private readonly sub: AmqpConnection;
  private readonly publisher: Publisher;
  private readonly subscriptions = new Set<RabbitMqSubscription>();
  /** Per queue: its dead-letter setup was checked (or declared) by this driver. */
  private readonly deadLetterChecks = new Map<string, Promise<DeadLetterMode>>();
  private closing: Promise<void> | undefined;
  private readonly linkMonitor: LinkMonitor;
  /** A connection to the broker worked once (connect() or since). */
  private connected = false;

  constructor(
    readonly url: BrokerUrl,
    readonly options: DriverOptions = DEFAULT_DRIVER_OPTIONS,
  ) {
    super(RABBITMQ_DRIVER);
    this.linkMonitor = new LinkMonitor(options.reconnectTimeoutMs);
    this.config = rabbitMqConfig(url);
    // The link is down while either connection is lost, and up again when both work.
    const events = {
      opened: () => {
        this.connected = true;
        if (!this.pub.down && !this.sub.down) this.linkMonitor.restored();
      },
      lost: () => this.linkMonitor.lost(),
    };
    // Once the driver has connected, a connection opened first during an outage waits for the broker too.
    const patient = () => this.connected;
    const stop = new DriverStop(options.signal, `rabbitmq ${url.redacted}`);
    this.pub = new AmqpConnection(url, this.config, 'publish', options.reconnectTimeoutMs, events, stop, patient);
    this.sub = new AmqpConnection(url, this.config, 'consume', options.reconnectTimeoutMs, events, stop, patient);
    this.publisher = new Publisher(this.pub, url, this.config, { highWaterMark: WRITE_HIGH_WATER_MARK });
  }

  async connect(): Promise<void> {
    this.assertOpen('connect');
    await this.pub.get();
  }

  /**
   * payq's layout, created where missing (types.ts, declare). An existing queue is never
   * redeclared, whatever its arguments (a user's classic, quorum or length-limited queue): it is
   * bound to the topic exchange so payq's sends reach it, and when it has not payq's dead-letter
   * arguments, dead letters are published to `<queue>.dlq` by payq itself (a notice says so).
   * Each passive check runs on a throw-away channel: a failed one closes its channel.
   */
  async declare(destinations: DestinationSpec[]): Promise<string[]> {
    this.assertOpen('declare');
    for (const spec of destinations) validateDestination(spec.name);
    if (destinations.length === 0) return [];
    const { exchange, deadLetterExchange } = this.config;
    const notices: string[] = [];
    const existing = await this.exists(destinations.flatMap((d) => (d.deadLetter ? [d.name, dlqName(d.name)] : [d.name])));
    const ch = await this.pub.createChannel();
    let step = `declare exchange '${exchange}'`;
    try {
      await ch.assertExchange(exchange, 'topic', { durable: true });
      if (destinations.some((d) => d.deadLetter)) {
        step = `declare exchange '${deadLetterExchange}'`;
        await ch.assertExchange(deadLetterExchange, 'direct', { durable: true });
      }
      for (const spec of destinations) {
        let native = true;
        if (!existing.has(spec.name)) {
          step = `declare queue '${spec.name}'`;
          await ch.assertQueue(spec.name, { durable: true, arguments: queueArguments(spec, this.config) });
        } else if (spec.deadLetter) {
          native = await this.hasPayqDeadLetter(spec.name);
          if (!native) {
            notices.push(`queue '${spec.name}' exists without payq's dead-letter exchange: used as it is; payq dead-letters by publishing to '${dlqName(spec.name)}' itself (no x-death header)`);
          }
        }
        step = `bind queue '${spec.name}' to exchange '${exchange}'`;
        await ch.bindQueue(spec.name, exchange, bindingPattern(spec.name));
        this.publisher.declared(spec.name);
        if (!spec.deadLetter) continue;
        const dlq = dlqName(spec.name);
        if (!existing.has(dlq)) {
          step = `declare queue '${dlq}'`;
          await ch.assertQueue(dlq, { durable: true });
        }
        step = `bind queue '${dlq}'`;
        if (native) await ch.bindQueue(dlq, deadLetterExchange, dlq);
        await ch.bindQueue(dlq, exchange, bindingPattern(dlq));
        this.publisher.declared(dlq);
        this.deadLetterChecks.set(spec.name, Promise.resolve(native ? 'native' : 'publish'));
      }
    } catch (err) {
      throw operationError(err, step, this.url, this.pub.lost);
    } finally {
      await closeQuietly(ch);
    }
    return notices;
  }

  /** Still open while close() waits for subscriptions: a finishing handler may send its next events. */
  send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    return this.publisher.send(destination, messages);
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    this.assertOpen('subscribe');
    const subscription = new RabbitMqSubscription(
      {
        url: this.url,
        config: this.config,
        conn: this.sub,
        publisher: this.publisher,
        checkDeadLetter: (queue) => this.checkDeadLetter(queue),
        isPayqQueue: (queue) => this.isPayqQueue(queue),
        exchangeExists: (name) => this.exchangeExists(name),
        exists: (queues) => this.exists(queues),
        forget: (s) => this.subscriptions.delete(s),
        reconnectTimeoutMs: this.options.reconnectTimeoutMs,
      },
      options,
      handler,
    );
    return startTracked(this.subscriptions, subscription);
  }

  /** A passive declare per queue; a missing one closes its channel (404), so each gets its own. */
  async exists(destinations: string[]): Promise<Set<string>> {
    this.assertOpen('exists');
    const found = new Set<string>();
    for (const queue of new Set(destinations)) {
      // A name RabbitMQ cannot hold (too long, reserved) names no queue.
      try {
        validateDestination(queue);
      } catch {
        continue;
      }
      const ch = await this.pub.createChannel();
      try {
        await ch.checkQueue(queue);
        found.add(queue);
      } catch (err) {
        if (replyCode(err) !== ReplyCode.notFound) throw operationError(err, `check queue '${queue}'`, this.url, this.pub.lost);
      } finally {
        await closeQuietly(ch);
      }
    }
    return found;
  }

  async brokerVersion(): Promise<string | undefined> {
    this.assertOpen('brokerVersion');
    await this.pub.get();
    const props = this.pub.serverProperties();
    const text = (v: unknown) => (typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : undefined);
    const product = text(props?.['product']);
    const version = text(props?.['version']);
    if (!product && !version) return undefined;
    return [product, version].filter(Boolean).join(' ');
  }

  link(): LinkStatus {
    return this.linkMonitor.status();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      // Subscriptions first: a handler finishing may still dead-letter through the publisher.
      await Promise.allSettled([...this.subscriptions].map((s) => s.close()));
      await this.publisher.close(CLOSE_TIMEOUT_MS);
      await Promise.allSettled([this.pub.close(), this.sub.close()]);
    })();
    return this.closing;
  }

  /**
   * How to dead-letter from `queue`: 'native' when it has payq's DLX (the marked copy expires or
   * is rejected into it, RabbitMQ adding x-death), 'publish' when it has not (a queue payq did not
   * declare): the copy is then published to `<queue>.dlq` by name, as on NATS. Either way the
   * DLQ must exist (TopologyError).
   */
  private checkDeadLetter(queue: string): Promise<DeadLetterMode> {
    let check = this.deadLetterChecks.get(queue);
    if (!check) {
      check = this.probeDeadLetter(queue);
      this.deadLetterChecks.set(queue, check);
      check.catch(() => this.deadLetterChecks.delete(queue));
    }
    return check;
  }

  private async probeDeadLetter(queue: string): Promise<DeadLetterMode> {
    const dlq = dlqName(queue);
    const mode: DeadLetterMode = (await this.hasPayqDeadLetter(queue)) ? 'native' : 'publish';
    if (!(await this.exists([dlq])).has(dlq)) {
      throw new TopologyError(`cannot dead-letter from queue '${queue}': its dead-letter queue '${dlq}' does not exist`, {
        hint: 'declare the destination with a dead-letter queue (payq worker and produce do)',
      });
    }
    return mode;
  }

  /**
   * Whether an existing queue has payq's dead-letter arguments. AMQP has no way to read a queue's
   * arguments, but a declare with the same arguments succeeds exactly when they are equal
   * (RabbitMQ compares every x- argument) and changes nothing; unequal, it fails and closes its
   * own throw-away channel, leaving the queue untouched.
   */
  private async hasPayqDeadLetter(queue: string): Promise<boolean> {
    const ch = await this.pub.createChannel();
    try {
      await ch.assertQueue(queue, { durable: true, arguments: queueArguments({ name: queue, deadLetter: true }, this.config) });
      return true;
    } catch (err) {
      if (replyCode(err) === ReplyCode.preconditionFailed) return false;
      throw operationError(err, `check the dead-letter setup of queue '${queue}'`, this.url, this.pub.lost);
    } finally {
      await closeQuietly(ch);
    }
  }

  /** For a tap: whether `queue` is payq's layout (so what is sent to it passes payq's exchange). */
  private async isPayqQueue(queue: string): Promise<boolean> {
    if (!isDeadLetterQueueName(queue)) return this.hasPayqDeadLetter(queue);
    // payq declares a DLQ plainly durable, without arguments.
    const ch = await this.pub.createChannel();
    try {
      await ch.assertQueue(queue, { durable: true });
      return true;
    } catch (err) {
      if (replyCode(err) === ReplyCode.preconditionFailed) return false;
      throw operationError(err, `check queue '${queue}'`, this.url, this.pub.lost);
    } finally {
      await closeQuietly(ch);
    }
  }

  /** Passive exchange check on a throw-away channel. */
  private async exchangeExists(name: string): Promise<boolean> {
    const ch = await this.pub.createChannel();
    try {
      await ch.checkExchange(name);
      return true;
    } catch (err) {
      if (replyCode(err) === ReplyCode.notFound) return false;
      throw operationError(err, `check exchange '${name}'`, this.url, this.pub.lost);
    } finally {
      await closeQuietly(ch);
    }
  }

  private assertOpen(what: string): void {
    if (this.closing) throw usedAfterClose('RabbitMQ', this.url.redacted, what);
  }
}
