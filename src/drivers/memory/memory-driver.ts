/**
 * `memory://[name]`: the in-process broker. Drivers created with the same URL in one process share
 * one broker (like two clients of a real one); `memory://` and `memory://other` are separate.
 *
 * URL parameters:
 *   maxBacklog=N        flow control: a send waits while the slowest live group on its destination
 *                       is more than N messages behind (default 200000; 0 disables).
 *   maxMessageBytes=N   largest accepted value (default 1 MiB, Kafka's default), so an oversized
 *                       message fails here the way it would on a real broker.
 *   retain=N            messages each destination keeps after every consumer group has read them,
 *                       for groups that join later with fromBeginning (default 0: what all groups
 *                       have read is dropped, 256 messages at a time; taps are groups here).
 *                       A destination no group reads yet keeps everything. The broker keeps the
 *                       most any client asked for.
 *   maxLength=N         the most messages a destination keeps, read or not: beyond it the oldest
 *                       are dropped (like a RabbitMQ queue's max-length, drop-head), and a group
 *                       that had not read them resumes at the oldest kept. Default: no limit; the
 *                       broker keeps the most any client asked for (no parameter = no limit).
 */
import { ConfigError, DeliveryError, InternalError, TopologyError, UsageError } from '../../errors.js';
import type {
  DestinationSpec,
  Driver,
  DeliveryHandler,
  LinkStatus,
  OutgoingMessage,
  SubscribeOptions,
  Subscription,
} from '../types.js';
import { DeclaredDriver } from '../common.js';
import type { BrokerUrl } from '../url.js';
import { MemoryBroker, Subscriber } from './broker.js';
import { MEMORY_DRIVER } from './descriptor.js';

const brokers = new Map<string, MemoryBroker>();

/** `memory://`, `memory://x`, `memory:///x`: the name is whatever follows the scheme, minus the query. */
function brokerName(url: BrokerUrl): string {
  const host = url.hosts.map((h) => (h.port ? `${h.host}:${h.port}` : h.host)).join(',');
  return [host, url.path].filter((part) => part !== '').join('/');
}

function sharedBroker(name: string): MemoryBroker {
  let broker = brokers.get(name);
  if (broker === undefined) {
    broker = new MemoryBroker(name);
    brokers.set(name, broker);
  }
  return broker;
}

const DEFAULT_MAX_BACKLOG = 200_000;
const DEFAULT_MAX_MESSAGE_BYTES = 1024 * 1024;

function intParam(url: BrokerUrl, name: string, fallback: number): number {
  const text = url.params[name];
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text)) throw new ConfigError(`memory broker parameter ${name}='${text}' is not a whole number (${url.redacted})`);
  return Number(text);
}

class MemoryDriver extends DeclaredDriver implements Driver {
  private state: 'new' | 'open' | 'closed' = 'new';
  private readonly broker: MemoryBroker;
  private readonly maxBacklog: number;
  private readonly maxMessageBytes: number;
  private readonly subscriptions = new Set<Subscriber>();
  private readonly pendingSends = new Set<Promise<void>>();
  private closing: Promise<void> | undefined;

  constructor(readonly url: BrokerUrl) {
    super(MEMORY_DRIVER);
    this.broker = sharedBroker(brokerName(url));
    this.maxBacklog = intParam(url, 'maxBacklog', DEFAULT_MAX_BACKLOG);
    this.maxMessageBytes = intParam(url, 'maxMessageBytes', DEFAULT_MAX_MESSAGE_BYTES);
    this.broker.retain = Math.max(this.broker.retain, intParam(url, 'retain', 0));
    this.broker.maxLength = Math.max(this.broker.maxLength, url.params.maxLength === undefined ? Infinity : intParam(url, 'maxLength', 0));
  }

  /** Why an operation cannot run now, or undefined when it can. */
  private unusable(operation: string): Error | undefined {
    if (this.state === 'open') return undefined;
    if (this.state === 'new') return new InternalError(`memory driver: ${operation} before connect()`);
    return operation === 'send'
      ? new DeliveryError(`cannot send: the connection to ${this.url.redacted} is closed`)
      : new InternalError(`memory driver: ${operation} after close()`);
  }

  connect(): Promise<void> {
    if (this.state === 'closed') return Promise.reject(new InternalError('memory driver: connect() after close()'));
    this.state = 'open';
    return Promise.resolve();
  }

  declare(destinations: DestinationSpec[]): Promise<string[]> {
    const err = this.unusable('declare');
    if (err) return Promise.reject(err);
    for (const spec of destinations) {
      if (typeof spec.name !== 'string' || spec.name === '') {
        return Promise.reject(new TopologyError('cannot declare a destination without a name'));
      }
    }
    for (const spec of destinations) {
      this.broker.destination(spec.name);
      if (spec.deadLetter) this.broker.destination(`${spec.name}.dlq`);
    }
    // memory:// holds only payq's own layout: nothing existing can change how payq behaves.
    return Promise.resolve([]);
  }

  send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    const err = this.unusable('send');
    if (err) return Promise.reject(err);
    if (destination === '') return Promise.reject(new TopologyError('cannot send to a destination without a name'));
    // Check the whole batch first: it is stored entirely or not at all.
    for (let i = 0; i < messages.length; i++) {
      const size = messages[i]!.value.length;
      if (size > this.maxMessageBytes) {
        return Promise.reject(
          new DeliveryError(`message of ${size} bytes to ${destination} is larger than the broker's limit of ${this.maxMessageBytes} bytes`, {
            hint: 'use smaller messages, or raise the limit with memory://?maxMessageBytes=N',
          }),
        );
      }
    }
    const dest = this.broker.destination(destination);
    dest.append(messages);
    const acked = dest.acknowledge(this.maxBacklog);
    this.pendingSends.add(acked);
    void acked.then(() => this.pendingSends.delete(acked));
    return acked;
  }

  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    const err = this.unusable('subscribe');
    if (err) return Promise.reject(err);
    const { destinations, group, fromBeginning, prefetch, tap = false } = options;
    if (!Number.isInteger(prefetch) || prefetch < 1) {
      return Promise.reject(new UsageError(`prefetch must be a whole number of at least 1, got ${prefetch}`));
    }
    if (destinations.length === 0 || destinations.some((d) => d === '')) {
      return Promise.reject(new UsageError('subscribe needs at least one destination name'));
    }
    if (group === '' && !tap) return Promise.reject(new UsageError('subscribe needs a consumer group name'));
    if (options.exchange !== undefined || options.streamOffset !== undefined) {
      return Promise.reject(new ConfigError('memory:// has no exchanges or stream queues: --exchange and --stream-offset are RabbitMQ modes'));
    }
    // A tap gets a group of its own on each destination (its `group` is ignored), removed when it closes.
    const cursors = [...new Set(destinations)].map((name) => {
      const dest = this.broker.destination(name);
      return tap ? dest.tapGroup(fromBeginning) : dest.group(group, fromBeginning);
    });
    const subscriber = new Subscriber(cursors, prefetch, handler);
    this.subscriptions.add(subscriber);
    subscriber.kick();
    return Promise.resolve({
      close: async () => {
        await subscriber.close();
        this.subscriptions.delete(subscriber);
      },
    });
  }

  exists(destinations: string[]): Promise<Set<string>> {
    const err = this.unusable('exists');
    if (err) return Promise.reject(err);
    return Promise.resolve(new Set(destinations.filter((name) => this.broker.has(name))));
  }

  brokerVersion(): Promise<string | undefined> {
    return Promise.resolve('payq memory broker');
  }

  /** In process: the broker never goes away while the driver is open. */
  link(): LinkStatus {
    return { connected: this.state === 'open', reconnects: 0, downMs: 0, gone: false };
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      this.state = 'closed';
      // Subscriptions first: a send held by flow control is released once its groups are gone.
      await Promise.all([...this.subscriptions].map((s) => s.close()));
      this.subscriptions.clear();
      await Promise.all(this.pendingSends);
    })();
    return this.closing;
  }
}

export function createDriver(url: BrokerUrl): Driver {
  return new MemoryDriver(url);
}
