/**
 * The NATS JetStream driver (@nats-io/transport-node + @nats-io/jetstream). The layout (a stream
 * per destination, subjects, consumer names) is in layout.ts, consuming and dead-lettering in
 * subscription.ts, header mapping in headers.ts.
 *
 * One NATS connection per driver carries publishing, consuming and acks: NATS has no publisher
 * flow control that could stall acks (RabbitMQ's reason for two connections).
 *
 * A server that goes away (README "Failure drills"): nats.js reconnects by itself, waiting
 * between attempts as retry.ts's one backoff policy says; payq bounds the whole outage by
 * `reconnectTimeoutMs` with a timer of its own (an attempt count would not: a refused attempt
 * takes no time, an unanswered one the connect timeout), then closes the connection, and
 * everything fails from then on with a BrokerUnavailableError (not retriable) saying how long it
 * tried. Meanwhile:
 * - publishes whose PubAck was awaited when the connection dropped reject at once, flagged
 *   `unconfirmed` (the server may have stored them; payq never sends them again: that could
 *   store them twice), and retriable;
 * - new sends and JetStream API calls wait for the reconnect, then go: nats.js drops what is
 *   written while it is disconnected (it resets its outbound buffer on each attempt), so
 *   nothing is handed to it before;
 * - subscriptions stop pulling, keep their settlements (ack, nak) until the reconnect and then
 *   send them, and pull again (subscription.ts): durable consumers keep their state on the
 *   server, a tap's ephemeral consumer is re-created from where it was if the server lost it.
 * `link()` tells the outages (LinkMonitor).
 *
 * Dead letters: JetStream has no dead-letter queue of its own (max_deliver only stops
 * redelivering and emits an advisory), so `deadLetter` publishes a copy with the provenance
 * headers to `<destination>.dlq` (a stream of its own), waits for its PubAck, then acks.
 */
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, DiscardPolicy, type JetStreamClient, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { BrokerUnavailableError, ConfigError, DeliveryError, TopologyError } from '../../errors.js';
import { backoffDelays, type BackoffOptions } from '../retry.js';
import type {
  DeliveryHandler,
  DestinationSpec,
  Driver,
  DriverOptions,
  Headers,
  LinkStatus,
  OutgoingMessage,
  SubscribeOptions,
  Subscription,
} from '../types.js';
import { DEFAULT_DRIVER_OPTIONS } from '../types.js';
import { DeclaredDriver, DriverStop, LinkMonitor, PendingWork, startTracked, usedAfterClose, withDeadline } from '../common.js';
import type { BrokerUrl } from '../url.js';
import { natsConfig, type NatsConfig } from './config.js';
import { NATS_DRIVER } from './descriptor.js';
import { apiCode, JsCode, mapNatsError, type NatsOperation } from './errors.js';
import { headerBytes, toNatsHeaders } from './headers.js';
import { isValidDestination, probeSubject, publishSubject, streamName, streamSubject, SUBJECT_PREFIX, validateDestination } from './layout.js';
import { NatsSubscription } from './subscription.js';

const noop = () => {};

/** Waits between reconnect attempts (nats.js' reconnectDelayHandler), from the first loss on. */
export const NATS_RECONNECT_BACKOFF: BackoffOptions = { initialMs: 250, maxMs: 2_000, factor: 2, jitter: 0.2 };

/** What a publish awaiting its PubAck rejects with when the connection drops (see the header). */
class ConnectionLost extends Error {
  override readonly name = 'ConnectionLost';
}

/** One stretch of a working connection: `lost` rejects when it ends. */
interface Stretch {
  lost: Promise<never>;
  end(): void;
}

function newStretch(): Stretch {
  let end: () => void = noop;
  const lost = new Promise<never>((_, reject) => (end = () => reject(new ConnectionLost('the connection to the server was lost'))));
  lost.catch(noop);
  return { lost, end };
}

/** The server is away: what waits for it, and the timer that ends the wait. */
interface Outage {
  since: number;
  restored: Promise<void>;
  resolve(): void;
  reject(err: Error): void;
  timer: NodeJS.Timeout;
}

/** One message as published: its subject chosen, its key still to be written as a header. */
interface Publication {
  subject: string;
  key: string | undefined;
  value: Uint8Array;
  headers: Headers;
}

interface Connected {
  nc: NatsConnection;
  js: JetStreamClient;
  jsm: JetStreamManager;
}

class NatsDriver extends DeclaredDriver implements Driver {
  private readonly config: NatsConfig;
  private connection: Promise<Connected> | undefined;
  /** The connection once it worked (close() does not wait for one that never answered). */
  private opened: Connected | undefined;
  /** The command's stop: a first connect ends at it, a wait for the server to come back at its grace. */
  private readonly stop: DriverStop;
  /** destination → the stream holding it (found by subject), once known. */
  private readonly streams = new Map<string, string>();
  private readonly subscriptions = new Set<NatsSubscription>();
  private readonly pending = new PendingWork();
  private closing: Promise<void> | undefined;
  private readonly linkMonitor: LinkMonitor;
  /** Set between a disconnect and the reconnect. */
  private outage: Outage | undefined;
  private stretch = newStretch();
  /** Once set, the connection is closed for good and every call fails with it. */
  private gaveUp: BrokerUnavailableError | undefined;
  private reconnectDelays = backoffDelays(NATS_RECONNECT_BACKOFF);

  constructor(
    readonly url: BrokerUrl,
    readonly options: DriverOptions = DEFAULT_DRIVER_OPTIONS,
  ) {
    super(NATS_DRIVER);
    this.linkMonitor = new LinkMonitor(options.reconnectTimeoutMs);
    this.config = natsConfig(url);
    this.stop = new DriverStop(options.signal, `nats ${url.redacted}`);
  }

  private fail(err: unknown, operation: NatsOperation, subject?: string) {
    if (this.outage !== undefined && (operation === 'send' || operation === 'dead-letter') && !(err instanceof TopologyError)) {
      return new BrokerUnavailableError(`NATS ${this.url.redacted}: the connection is lost (reconnecting) while ${operation === 'send' ? 'publishing' : 'dead-lettering'}${subject ? ` (${subject})` : ''}`, {
        cause: err,
        retriable: true,
        hint: 'is nats-server still running?',
      });
    }
    return mapNatsError(err, { operation, url: this.url, ...(subject === undefined ? {} : { subject }) });
  }

  private assertOpen(what: string): void {
    if (this.closing) throw usedAfterClose('NATS', this.url.redacted, what);
  }

  /** The connection, opened on first use; a failed attempt is retried by the next call. */
  private conn(): Promise<Connected> {
    if (this.opened) return Promise.resolve(this.opened);
    this.connection ??= this.open().then(
      (conn) => {
        if (this.closing) {
          void conn.nc.close().catch(noop);
          throw usedAfterClose('NATS', this.url.redacted, 'connect');
        }
        this.opened = conn;
        return conn;
      },
      (err: unknown) => {
        this.connection = undefined;
        throw err;
      },
    );
    return this.stop.starting(this.connection, 'connecting');
  }

  private async open(): Promise<Connected> {
    const { config } = this;
    const attempt = connect({
      servers: config.servers,
      ...(config.user === undefined ? {} : { user: config.user }),
      ...(config.pass === undefined ? {} : { pass: config.pass }),
      ...(config.token === undefined ? {} : { token: config.token }),
      ...(config.tls ? { tls: { ...config.tls } } : {}),
      name: `payq (pid ${process.pid})`,
      timeout: config.connectTimeoutMs,
      // Bounded by payq's own timer (see the header), paced by the one backoff policy.
      maxReconnectAttempts: -1,
      reconnectDelayHandler: () => this.reconnectDelays.next().value,
    });
    let nc: NatsConnection;
    try {
      nc = await withDeadline(attempt, config.connectTimeoutMs + 1000, () =>
        Object.assign(new Error(`no answer within ${(config.connectTimeoutMs + 1000) / 1000} s`), { name: 'ConnectDeadline' }),
      );
    } catch (err) {
      void attempt.then((late) => late.close(), noop);
      if ((err as { name?: unknown }).name === 'ConnectDeadline') {
        throw new BrokerUnavailableError(`NATS ${this.url.redacted}: server unreachable while connecting: ${(err as Error).message}`, {
          cause: err,
          retriable: true,
          hint: 'is nats-server running with JetStream (-js) on that host and port?',
        });
      }
      throw this.fail(err, 'connect');
    }
    try {
      // Checks JetStream answers (account info): a server without -js fails here, not later.
      const jsm = await jetstreamManager(nc, { timeout: config.requestTimeoutMs });
      const js = jetstream(nc, { timeout: config.requestTimeoutMs });
      void this.watch(nc);
      return { nc, js, jsm };
    } catch (err) {
      await nc.close().catch(noop);
      throw this.fail(err, 'connect');
    }
  }

  /** Follows the client's disconnects and reconnects (see the header). */
  private async watch(nc: NatsConnection): Promise<void> {
    void nc.closed().then((err) => this.onClosed(err));
    try {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.onDisconnect(nc);
        else if (s.type === 'reconnect') this.onReconnect();
      }
    } catch {
      // the iterator ends with the connection
    }
  }

  private onDisconnect(nc: NatsConnection): void {
    if (this.outage || this.gaveUp || this.closing) return;
    this.linkMonitor.lost();
    this.stretch.end();
    let resolve: () => void = noop;
    let reject: (err: Error) => void = noop;
    const restored = new Promise<void>((res, rej) => {
      resolve = res;
      reject = rej;
    });
    restored.catch(noop);
    const since = performance.now();
    const timer = setTimeout(() => this.giveUp(nc), this.options.reconnectTimeoutMs);
    this.outage = { since, restored, resolve, reject, timer };
    for (const s of this.subscriptions) s.connectionLost();
  }

  private onReconnect(): void {
    const outage = this.outage;
    if (!outage) return;
    this.outage = undefined;
    clearTimeout(outage.timer);
    this.reconnectDelays = backoffDelays(NATS_RECONNECT_BACKOFF);
    this.stretch = newStretch();
    this.linkMonitor.restored();
    outage.resolve();
    for (const s of this.subscriptions) s.connectionRestored();
  }

  /** The outage lasted reconnectTimeoutMs: the connection is closed, and stays closed. */
  private giveUp(nc: NatsConnection): void {
    const outage = this.outage;
    if (!outage) return;
    const seconds = Math.round((performance.now() - outage.since) / 100) / 10;
    this.endFor(
      new BrokerUnavailableError(`NATS ${this.url.redacted}: the server has been unreachable for ${seconds} s: gave up reconnecting (reconnect timeout ${this.options.reconnectTimeoutMs / 1000} s)`, {
        hint: 'is nats-server running? a longer --reconnect-timeout rides out a longer outage',
      }),
    );
    void nc.close().catch(noop);
  }

  /** nats.js closed the connection by itself (e.g. refused on reconnecting): the same as giving up. */
  private onClosed(err: Error | void): void {
    if (this.closing || this.gaveUp) return;
    this.endFor(
      new BrokerUnavailableError(`NATS ${this.url.redacted}: the connection was closed${err ? `: ${err.message}` : ''}`, {
        ...(err ? { cause: err } : {}),
        hint: 'is nats-server still running?',
      }),
    );
  }

  private endFor(err: BrokerUnavailableError): void {
    this.gaveUp = err;
    const outage = this.outage;
    this.outage = undefined;
    if (outage) {
      clearTimeout(outage.timer);
      outage.reject(err);
    }
    this.stretch.end();
  }

  /** The connection, once it works: waits out an outage (bounded by the reconnect timeout). */
  private async usable(): Promise<Connected> {
    const conn = await this.conn();
    if (this.gaveUp) throw this.gaveUp;
    if (this.outage) {
      // After the command's stop, work in flight waits for the server at most the stop's grace.
      await this.stop.inFlight(
        this.outage.restored,
        () => new BrokerUnavailableError(`NATS ${this.url.redacted}: the server was not back within ${this.stop.graceS} s of the stop; not waiting any longer`, { retriable: true }),
      );
    }
    if (this.gaveUp) throw this.gaveUp;
    return conn;
  }

  async connect(): Promise<void> {
    this.assertOpen('connect');
    await this.conn();
    this.linkMonitor.restored();
  }

  async declare(destinations: DestinationSpec[]): Promise<string[]> {
    this.assertOpen('declare');
    const names: string[] = [];
    for (const spec of destinations) {
      validateDestination(spec.name);
      names.push(spec.name);
      if (spec.deadLetter) names.push(`${spec.name}.dlq`);
    }
    if (names.length === 0) return [];
    const { jsm } = await this.usable();
    for (const name of new Set(names)) {
      try {
        await this.ensureStream(jsm, name);
      } catch (err) {
        throw this.fail(err, 'declare', name);
      }
    }
    // An existing stream is used as it is (its limits, retention): payq dead-letters itself on NATS anyway.
    return [];
  }

  /** Uses the stream holding `payq.<name>.*` if there is one, else creates payq's. */
  private async ensureStream(jsm: JetStreamManager, destination: string): Promise<void> {
    if (this.streams.has(destination)) return;
    const found = await this.findStream(jsm, destination);
    if (found) return;
    const name = streamName(destination);
    const subject = streamSubject(destination);
    const { config } = this;
    try {
      await jsm.streams.add({
        name,
        subjects: [subject],
        description: `payq destination '${destination}'`,
        retention: RetentionPolicy.Limits,
        storage: config.storage === 'memory' ? StorageType.Memory : StorageType.File,
        discard: DiscardPolicy.Old,
        num_replicas: config.replicas,
        max_age: config.maxAgeMs * 1_000_000,
      });
    } catch (err) {
      const code = apiCode(err);
      if (code === JsCode.streamNameInUse) {
        // Created meanwhile by another payq (with other settings), or a name clash: which?
        const info = await jsm.streams.info(name);
        if (!info.config.subjects?.includes(subject)) {
          throw new TopologyError(
            `cannot create the stream for destination '${destination}': a stream named '${name}' already holds other subjects (${(info.config.subjects ?? []).join(', ')})`,
            { hint: `destination names that differ only in '.' versus '_' share a stream name; rename one of them` },
          );
        }
      } else if (code === JsCode.subjectsOverlap) {
        throw new TopologyError(`cannot create the stream for destination '${destination}': another stream holds subjects overlapping '${subject}'`, {
          cause: err,
          hint: `payq publishes to ${SUBJECT_PREFIX}.<destination>.<type>; a stream on '${SUBJECT_PREFIX}.>' must be removed or narrowed`,
        });
      } else {
        throw err;
      }
    }
    this.streams.set(destination, name);
  }

  /** The stream holding the destination's subjects, or undefined. */
  private async findStream(jsm: JetStreamManager, destination: string): Promise<string | undefined> {
    const known = this.streams.get(destination);
    if (known) return known;
    try {
      const name = await jsm.streams.find(probeSubject(destination));
      this.streams.set(destination, name);
      return name;
    } catch (err) {
      if (apiCode(err) === JsCode.streamNotFound) return undefined;
      throw err;
    }
  }

  /**
   * For readers: payq's layout first, else a stream of the user's named exactly like the
   * destination, read as it is (all its subjects, its own limits; `foreign`).
   */
  private async findReadable(jsm: JetStreamManager, destination: string): Promise<{ stream: string; foreign: boolean } | undefined> {
    const payq = await this.findStream(jsm, destination);
    if (payq) return { stream: payq, foreign: false };
    // Stream names cannot hold '.': a dotted destination (a DLQ) is payq's layout or nothing.
    if (destination.includes('.')) return undefined;
    try {
      const info = await jsm.streams.info(destination);
      return { stream: info.config.name, foreign: true };
    } catch (err) {
      if (apiCode(err) === JsCode.streamNotFound) return undefined;
      throw err;
    }
  }

  async send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    this.assertOpen('send');
    validateDestination(destination);
    if (messages.length === 0) return;
    const outgoing = messages.map((m) => ({ subject: publishSubject(destination, m.type), key: m.key, value: m.value, headers: m.headers }));
    await this.pending.track(this.publish('send', destination, outgoing));
  }

  /**
   * Publishes the whole batch at once and waits for every PubAck. nats.js writes each publish
   * to the socket when it is called, so the stream stores them in the batch's order.
   */
  private async publish(operation: 'send' | 'dead-letter', destination: string, messages: Publication[]): Promise<void> {
    let conn: Connected;
    try {
      conn = await this.usable();
    } catch (err) {
      throw this.fail(err, operation, destination);
    }
    const { nc, js } = conn;
    const { lost } = this.stretch;
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    // The whole batch is checked first: nothing is published if one message can't be.
    const prepared = messages.map((m) => {
      const headers = toNatsHeaders(m.headers, m.key, destination);
      const size = m.value.length + headerBytes(headers);
      if (size > maxPayload) {
        throw new DeliveryError(`message of ${size} bytes (body and headers) to '${destination}' is larger than the server's max_payload of ${maxPayload} bytes`, {
          hint: 'use smaller messages, or raise max_payload in nats-server.conf',
        });
      }
      return { subject: m.subject, value: m.value, headers };
    });
    const results = await Promise.allSettled(
      prepared.map((p) => Promise.race([js.publish(p.subject, p.value, { headers: p.headers, timeout: this.config.requestTimeoutMs }), lost])),
    );
    const failed = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
    if (failed.length === 0) return;
    const about = `${failed.length} of ${messages.length} message(s) to '${destination}'`;
    // A definite refusal says more than a loss: it is the one reported.
    const refused = failed.find((r) => !(r.reason instanceof ConnectionLost));
    if (refused) throw this.fail(refused.reason, operation, about);
    if (this.gaveUp) throw this.gaveUp;
    throw new DeliveryError(
      `NATS ${this.url.redacted}: the connection to the server was lost while waiting for its acknowledgement (${about}): the server may have stored them`,
      { cause: failed[0]!.reason, retriable: true, unconfirmed: true, hint: 'counted as failed and reported as unconfirmed; payq does not send them again' },
    );
  }

  /** A copy on `<destination>.dlq`, same type token, body and key, headers plus the extra ones. */
  private publishDeadLetter(destination: string, typeToken: string, value: Uint8Array, headers: Headers, key: string | undefined): Promise<void> {
    const dlq = `${destination}.dlq`;
    return this.pending.track(this.publish('dead-letter', dlq, [{ subject: `${SUBJECT_PREFIX}.${dlq}.${typeToken}`, key, value, headers }]));
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    this.assertOpen('subscribe');
    const { destinations, group, prefetch, tap = false } = options;
    if (destinations.length === 0) throw new ConfigError('subscribe needs at least one destination');
    for (const d of destinations) validateDestination(d);
    if (!tap && !group) throw new ConfigError('subscribe needs a consumer group name');
    if (options.exchange !== undefined || options.streamOffset !== undefined) {
      throw new ConfigError('NATS has no exchanges or stream queues: --exchange and --stream-offset are RabbitMQ modes (a NATS tap already reads without taking)');
    }
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new ConfigError(`prefetch must be a whole number of at least 1, got ${prefetch}`);
    let conn: Connected;
    try {
      conn = await this.usable();
    } catch (err) {
      throw this.fail(err, 'subscribe');
    }
    const { nc, jsm, js } = conn;
    const subscription = new NatsSubscription(
      {
        nc,
        jsm,
        apiPrefix: js.apiPrefix,
        config: this.config,
        url: this.url.redacted,
        streamOf: (destination) => this.streamOf(jsm, destination),
        publishDeadLetter: (destination, typeToken, value, headers, key) => this.publishDeadLetter(destination, typeToken, value, headers, key),
        forget: (s) => this.subscriptions.delete(s),
      },
      options,
      handler,
    );
    return startTracked(this.subscriptions, subscription);
  }

  private async streamOf(jsm: JetStreamManager, destination: string): Promise<{ stream: string; foreign: boolean }> {
    const found = await this.findReadable(jsm, destination);
    if (found) return found;
    throw new TopologyError(`NATS ${this.url.redacted}: destination '${destination}' does not exist (no stream holds ${streamSubject(destination)} or is named '${destination}')`, {
      hint: 'declare it first (payq produce and worker do), or check the name',
    });
  }

  async exists(destinations: string[]): Promise<Set<string>> {
    this.assertOpen('exists');
    const found = new Set<string>();
    const wanted = [...new Set(destinations)].filter(isValidDestination);
    if (wanted.length === 0) return found;
    try {
      const { jsm } = await this.usable();
      for (const name of wanted) if (await this.findReadable(jsm, name)) found.add(name);
    } catch (err) {
      throw this.fail(err, 'exists', wanted.join(', '));
    }
    return found;
  }

  async brokerVersion(): Promise<string | undefined> {
    const { nc } = await this.usable();
    const info = nc.info;
    if (!info) return undefined;
    return `nats-server ${info.version}${info.jetstream ? ' (JetStream)' : ''}${info.cluster ? `; cluster ${info.cluster}` : ''}`;
  }

  link(): LinkStatus {
    return this.linkMonitor.status();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      // Whatever waits for a server that is away fails now rather than when it is back.
      if (this.outage) {
        clearTimeout(this.outage.timer);
        this.outage.reject(new BrokerUnavailableError(`NATS ${this.url.redacted}: closed while the server was unreachable`, { retriable: true }));
      }
      // Sends and dead letters settle first (their callers see the outcome), then subscriptions
      // (a finishing handler may still dead-letter), then the connection.
      await this.pending.settled();
      await Promise.allSettled([...this.subscriptions].map((s) => s.close()));
      await this.pending.settled();
      // A connect still under way is not waited for (a silent server answers never); it is closed
      // when it opens (conn()).
      const conn = this.opened;
      this.opened = undefined;
      this.connection = undefined;
      if (conn && !conn.nc.isClosed()) await conn.nc.close().catch(noop);
    })();
    return this.closing;
  }
}

export function createDriver(url: BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Driver {
  if (url.scheme !== 'nats') throw new ConfigError(`the NATS driver cannot use ${url.redacted}`);
  return new NatsDriver(url, options);
}
