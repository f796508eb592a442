/**
 * The driver interface: the only thing commands and core know about a broker. Client libraries
 * (kafkajs, amqplib, …) are imported only inside src/drivers/<name>/.
 */
import type { BrokerUrl, DriverUrlSpec } from './url.js';

/** What a driver can do; commands and the conformance suite read these instead of the scheme. */
export interface DriverCapabilities {
  /** Several subscribers in one group share the messages (Kafka groups, competing consumers). */
  consumerGroups: boolean;
  /** Messages survive the process (memory: only while the process lives). */
  persistence: boolean;
  /**
   * Order kept per message key (Kafka partitions) or per destination (a queue), or none. A nacked
   * message comes back after later ones, on every broker.
   */
  ordering: 'per-key' | 'per-destination' | 'none';
  /** A new group can read what was written before it subscribed. */
  replayFromBeginning: boolean;
  /** The broker routes rejected messages to the DLQ by itself (RabbitMQ dead-letter exchange). */
  nativeDeadLetter: boolean;
  /** Destinations have partitions. */
  partitions: boolean;
  /**
   * Destinations are things the broker holds, which exist or not (false: ZeroMQ, where a
   * destination is only a topic name: readers have nothing to check or wait for).
   */
  storedDestinations: boolean;
  /**
   * A subscription or a send creates a missing destination by itself (memory://, in process, like
   * Kafka's auto-create); readers check with `exists` first. False: subscribing to a missing
   * destination is a TopologyError.
   */
  createsOnSubscribe: boolean;
  /** A tap can bind to an exchange of the user's with a binding key (SubscribeOptions.exchange). */
  exchangeTaps: boolean;
  /** A destination can be a stream read from an offset (SubscribeOptions.streamOffset). */
  streamOffsets: boolean;
  /**
   * A group's subscriber competes with every other consumer of the queue (RabbitMQ: `group`
   * selects nothing) rather than joining a group the broker keeps.
   */
  competingConsumers: boolean;
  /** What a tap is on this broker, in a few words for consume's and trace's first line. */
  tapReads: string | undefined;
}

/** How a driver sends best: measured settings, not what it can do (OMB keeps them apart too). */
export interface DriverTuning {
  /** A good batch size for `send`. */
  sendBatchSize: number;
  /** A good number of batches in flight at once. */
  sendMaxInFlight: number;
}

/** How CloudEvents attributes are written as headers (the CloudEvents protocol binding). */
export type HeaderBinding = 'kafka' | 'amqp';

/**
 * What a driver folder declares about itself (its `descriptor.ts`), read without loading the
 * client library: the registry lists one per driver, and URL parsing, `--broker`'s help, the
 * scheme hint and the test helpers derive from that list. `load` imports the driver itself.
 */
export interface DriverDescriptor {
  /** As in Driver.name and in messages (`kafka`, `rabbitmq`, …). */
  name: string;
  url: DriverUrlSpec;
  capabilities: DriverCapabilities;
  tuning: DriverTuning;
  headerBinding: HeaderBinding;
  load(): Promise<{ createDriver(url: BrokerUrl, options?: DriverOptions): Driver }>;
}

export type Headers = Record<string, string>;

/** What every driver takes besides its URL. */
export interface DriverOptions {
  /**
   * How long a driver keeps trying to reach a broker that went away (connect, send, subscribe)
   * before it gives up with BrokerUnavailableError (README "Failure drills"). Backoff between
   * attempts follows the one policy in src/drivers/retry.ts.
   */
  reconnectTimeoutMs: number;
  /**
   * The command's stop (Ctrl-C, SIGTERM: README "Exit codes", 130). Once it aborts, the driver no
   * longer waits for a broker that does not answer: starting work (connect, declare, exists,
   * subscribe) rejects at once with InterruptedError, whatever it was waiting for (a cluster away,
   * a group join tried again); work in flight (a send's current attempt; close's commits, group
   * leave and deletes) has STOP_GRACE_MS more, and a failed send is not tried again. A broker that
   * answers is not cut short: what is in flight drains. Kafka, RabbitMQ and NATS honour it (common.ts,
   * DriverStop): their connects, and their waits for a broker to come back (at most the grace).
   */
  signal?: AbortSignal | undefined;
}

/** `--reconnect-timeout`'s default. */
export const DEFAULT_RECONNECT_TIMEOUT_MS = 60_000;

/** After the stop, how long a driver still waits for work in flight (DriverOptions.signal). */
export const STOP_GRACE_MS = 3_000;

export const DEFAULT_DRIVER_OPTIONS: DriverOptions = { reconnectTimeoutMs: DEFAULT_RECONNECT_TIMEOUT_MS };

/** The driver's link to the broker, as it sees it now (progress and reports read it). */
export interface LinkStatus {
  /** The driver has a working connection to the broker now. */
  connected: boolean;
  /** Connections re-established after a loss since connect(). */
  reconnects: number;
  /** Milliseconds spent without a connection since connect(), an outage still going included. */
  downMs: number;
  /**
   * An outage lasted longer than the reconnect timeout (DriverOptions.reconnectTimeoutMs): the
   * driver has given up on the broker, for good. A running subscription then gets nothing more,
   * and every command that subscribes ends its run, exit 3 (README "Failure drills").
   */
  gone: boolean;
}

export interface OutgoingMessage {
  /** Partition key (Kafka) / part of the routing (RabbitMQ): the payment id. */
  key: string;
  /** Routing key on RabbitMQ; the event type. */
  type: string;
  value: Buffer;
  headers: Headers;
}

export interface DestinationSpec {
  name: string;
  /** Kafka partitions; ignored where the broker has none. */
  partitions?: number;
  /** Also declare `<name>.dlq` and, where the broker can, route rejects to it. */
  deadLetter?: boolean;
}

/** One received message. Exactly one of ack / nack / deadLetter must be called. */
export interface Delivery {
  destination: string;
  key: string | undefined;
  value: Buffer;
  headers: Headers;
  /** Kafka partition and offset; undefined elsewhere. */
  partition: number | undefined;
  offset: string | undefined;
  /** The broker says it delivered this message before (or the driver knows it did). */
  redelivered: boolean;
  /**
   * Whether settling it can still reach the broker, read at the moment of asking. False once the
   * link it came on is gone and the broker hands the message out again by itself (RabbitMQ: its
   * channel closed, so it was requeued; Kafka: its subscription closed, or a rebalance gave its
   * partition to another member; NATS: the connection closed for good; memory: its subscription
   * closed). Acting on such a delivery (republishing it, emitting for it) would be done again when
   * it comes back, and its ack or nack does nothing. A delivery can never become settleable again.
   * Where a lost link is ridden out without losing the settlement (Kafka's late acks on the same
   * member, NATS' settlements kept through a reconnect), it stays true.
   */
  readonly settleable: boolean;
  /** Done with it: it will not be delivered to this group again. */
  ack(): void;
  /** Give it back for redelivery (to this or another consumer of the group). */
  nack(): void;
  /**
   * Move it to `<destination>.dlq` with the given extra headers, then ack. Resolves once the
   * dead letter is safely stored; on RabbitMQ the broker routes it (adding x-death).
   */
  deadLetter(extraHeaders: Headers): Promise<void>;
}

export interface SubscribeOptions {
  destinations: string[];
  /** Consumer group / competing-consumer identity. */
  group: string;
  fromBeginning: boolean;
  /** Unacknowledged messages a subscriber may hold at once. */
  prefetch: number;
  /**
   * Observe without taking: the subscriber sees every message published to the destinations and
   * competes with no one (trace, consume without --group); `group` is then ignored. Kafka and
   * memory: a consumer group of its own; NATS: an ephemeral consumer per destination; RabbitMQ:
   * a queue of its own (durable, to outlive a broker restart) bound to the exchange like each destination, so it sees what
   * is published after it subscribed — through payq's exchange only: a tap on a queue payq did
   * not declare is refused (UsageError naming the other modes), since what others publish to it
   * straight through the default exchange would never reach the tap.
   */
  tap?: boolean;
  /**
   * RabbitMQ only (ConfigError elsewhere), with `tap`: bind the tap's queue to this exchange of
   * the user's with this binding key instead of payq's layout; `destinations` then names nothing
   * and may be empty. Deliveries carry the exchange's name as their destination.
   */
  exchange?: { name: string; binding: string } | undefined;
  /**
   * RabbitMQ stream queues only (ConfigError elsewhere), without `tap`: read the queue from this
   * offset (`first`, `last`, `next`, an offset number, or a Date). A stream keeps its messages,
   * so this takes nothing from anyone.
   */
  streamOffset?: string | number | Date | undefined;
  /**
   * With `tap`: read only shard `index` of `count` (1 ≤ index ≤ count) of the destinations'
   * messages, split by message key. Drivers with partitions (Kafka) read only the partitions p
   * with p mod count = index − 1, which needs every destination to have the same partition count
   * (UsageError otherwise); drivers without partitions ignore it, and the caller filters the
   * deliveries itself (core/trace.ts: by a stable hash of the payment id).
   */
  shard?: { index: number; count: number } | undefined;
}

/**
 * Called with one or more deliveries; the driver waits for it before handing out more. If it
 * throws, every delivery it left unsettled is given back for redelivery. It must not await its
 * own subscription's close() (close waits for the running handler): signal the caller instead.
 */
export type DeliveryHandler = (deliveries: Delivery[]) => Promise<void> | void;

/**
 * A running subscription. It has no error channel: a broker that went away for good is told by
 * Driver.link() (`gone`), which every command that subscribes watches to end its run.
 */
export interface Subscription {
  /** Stop fetching, wait for the running handler, leave unacked messages for redelivery. */
  close(): Promise<void>;
}

/**
 * Who may create destinations (README "Read-only by default"): `declare` creates payq's own layout
 * where it is missing, and only `produce`, `worker` and `bench` call it. `exists` never creates,
 * redeclares or reshapes anything, on every driver; readers (consume, trace, replay-dlq) check
 * with it, wait for what is missing, and subscribe only to what is there. `subscribe` never
 * creates on a real broker (a missing destination is a TopologyError); memory:// alone creates
 * on subscribe and send, in process, like Kafka's auto-create. What a subscription creates for
 * itself alone (a tap's queue, group or ephemeral consumer) is removed when it closes.
 */
export interface Driver {
  readonly name: string;
  readonly url: BrokerUrl;
  readonly capabilities: DriverCapabilities;
  readonly tuning: DriverTuning;
  readonly headerBinding: HeaderBinding;
  /** Connects and checks the broker answers; throws BrokerUnavailableError / AuthError. */
  connect(): Promise<void>;
  /**
   * Creates the destinations of payq's layout that are missing (idempotent). An existing one is
   * used as it is, whatever its settings (partitions, queue arguments, stream limits): never
   * redeclared. Resolves with one-line notices for existing destinations whose settings change
   * how payq behaves (e.g. a RabbitMQ queue without payq's dead-letter exchange: payq then
   * dead-letters by publishing to `<queue>.dlq` itself).
   */
  declare(destinations: DestinationSpec[]): Promise<string[]>;
  /**
   * Sends a batch and resolves once the broker has acknowledged every message in it (Kafka
   * acks=all, RabbitMQ publisher confirms). Rejects with DeliveryError (or BrokerUnavailableError)
   * if any was not acknowledged; the batch then counts as failed.
   */
  send(destination: string, messages: OutgoingMessage[]): Promise<void>;
  subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription>;
  /**
   * The names among `destinations` that exist now: a passive check that creates and changes
   * nothing (Kafka metadata, RabbitMQ passive declares on throw-away channels, NATS stream
   * lookups). Readers wait on it before subscribing; replay-dlq checks an origin with it, since
   * Kafka (auto.create.topics.enable) and memory would create a missing destination on send.
   */
  exists(destinations: string[]): Promise<Set<string>>;
  /** Broker product and version, where the broker tells. */
  brokerVersion(): Promise<string | undefined>;
  /**
   * The link now: connected or not, reconnects so far and time spent down. A driver that never
   * loses its broker (memory://) reports always connected.
   */
  link(): LinkStatus;
  /** Closes everything; pending sends settle first. */
  close(): Promise<void>;
}
