/**
 * The Kafka driver (kafkajs). The only module outside this folder that knows about it is the
 * registry, which imports it lazily.
 */
// Before kafkajs: puts payq's record codec in its place (see record-codec.ts).
import './record-codec.js';
import { Kafka, logLevel, Partitioners, type Admin, type Message, type Producer } from 'kafkajs';
import { BrokerUnavailableError, ConfigError, isPayqError } from '../../errors.js';
import type {
  DeliveryHandler,
  DestinationSpec,
  Driver,
  DriverOptions,
  LinkStatus,
  OutgoingMessage,
  SubscribeOptions,
  Subscription,
} from '../types.js';
import { DEFAULT_DRIVER_OPTIONS } from '../types.js';
import { DeclaredDriver, DriverStop, LinkMonitor, PendingWork, startTracked, usedAfterClose, withDeadline } from '../common.js';
import { retry, type BackoffOptions } from '../retry.js';
import { packPayqHeaders } from '../../events/payq-header.js';
import type { BrokerUrl } from '../url.js';
import { describeApiVersions, probeApiVersions } from './api-versions.js';
import { isValidTopicName, KAFKA_TUNING, kafkaConfigFromUrl } from './config.js';
import { KAFKA_DRIVER } from './descriptor.js';
import { classifyKafkaError, isLeaderless, mapKafkaError, type KafkaOperation } from './errors.js';
import { KafkaSubscription, type DeadLetterMessage, type TopicPartitionOffset } from './subscription.js';

/**
 * kafkajs 2.2.4's request queue schedules `setTimeout(throttledUntil - Date.now())` with
 * throttledUntil = -1 when nothing is throttled (kafkajs issue 1751, unfixed in its last
 * release); Node 24 then prints a TimeoutNegativeWarning line on every connection (and clamps the
 * delay to 1 ms, as older Node versions did silently). That one warning, and only it, is dropped
 * once this driver is loaded, so payq's output stays its own.
 */
const emitWarning = process.emitWarning.bind(process);
process.emitWarning = ((warning: string | Error, ...rest: unknown[]) => {
  const type = typeof rest[0] === 'string' ? rest[0] : (rest[0] as { type?: string } | undefined)?.type;
  if (type === 'TimeoutNegativeWarning' || (warning instanceof Error && warning.name === 'TimeoutNegativeWarning')) return;
  (emitWarning as (...args: unknown[]) => void)(warning, ...rest);
}) as typeof process.emitWarning;

const noop = () => {};

/** Bytes one produce request may carry: below the broker's default message.max.bytes (1 MiB) per
 *  record batch even when every message goes to one partition. */
const PRODUCE_REQUEST_BYTES = 900_000;

/** Waits between attempts to reach a cluster that went away, up to `reconnectTimeoutMs` in all. */
const RECONNECT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 5_000 };
/** Deletes of a tap's group tried while the coordinator still reports it non-empty. */
const GROUP_DELETE_ATTEMPTS = 5;
const GROUP_DELETE_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 800 };
/** Metadata polled this often until every new topic's partitions have a leader. */
const LEADER_POLL: BackoffOptions = { initialMs: 100, maxMs: 100, jitter: 0 };

interface QueuedProduce {
  topic: string;
  messages: Message[];
  bytes: number;
  resolve: () => void;
  /** `unconfirmed`: the request may have reached the broker (it was sent while the link failed). */
  reject: (err: unknown, unconfirmed: boolean) => void;
}

function messageBytes(m: Message): number {
  let n = 64 + (m.value ? (m.value as Buffer).length : 0) + (m.key ? String(m.key).length : 0);
  if (m.headers) for (const [k, v] of Object.entries(m.headers)) n += k.length + (v ? String(v).length : 0) + 8;
  return n;
}

function* chunksByBytes(messages: Message[]): Generator<Message[]> {
  let chunk: Message[] = [];
  let bytes = 0;
  for (const m of messages) {
    const b = messageBytes(m);
    if (chunk.length > 0 && bytes + b > PRODUCE_REQUEST_BYTES) {
      yield chunk;
      chunk = [];
      bytes = 0;
    }
    chunk.push(m);
    bytes += b;
  }
  if (chunk.length > 0) yield chunk;
}

class KafkaDriver extends DeclaredDriver implements Driver {
  private readonly kafka: Kafka;
  private admin: Promise<Admin> | undefined;
  private producer: Promise<Producer> | undefined;
  private readonly produceQueue: QueuedProduce[] = [];
  private producing = false;
  private readonly subscriptions = new Set<KafkaSubscription>();
  /** Sends and dead letters, settled before close() goes on. */
  private readonly pending = new PendingWork();
  private clusterId: string | undefined;
  private brokerCount: number | undefined;
  private closePromise: Promise<void> | undefined;
  private readonly linkMonitor: LinkMonitor;
  /** The command's stop (DriverOptions.signal): kafkajs' own waits and retries know nothing of it. */
  private readonly stop: DriverStop;

  constructor(
    readonly url: BrokerUrl,
    readonly options: DriverOptions = DEFAULT_DRIVER_OPTIONS,
  ) {
    super(KAFKA_DRIVER);
    this.linkMonitor = new LinkMonitor(options.reconnectTimeoutMs);
    this.kafka = new Kafka(kafkaConfigFromUrl(url, logLevel.NOTHING));
    this.stop = new DriverStop(options.signal, `kafka ${url.redacted}`);
  }

  /** Work in flight after the stop: abandoned once the grace is over (types.ts, DriverOptions.signal). */
  private graced<T>(work: Promise<T>, what: string): Promise<T> {
    return this.stop.inFlight(
      work,
      () => new BrokerUnavailableError(`kafka ${this.url.redacted}: no answer while ${what} within ${this.stop.graceS} s of the stop; not waiting any longer`, { retriable: true }),
    );
  }

  private fail(err: unknown, operation: KafkaOperation, subject?: string, unconfirmed = false) {
    return mapKafkaError(err, { operation, url: this.url, unconfirmed, ...(subject === undefined ? {} : { subject }) });
  }

  private assertOpen(what: string): void {
    if (this.closePromise) throw usedAfterClose('kafka', this.url.redacted, what);
  }

  /** The shared admin client, connected on first use; a failed connect is retried next time. */
  private getAdmin(): Promise<Admin> {
    this.admin ??= (async () => {
      const admin = this.kafka.admin({ retry: { ...KAFKA_TUNING.retry } });
      try {
        await admin.connect();
        return admin;
      } catch (err) {
        this.admin = undefined;
        await admin.disconnect().catch(noop);
        throw err;
      }
    })();
    return this.admin;
  }

  private getProducer(): Promise<Producer> {
    this.producer ??= (async () => {
      const producer = this.kafka.producer({
        createPartitioner: Partitioners.DefaultPartitioner,
        // Idempotence: a retried produce request (say, NOT_LEADER on one of its partitions
        // right after a topic was created) is written once, not again for every partition that
        // had already succeeded. kafkajs supports it with one request in flight, which per-key
        // order needs anyway (see produce()).
        idempotent: true,
        maxInFlightRequests: 1,
        allowAutoTopicCreation: true,
        retry: { ...KAFKA_TUNING.retry },
      });
      try {
        await producer.connect();
        return producer;
      } catch (err) {
        this.producer = undefined;
        await producer.disconnect().catch(noop);
        throw err;
      }
    })();
    return this.producer;
  }

  async connect(): Promise<void> {
    this.assertOpen('connect');
    const work = (async () => {
      const admin = await this.getAdmin();
      // A metadata round trip: the cluster answers, not just the socket.
      const cluster = await admin.describeCluster();
      this.clusterId = cluster.clusterId;
      this.brokerCount = cluster.brokers.length;
    })();
    try {
      await this.stop.starting(
        withDeadline(
          work,
          KAFKA_TUNING.connectDeadlineMs,
          () =>
            new BrokerUnavailableError(
              `kafka ${this.url.redacted}: no answer from the cluster within ${KAFKA_TUNING.connectDeadlineMs / 1000} s`,
              { retriable: true, hint: 'is Kafka running? (npm run brokers:up)' },
            ),
        ),
        'connecting',
      );
    } catch (err) {
      // Don't leave kafkajs reconnecting in the background after we gave up.
      void work.catch(noop);
      const admin = this.admin;
      this.admin = undefined;
      void admin?.then((a) => a.disconnect()).catch(noop);
      throw this.fail(err, 'connect');
    }
    this.linkMonitor.restored();
  }

  async declare(destinations: DestinationSpec[]): Promise<string[]> {
    this.assertOpen('declare');
    const wanted = new Map<string, number>();
    for (const spec of destinations) {
      const partitions = spec.partitions ?? 1;
      if (!Number.isInteger(partitions) || partitions < 1) {
        throw new ConfigError(`topic ${spec.name}: partitions must be a positive integer, got ${partitions}`);
      }
      const names = spec.deadLetter ? [spec.name, `${spec.name}.dlq`] : [spec.name];
      for (const name of names) {
        if (!isValidTopicName(name)) {
          throw new ConfigError(`'${name}' is not a valid Kafka topic name`, {
            hint: 'letters, digits, . _ and - only, at most 249 characters',
          });
        }
        // A DLQ gets the partitions of its topic, so dead letters keep their key's partition.
        wanted.set(name, Math.max(wanted.get(name) ?? 1, partitions));
      }
    }
    if (wanted.size === 0) return [];
    const subject = [...wanted.keys()].join(', ');
    return this.stop.starting(this.declareTopics(wanted, subject), `declaring ${subject}`);
  }

  private async declareTopics(wanted: Map<string, number>, subject: string): Promise<string[]> {
    try {
      const admin = await this.getAdmin();
      // Existing topics are used as they are (types.ts, declare): never re-created or extended.
      const existing = new Set(await admin.listTopics());
      const notices: string[] = [];
      const present = [...wanted.keys()].filter((t) => existing.has(t));
      if (present.length > 0) {
        const { topics: metadata } = await admin.fetchTopicMetadata({ topics: present });
        for (const t of metadata) {
          const asked = wanted.get(t.name)!;
          if (t.partitions.length !== asked) {
            notices.push(`topic '${t.name}' exists with ${t.partitions.length} partition${t.partitions.length === 1 ? '' : 's'} (payq would create ${asked}): used as it is`);
          }
        }
      }
      const missing = [...wanted].filter(([topic]) => !existing.has(topic));
      if (missing.length === 0) return notices;
      // replicationFactor -1: the broker's default.replication.factor (works with kafkajs'
      // CreateTopics v3 on Kafka 4.1). Already existing topics are fine (createTopics → false).
      await admin.createTopics({
        topics: missing.map(([topic, numPartitions]) => ({ topic, numPartitions, replicationFactor: -1 })),
        waitForLeaders: false,
        timeout: KAFKA_TUNING.declareTimeoutMs,
      });
      // Waited for here rather than by kafkajs, which skips the wait when any topic existed.
      await this.waitForLeaders(admin, [...wanted.keys()]);
      return notices;
    } catch (err) {
      throw this.fail(err, 'declare', subject);
    }
  }

  private async waitForLeaders(admin: Admin, topics: string[]): Promise<void> {
    let lastError: unknown;
    const notYet = new Error(`topic leaders not elected within ${KAFKA_TUNING.declareTimeoutMs} ms`);
    try {
      await retry(
        async () => {
          let ready = false;
          try {
            const { topics: metadata } = await admin.fetchTopicMetadata({ topics });
            ready =
              metadata.length === topics.length &&
              metadata.every((t) => t.partitions.length > 0 && t.partitions.every((p) => p.leader >= 0 && p.partitionErrorCode === 0));
          } catch (err) {
            lastError = err;
          }
          if (!ready) throw notYet;
        },
        { backoff: LEADER_POLL, deadlineMs: KAFKA_TUNING.declareTimeoutMs, signal: this.stop.signal },
      );
    } catch {
      throw lastError ?? notYet;
    }
  }

  async send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    this.assertOpen('send');
    if (messages.length === 0) return;
    await this.pending.track(this.produce('send', destination, messages.map(toKafkaMessage)));
  }

  /**
   * Resolves when every message is acknowledged (acks=all). Per-key order is a promise of the
   * Kafka driver, and kafkajs reorders concurrent produce requests (and retries) when more than
   * one is in flight without idempotence, which it only supports with one request in flight. So
   * exactly one produce request is in flight per driver; batches that arrive meanwhile wait in
   * order and leave together in the next request (up to PRODUCE_REQUEST_BYTES), which keeps the
   * throughput of several batches in flight.
   */
  private produce(operation: KafkaOperation, topic: string, messages: Message[]): Promise<void> {
    return new Promise<void>((resolve, reject) => {
      let bytes = 0;
      for (const m of messages) bytes += messageBytes(m);
      this.produceQueue.push({ topic, messages, bytes, resolve, reject: (err, unconfirmed) => reject(isPayqError(err) ? err : this.fail(err, operation, topic, unconfirmed)) });
      if (!this.producing) void this.drainProduceQueue();
    });
  }

  private async drainProduceQueue(): Promise<void> {
    this.producing = true;
    try {
      while (this.produceQueue.length > 0) {
        const group: QueuedProduce[] = [];
        let bytes = 0;
        while (this.produceQueue.length > 0 && (group.length === 0 || bytes + this.produceQueue[0]!.bytes <= PRODUCE_REQUEST_BYTES)) {
          const next = this.produceQueue.shift()!;
          group.push(next);
          bytes += next.bytes;
        }
        await this.produceGroup(group, bytes);
      }
    } finally {
      this.producing = false;
    }
  }

  /**
   * Sends one group and settles its batches. A broker that went away (a retriable failure) is
   * waited for (README "Failure drills"): the IDENTICAL group is sent again on the same
   * idempotent producer, with the reconnect backoff, so the broker writes it once even if an
   * earlier attempt got through before the connection dropped (same producer id and sequence
   * numbers: kafkajs advances them only on success; a new producer would get a new id). So is a
   * group refused because a partition has no leader yet (isLeaderless). After
   * `reconnectTimeoutMs` of failures the group fails, flagged unconfirmed when an attempt was cut
   * off by a lost connection: that one may have reached the broker.
   */
  private async produceGroup(group: QueuedProduce[], bytes: number): Promise<void> {
    let attempts = 0;
    let cutOff = false;
    // A batch larger than a request goes as chunks; those already acknowledged are not sent again.
    const chunks = bytes > PRODUCE_REQUEST_BYTES ? [...chunksByBytes(group[0]!.messages)] : undefined;
    let chunksDone = 0;
    const isOutage = (err: unknown) => {
      const mapped = mapKafkaError(err, { operation: 'send', url: this.url });
      return mapped instanceof BrokerUnavailableError && mapped.retriable;
    };
    // A broker back from a restart answers before all its partitions have a leader again (it
    // recovers their logs one by one): that is waited for like the outage itself, past kafkajs'
    // few seconds of retries, on the same idempotent producer.
    const waitable = (err: unknown) => isOutage(err) || isLeaderless(err);
    try {
      await retry(
        async () => {
          attempts++;
          const producer = await this.graced(this.getProducer(), 'connecting the producer');
          if (chunks) {
            // One batch larger than a request may carry: its chunks go one after the other.
            for (; chunksDone < chunks.length; chunksDone++) {
              await this.graced(producer.send({ topic: group[0]!.topic, acks: -1, messages: chunks[chunksDone]! }), `sending to ${group[0]!.topic}`);
            }
          } else {
            const byTopic = new Map<string, Message[]>();
            for (const q of group) {
              const list = byTopic.get(q.topic);
              if (list) for (const m of q.messages) list.push(m);
              else byTopic.set(q.topic, q.messages.slice());
            }
            await this.graced(producer.sendBatch({ acks: -1, topicMessages: [...byTopic].map(([topic, msgs]) => ({ topic, messages: msgs })) }), `sending to ${[...byTopic.keys()].join(', ')}`);
          }
        },
        {
          backoff: RECONNECT_BACKOFF,
          deadlineMs: this.options.reconnectTimeoutMs,
          isRetryable: (err) => this.closePromise === undefined && waitable(err),
          // A partition without a leader is a broker that answers: the link is not lost.
          onRetry: (err) => {
            if (!isOutage(err)) return;
            cutOff = true;
            this.linkMonitor.lost();
          },
          // After the stop a failed attempt is not tried again (a send made after it still goes once).
          stop: this.stop.signal,
        },
      );
    } catch (err) {
      const outage = isOutage(err);
      // An attempt cut off by a lost connection may have been stored.
      const unconfirmed = outage || cutOff;
      const waited = Math.round(this.options.reconnectTimeoutMs / 1000);
      const topics = [...new Set(group.map((q) => q.topic))].join(', ');
      const cause = this.stop.isStopped && waitable(err)
        ? new BrokerUnavailableError(`kafka ${this.url.redacted}: not acknowledged before the stop, and the cluster was not waited for`, {
            cause: err,
            retriable: true,
            unconfirmed: true,
          })
        : attempts > 1 && waitable(err)
          ? new BrokerUnavailableError(
              outage
                ? `kafka ${this.url.redacted}: the cluster did not come back within ${waited} s (--reconnect-timeout)`
                : `kafka ${this.url.redacted}: ${topics}: partitions still without a leader after ${waited} s (--reconnect-timeout)`,
              { cause: err, unconfirmed, hint: 'is Kafka running? a longer --reconnect-timeout rides out a longer outage' },
            )
          : err;
      for (const q of group) q.reject(cause, unconfirmed);
      return;
    }
    this.linkMonitor.restored();
    for (const q of group) q.resolve();
  }

  /**
   * Deletes a (tap's) consumer group. Right after its member left, the coordinator may still
   * report it non-empty for a moment: a few short retries, then the caller gives up quietly.
   */
  private async deleteGroup(groupId: string): Promise<void> {
    const admin = await this.getAdmin();
    await retry(
      async () => {
        try {
          await admin.deleteGroups([groupId]);
        } catch (err) {
          // Already gone (an empty group without offsets is dropped by the coordinator): done.
          const groups = (err as { groups?: Array<{ error?: { type?: string } }> }).groups ?? [];
          if (groups.length > 0 && groups.every((g) => g.error?.type === 'GROUP_ID_NOT_FOUND')) return;
          throw err;
        }
      },
      { backoff: GROUP_DELETE_BACKOFF, attempts: GROUP_DELETE_ATTEMPTS },
    );
  }

  /** See KafkaSubscriptionDeps.startOffsets. */
  private async startOffsets(groupId: string, topics: string[], from: 'earliest' | 'latest'): Promise<TopicPartitionOffset[]> {
    const admin = await this.getAdmin();
    const committed = await admin.fetchOffsets({ groupId, topics });
    const perTopic = await Promise.all(
      committed.map(async ({ topic, partitions }) => {
        const unset = new Set(partitions.filter((p) => Number(p.offset) < 0).map((p) => p.partition));
        if (unset.size === 0) return [];
        const ends = await admin.fetchTopicOffsets(topic);
        return ends.filter((p) => unset.has(p.partition)).map((p) => ({ topic, partition: p.partition, offset: from === 'earliest' ? p.low : p.high }));
      }),
    );
    return perTopic.flat();
  }

  private produceDeadLetter(topic: string, message: DeadLetterMessage): Promise<void> {
    return this.pending.track(this.produce('dead-letter', topic, [{ ...message, headers: packPayqHeaders(message.headers) }]));
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    this.assertOpen('subscribe');
    if (options.destinations.length === 0) throw new ConfigError('subscribe: no topics given');
    for (const topic of options.destinations) {
      if (!isValidTopicName(topic)) throw new ConfigError(`'${topic}' is not a valid Kafka topic name`);
    }
    if (!options.group && !options.tap) throw new ConfigError('subscribe: a consumer group is required on Kafka');
    if (options.exchange !== undefined || options.streamOffset !== undefined) {
      throw new ConfigError('Kafka has no exchanges or stream queues: --exchange and --stream-offset are RabbitMQ modes (a Kafka tap already reads without taking)');
    }
    if (!Number.isInteger(options.prefetch) || options.prefetch < 1) {
      throw new ConfigError(`subscribe: prefetch must be a positive integer, got ${options.prefetch}`);
    }
    const create = () =>
      new KafkaSubscription(
        {
          kafka: this.kafka,
          url: this.url.redacted,
          produceDeadLetter: (topic, message) => this.produceDeadLetter(topic, message),
          deleteGroup: (groupId) => this.deleteGroup(groupId),
          startOffsets: (groupId, topics, from) => this.startOffsets(groupId, topics, from),
          link: this.linkMonitor,
          graced: (work, what) => this.graced(work, what),
        },
        options,
        handler,
      );
    // A broker that is away, restarting, or has just started and is still loading its group
    // coordinator (COORDINATOR_LOAD_IN_PROGRESS) fails a start retriable: a new subscription is
    // started with the reconnect backoff until reconnectTimeoutMs (README "Failure drills").
    let attempts = 0;
    let subscription: KafkaSubscription;
    try {
      // A stop ends the attempt under way too (its subscription is closed with the driver).
      subscription = await this.stop.starting(
        retry(
          () => {
            attempts++;
            return startTracked(this.subscriptions, create());
          },
          {
            backoff: RECONNECT_BACKOFF,
            deadlineMs: this.options.reconnectTimeoutMs,
            isRetryable: (err) => isPayqError(err) && err.retriable && this.closePromise === undefined,
            onRetry: (err) => {
              if (classifyKafkaError(err) === 'unavailable') this.linkMonitor.lost();
            },
            signal: this.stop.signal,
          },
        ),
        `subscribing to ${options.destinations.join(', ')}`,
      );
    } catch (err) {
      if (attempts > 1 && err instanceof BrokerUnavailableError && err.retriable) {
        throw new BrokerUnavailableError(
          `kafka ${this.url.redacted}: could not subscribe within ${Math.round(this.options.reconnectTimeoutMs / 1000)} s (--reconnect-timeout): ${err.message}`,
          { cause: err, hint: 'is Kafka running? a longer --reconnect-timeout rides out a longer outage' },
        );
      }
      throw err;
    }
    const close = subscription.close.bind(subscription);
    subscription.close = () => {
      this.subscriptions.delete(subscription);
      return close();
    };
    return subscription;
  }

  async exists(destinations: string[]): Promise<Set<string>> {
    this.assertOpen('exists');
    if (destinations.length === 0) return new Set();
    const listing = (async () => {
      const admin = await this.getAdmin();
      return new Set(await admin.listTopics());
    })();
    try {
      const topics = await this.stop.starting(listing, `looking up ${destinations.join(', ')}`);
      return new Set(destinations.filter((name) => topics.has(name)));
    } catch (err) {
      throw this.fail(err, 'connect', destinations.join(', '));
    }
  }

  async brokerVersion(): Promise<string | undefined> {
    const first = this.url.hosts[0];
    if (!first) return undefined;
    const versions = await probeApiVersions(first.host, first.port, this.url.tls);
    if (!versions) return undefined;
    const cluster =
      this.clusterId === undefined ? '' : `; cluster ${this.clusterId}, ${this.brokerCount} broker${this.brokerCount === 1 ? '' : 's'}`;
    return `${describeApiVersions(versions)}${cluster}`;
  }

  link(): LinkStatus {
    return this.linkMonitor.status();
  }

  close(): Promise<void> {
    this.closePromise ??= (async () => {
      // Pending sends and dead letters settle first (their callers see the outcome).
      await this.pending.settled();
      await Promise.allSettled([...this.subscriptions].map((s) => s.close()));
      await this.pending.settled();
      const producer = this.producer;
      const admin = this.admin;
      this.producer = undefined;
      this.admin = undefined;
      // A client still connecting to a cluster that is away is not waited for past the stop's grace.
      await Promise.allSettled([
        this.graced(Promise.resolve(producer?.then((p) => p.disconnect())), 'disconnecting the producer'),
        this.graced(Promise.resolve(admin?.then((a) => a.disconnect())), 'disconnecting the admin client'),
      ]);
    })();
    return this.closePromise;
  }
}

/** payq's own fields travel in one compact `payq` header (events/payq-header.ts). */
function toKafkaMessage(message: OutgoingMessage): Message {
  return { key: message.key, value: message.value, headers: packPayqHeaders(message.headers) };
}

export function createDriver(url: BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Driver {
  if (url.scheme !== 'kafka') throw new ConfigError(`the kafka driver cannot use ${url.redacted}`);
  return new KafkaDriver(url, options);
}
