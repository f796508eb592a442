/**
 * The ZeroMQ driver (`zeromq` 6, libzmq inside the npm package). ZeroMQ is a library, not a
 * broker: it moves messages between sockets and keeps none of them.
 *
 * Topology: PUB/SUB through one hub (hub.ts), an XSUB/XPUB forwarder on the URL's port and the
 * next, hosted by the first payq process that uses the URL on that machine. Each driver has one
 * PUB socket connected to the hub; each subscription one SUB socket; a destination is a topic.
 * Why this and not PUSH/PULL between stages: payq's commands meet at destinations (produce,
 * the worker stages, trace and bench all name the same ones), and on ZeroMQ only a fixed meeting
 * point lets any number of senders reach any number of receivers that start in any order; and
 * PUB/SUB gives taps (trace) a copy of everything for free.
 *
 * What it declares it lacks, and what fails at once (ConfigError, exit 2) because of it:
 * - persistence / replay: a tap from the beginning (trace/consume --from-beginning), and
 *   `exists` (replay-dlq: a dead letter on ZeroMQ is a live message, there is no queue to replay
 *   from later). A group's fromBeginning means "what the destination holds", which is nothing:
 *   it reads from now on, as on RabbitMQ.
 * - consumer groups: every subscriber gets every message; a second subscriber of a group in one
 *   process is refused (in two processes it can't be seen: both would handle every message).
 * - acknowledgements: `send` resolves once ZeroMQ queued the messages; a publisher drops what no
 *   one subscribed to, and queues drop what overflows `hwm`. bench's loss figure shows it.
 * - dead-lettering is payq's: the copy is published on `<destination>.dlq` (trace sees it).
 */
import { Publisher, Subscriber, version as libzmqVersion } from 'zeromq';
import { randomBytes } from 'node:crypto';
import { BrokerUnavailableError, ConfigError, DeliveryError } from '../../errors.js';
import {
  DEFAULT_DRIVER_OPTIONS,
  type DeliveryHandler,
  type DestinationSpec,
  type Driver,
  type DriverOptions,
  type Headers,
  type LinkStatus,
  type OutgoingMessage,
  type SubscribeOptions,
  type Subscription,
} from '../types.js';
import { DeclaredDriver, LinkMonitor, startTracked, usedAfterClose } from '../common.js';
import type { BrokerUrl } from '../url.js';
import { zmqConfig, type ZmqConfig } from './config.js';
import { ZMQ_DRIVER } from './descriptor.js';
import { hostHub } from './hub.js';
import { ZmqSubscription } from './subscription.js';
import { decodeFrames, encodeMessage, probeTopic } from './wire.js';

/** Destination names: anything printable without NUL (the topic terminator) or control characters. */
// eslint-disable-next-line no-control-regex
const BAD_NAME = /[\u0000-\u001f\u007f]/;
const PROBE_EVERY_MS = 50;
/** How long close() lets queued messages reach the hub before the socket is dropped. */
const SEND_LINGER_MS = 2_000;

/** `group|destination|hub` of live group subscriptions in this process (see the header). */
const liveGroups = new Set<string>();

function validateDestination(name: string): void {
  if (typeof name !== 'string' || name === '' || BAD_NAME.test(name) || name.length > 249) {
    throw new ConfigError(`'${name}' is not a valid ZeroMQ destination name`, { hint: 'printable characters, at most 249' });
  }
}

class ZmqDriver extends DeclaredDriver implements Driver {
  private readonly config: ZmqConfig;
  private readonly id = randomBytes(6).toString('hex');
  private pub: Publisher | undefined;
  private control: Subscriber | undefined;
  private connecting: Promise<void> | undefined;
  private releaseHub: (() => Promise<void>) | undefined;
  private hostedHere = false;
  private readonly linkMonitor: LinkMonitor;
  private probeAnswered = false;
  private onProbe: (() => void) | undefined;
  /** Sends go through one chain: a zeromq.js socket takes one send at a time. */
  private sendChain: Promise<void> = Promise.resolve();
  private readonly subscriptions = new Set<ZmqSubscription>();
  private closing: Promise<void> | undefined;

  constructor(
    readonly url: BrokerUrl,
    options: DriverOptions = DEFAULT_DRIVER_OPTIONS,
  ) {
    super(ZMQ_DRIVER);
    this.linkMonitor = new LinkMonitor(options.reconnectTimeoutMs);
    this.config = zmqConfig(url);
  }

  private assertOpen(what: string): void {
    if (this.closing) throw usedAfterClose('ZeroMQ', this.url.redacted, what);
  }

  connect(): Promise<void> {
    this.assertOpen('connect');
    this.connecting ??= this.open().then(() => this.linkMonitor.restored(), (err: unknown) => {
      this.connecting = undefined;
      throw err;
    });
    return this.connecting;
  }

  /**
   * Hosts or joins the hub, then sends a probe through it to itself: when it comes back, the
   * hub forwards and has told this publisher what is subscribed (so the first send is not
   * dropped for want of known subscribers). A hub whose port is taken but which doesn't answer
   * (one of this process' closing a moment ago) is tried again until the deadline.
   */
  private async open(): Promise<void> {
    const { config } = this;
    const deadline = Date.now() + config.answerTimeoutMs;
    const ipv6 = config.host.includes(':');
    this.pub = new Publisher({ sendHighWaterMark: config.hwm, linger: SEND_LINGER_MS, ipv6 });
    this.control = new Subscriber({ linger: 0, ipv6 });
    this.pub.connect(config.publishEndpoint);
    this.control.connect(config.subscribeEndpoint);
    this.control.subscribe(probeTopic(this.id));
    void this.listen(this.control);
    let lastRefusal = '';
    for (let attempt = 0; Date.now() < deadline; attempt++) {
      if (config.hub !== 'join' && !this.releaseHub) {
        const outcome = await hostHub(config);
        if (outcome.hosted) {
          this.releaseHub = outcome.release;
          this.hostedHere = true;
        } else {
          lastRefusal = outcome.detail;
          if (config.hub === 'host') {
            throw new ConfigError(`cannot host the ZeroMQ hub at ${config.publishEndpoint} (and ${config.subscribeEndpoint}): ${outcome.detail}`, {
              hint: 'hub=host needs both ports free on this machine; drop ?hub=host to join the hub already there',
            });
          }
        }
      }
      // The hub here answers at once; one elsewhere gets a second before hosting is tried again.
      if (await this.probe(Math.min(this.hostedHere ? deadline - Date.now() : 1000, deadline - Date.now()))) return;
    }
    await this.shutdownSockets();
    throw new BrokerUnavailableError(
      `ZeroMQ ${this.url.redacted}: no payq hub answered at ${config.publishEndpoint} within ${config.answerTimeoutMs / 1000} s${lastRefusal ? ` (hosting it here failed: ${lastRefusal})` : ''}`,
      {
        retriable: true,
        hint: config.hub === 'join' ? 'start a payq process with this URL on that host first (it hosts the hub)' : 'is another program using these ports?',
      },
    );
  }

  /** Sends probes to this driver's own topic until one comes back or `ms` pass. */
  private async probe(ms: number): Promise<boolean> {
    const until = Date.now() + Math.max(0, ms);
    while (!this.probeAnswered && Date.now() < until) {
      await this.sendProbe(this.id);
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, PROBE_EVERY_MS);
        this.onProbe = () => {
          clearTimeout(timer);
          resolve();
        };
      });
    }
    return this.probeAnswered;
  }

  /** Reads the control socket (one receive at a time, as zeromq.js requires) until it closes. */
  private async listen(control: Subscriber): Promise<void> {
    for (;;) {
      let frames: Buffer[];
      try {
        frames = await control.receive();
      } catch {
        return;
      }
      const d = decodeFrames(frames);
      if (d.kind === 'probe' && d.id === this.id) {
        this.probeAnswered = true;
        this.onProbe?.();
      }
    }
  }

  private sendProbe(id: string): Promise<void> {
    return this.enqueue(async (pub) => {
      await pub.send([probeTopic(id), '']);
    });
  }

  private enqueue(work: (pub: Publisher) => Promise<void>): Promise<void> {
    const run = this.sendChain.then(() => {
      const pub = this.pub;
      if (!pub || pub.closed) throw new DeliveryError(`cannot send: the ZeroMQ connection to ${this.url.redacted} is closed`);
      return work(pub);
    });
    this.sendChain = run.catch(() => undefined);
    return run;
  }

  declare(destinations: DestinationSpec[]): Promise<string[]> {
    this.assertOpen('declare');
    // Nothing to create: a destination is a topic, and exists while someone sends to it.
    for (const spec of destinations) validateDestination(spec.name);
    return Promise.resolve([]);
  }

  async send(destination: string, messages: OutgoingMessage[]): Promise<void> {
    this.assertOpen('send');
    validateDestination(destination);
    if (messages.length === 0) return;
    await this.connect();
    await this.publish(destination, messages);
  }

  private publish(destination: string, messages: OutgoingMessage[]): Promise<void> {
    return this.enqueue(async (pub) => {
      try {
        for (const m of messages) await pub.send(encodeMessage(destination, m));
      } catch (err) {
        throw new DeliveryError(`ZeroMQ ${this.url.redacted}: could not queue messages for '${destination}': ${err instanceof Error ? err.message : String(err)}`, { cause: err });
      }
    });
  }

  private publishDeadLetter(destination: string, m: { key: string | undefined; type: string; value: Buffer; headers: Headers }): Promise<void> {
    return this.publish(`${destination}.dlq`, [{ key: m.key ?? '', type: m.type, value: m.value, headers: m.headers }]);
  }

  async subscribe(options: SubscribeOptions, handler: DeliveryHandler): Promise<Subscription> {
    this.assertOpen('subscribe');
    const { destinations, group, prefetch, tap = false, fromBeginning } = options;
    if (destinations.length === 0) throw new ConfigError('subscribe needs at least one destination');
    for (const d of destinations) validateDestination(d);
    if (!tap && !group) throw new ConfigError('subscribe needs a consumer group name');
    if (!Number.isInteger(prefetch) || prefetch < 1) throw new ConfigError(`prefetch must be a whole number of at least 1, got ${prefetch}`);
    if (options.exchange !== undefined || options.streamOffset !== undefined) {
      throw new ConfigError('ZeroMQ has no exchanges or stream queues: --exchange and --stream-offset are RabbitMQ modes');
    }
    if (tap && fromBeginning) {
      throw new ConfigError(`ZeroMQ keeps no messages: a tap on ${destinations.join(', ')} sees what is published after it starts, never what came before`, {
        hint: 'drop --from-beginning, or use a broker that stores messages (kafka://, nats://)',
      });
    }
    const keys = tap ? [] : [...new Set(destinations)].map((d) => `${group}|${d}|${this.config.publishEndpoint}`);
    const taken = keys.find((k) => liveGroups.has(k));
    if (taken) {
      throw new ConfigError(`ZeroMQ has no consumer groups: group '${group}' already has a subscriber on '${taken.split('|')[1]}' in this process, and a second one would receive every message too`, {
        hint: 'one subscriber per group and destination on zmq://; share the work inside it (prefetch, --consumers)',
      });
    }
    await this.connect();
    for (const k of keys) liveGroups.add(k);
    const subscription = new ZmqSubscription(
      {
        config: this.config,
        url: this.url.redacted,
        sendProbe: (id) => this.sendProbe(id),
        publishDeadLetter: (destination, m) => this.publishDeadLetter(destination, m),
        forget: (s) => {
          this.subscriptions.delete(s);
          for (const k of keys) liveGroups.delete(k);
        },
      },
      options,
      handler,
    );
    return startTracked(this.subscriptions, subscription);
  }

  exists(destinations: string[]): Promise<Set<string>> {
    return Promise.reject(
      new ConfigError(`ZeroMQ keeps no destinations: nothing is stored between sender and receiver, so there is nothing to look up or replay (${destinations.join(', ')})`, {
        hint: 'replay-dlq needs a broker that stores dead letters: kafka://, amqp:// or nats://',
      }),
    );
  }

  brokerVersion(): Promise<string | undefined> {
    return Promise.resolve(`ZeroMQ ${libzmqVersion} (brokerless; hub ${this.hostedHere ? 'hosted by this process' : `at ${this.config.publishEndpoint}`})`);
  }

  link(): LinkStatus {
    return this.linkMonitor.status();
  }

  close(): Promise<void> {
    this.closing ??= (async () => {
      await Promise.allSettled([...this.subscriptions].map((s) => s.close()));
      await this.sendChain;
      await this.shutdownSockets();
    })();
    return this.closing;
  }

  private async shutdownSockets(): Promise<void> {
    this.control?.close();
    this.pub?.close();
    this.control = undefined;
    this.pub = undefined;
    const release = this.releaseHub;
    this.releaseHub = undefined;
    // The hub goes last: what this process published is forwarded while the sockets linger.
    await release?.();
  }
}

export function createDriver(url: BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Driver {
  if (url.scheme !== 'zmq') throw new ConfigError(`the ZeroMQ driver cannot use ${url.redacted}`);
  return new ZmqDriver(url, options);
}
