/**
 * One AMQP connection that comes back after a loss. The driver keeps two, as RabbitMQ advises:
 * one for publishing and one for consuming, so flow control on a publisher (resource alarms block
 * the publishing connection) never stops consumers from acknowledging.
 *
 * Riding out a broker that goes away (README "Failure drills"): the first open fails at once (a
 * wrong URL is said in seconds); once a connection has worked, losing it starts a reconnect at
 * once, with the one backoff policy (retry.ts), for at most `reconnectTimeoutMs` from the loss.
 * Everything that needs the connection meanwhile (a send, a declare, a subscription reopening its
 * channel) waits in `get()` for that reconnect. When it gives up, `get()` fails from then on with
 * one BrokerUnavailableError (not retriable) saying how long it tried: the driver is done.
 *
 * Every amqplib emitter here gets an 'error' listener: an unhandled 'error' event would crash the
 * process, and a lost connection must instead fail the pending operations with
 * BrokerUnavailableError (amqplib settles them when it emits 'close').
 */
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
import { BrokerUnavailableError, PayqError, messageOf } from '../../errors.js';
import type { DriverStop } from '../common.js';
import { retry, type BackoffOptions } from '../retry.js';
import type { BrokerUrl } from '../url.js';
import type { RabbitMqConfig } from './config.js';
import { connectError, connectionLost } from './errors.js';
import { tlsOptionsFromUrl } from '../tls.js';

/** Why a channel was closed by the server, recorded from its 'error' event. */
const channelErrors = new WeakMap<Channel, Error>();

export function channelCloseReason(channel: Channel): Error | undefined {
  return channelErrors.get(channel);
}

function watchChannel<C extends Channel>(channel: C): C {
  channel.on('error', (err: Error) => {
    channelErrors.set(channel, err);
  });
  return channel;
}

/** Closes a channel that may already be closed (by the server, or with its connection). */
export async function closeQuietly(channel: Channel): Promise<void> {
  try {
    await channel.close();
  } catch {
    // Closed already: nothing to release.
  }
}

/** Reconnecting after a loss: the first try soon, then doubling up to 2 s (bounded by reconnectTimeoutMs). */
export const RECONNECT_BACKOFF: BackoffOptions = { initialMs: 100, maxMs: 2000 };

/** What the driver hears of a connection's state (its LinkMonitor). */
export interface ConnectionEvents {
  /** The connection works (the first time, or again after a loss). */
  opened(conn: AmqpConnection): void;
  /** The connection ended without payq closing it. */
  lost(conn: AmqpConnection): void;
}

export class AmqpConnection {
  private model: ChannelModel | undefined;
  private opening: Promise<ChannelModel> | undefined;
  private closing = false;
  private readonly closeSignal = new AbortController();
  /** A connection worked once: later opens are reconnects, retried with backoff. */
  private everOpened = false;
  /** Lost and not open again yet; since when (epoch ms). */
  private downNow = false;
  private downSince: number | undefined;
  /** The reconnect gave up: every later get() fails with this. */
  private gaveUp: BrokerUnavailableError | undefined;
  /** Why the last connection ended, if payq didn't end it. */
  lost: PayqError | undefined;
  blockedReason: string | undefined;
  private readonly lostListeners = new Set<(err: PayqError) => void>();

  constructor(
    private readonly url: BrokerUrl,
    private readonly config: RabbitMqConfig,
    private readonly role: 'publish' | 'consume',
    private readonly reconnectTimeoutMs: number,
    private readonly events: ConnectionEvents,
    /** The command's stop: a first connect ends at it, a wait for the broker to come back at its grace. */
    private readonly stop: DriverStop,
    /** Whether a first open should be retried like a reconnect (the driver's other connection worked). */
    private readonly patientFirstOpen: () => boolean = () => false,
  ) {}

  get isOpen(): boolean {
    return this.model !== undefined;
  }

  /** Lost and not open again (a reconnect under way, or given up). */
  get down(): boolean {
    return this.downNow;
  }

  /** A lost connection is being reopened (or will be on the next get()): waiting in get() is worth it. */
  get recovering(): boolean {
    return !this.closing && this.gaveUp === undefined && this.model === undefined && (this.everOpened || this.patientFirstOpen());
  }

  serverProperties(): Record<string, unknown> | undefined {
    return this.model?.connection.serverProperties as Record<string, unknown> | undefined;
  }

  /** Called when the connection ends without payq closing it. */
  onLost(listener: (err: PayqError) => void): () => void {
    this.lostListeners.add(listener);
    return () => this.lostListeners.delete(listener);
  }

  /** The open connection, (re)opening it if needed. */
  async get(): Promise<ChannelModel> {
    if (this.closing) throw new BrokerUnavailableError(`the connection to ${this.url.redacted} was closed by payq`);
    if (this.model) return this.model;
    if (this.gaveUp) throw this.gaveUp;
    const recovering = this.everOpened || this.patientFirstOpen();
    const opening = (this.opening ??= (recovering ? this.reconnect() : this.open()).finally(() => {
      this.opening = undefined;
    }));
    // After the command's stop: no new wait for a first connection; a wait for the broker to come
    // back (work in flight) lasts at most the stop's grace.
    if (!recovering) return this.stop.starting(opening, 'connecting');
    return this.stop.inFlight(
      opening,
      () =>
        new BrokerUnavailableError(`RabbitMQ at ${this.url.redacted} was not back within ${this.stop.graceS} s of the stop; not waiting any longer`, {
          retriable: true,
        }),
    );
  }

  /** Opens again with backoff, for at most reconnectTimeoutMs since the loss (or since now). */
  private async reconnect(): Promise<ChannelModel> {
    const since = this.downSince ?? Date.now();
    try {
      return await retry(() => this.open(), {
        backoff: RECONNECT_BACKOFF,
        until: since + this.reconnectTimeoutMs,
        signal: this.closeSignal.signal,
      });
    } catch (err) {
      if (this.closing) throw new BrokerUnavailableError(`the connection to ${this.url.redacted} was closed by payq`);
      const seconds = Math.round((Date.now() - since) / 100) / 10;
      this.gaveUp = new BrokerUnavailableError(
        `RabbitMQ at ${this.url.redacted} did not come back: gave up reconnecting after ${seconds} s (the reconnect timeout is ${this.reconnectTimeoutMs / 1000} s); last error: ${messageOf(err)}`,
        { cause: err, hint: 'is RabbitMQ running? --reconnect-timeout sets how long payq waits for it' },
      );
      throw this.gaveUp;
    }
  }

  async createChannel(): Promise<Channel> {
    const model = await this.get();
    return watchChannel(await model.createChannel());
  }

  async createConfirmChannel(highWaterMark?: number): Promise<ConfirmChannel> {
    const model = await this.get();
    // amqplib takes channel options (the write buffer's high-water mark) though its types don't say so.
    const create = model.createConfirmChannel as (options?: { highWaterMark?: number }) => Promise<ConfirmChannel>;
    return watchChannel(await create.call(model, highWaterMark ? { highWaterMark } : undefined));
  }

  private async open(): Promise<ChannelModel> {
    const { url, config } = this;
    const host = url.hosts[0]!;
    const options = {
      protocol: url.tls ? 'amqps' : 'amqp',
      hostname: host.host,
      port: host.port,
      username: url.username ?? 'guest',
      password: url.password ?? 'guest',
      // amqplib percent-decodes the vhost once more; url.path is already decoded.
      vhost: config.vhost.replace(/%/g, '%25'),
      heartbeat: config.heartbeatSeconds,
      frameMax: config.frameMax,
      channelMax: config.channelMax,
    };
    const socketOptions = {
      // A socket idle timeout until the handshake completes (amqplib clears it after).
      timeout: config.connectionTimeoutMs,
      noDelay: true,
      // Shown in the management UI / rabbitmqctl list_connections: which payq process this is.
      clientProperties: { connection_name: `payq ${this.role} (pid ${process.pid})` },
      ...tlsOptionsFromUrl(url),
    };
    let timer: NodeJS.Timeout | undefined;
    let abandoned = false;
    // amqplib 2 leaves the TLS server name unset for an IP address (no DEP0123 warning).
    const attempt = amqp.connect(options, socketOptions);
    // The socket timeout only sees idleness; this bounds the whole handshake too. close() does not
    // wait for a handshake a silent broker never finishes.
    const closed = this.closeSignal.signal;
    let onClose: (() => void) | undefined;
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        abandoned = true;
        const err = Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' });
        reject(err);
      }, config.connectionTimeoutMs + 500);
      onClose = () => {
        abandoned = true;
        reject(new BrokerUnavailableError(`the connection to ${this.url.redacted} was closed by payq`));
      };
      if (closed.aborted) onClose();
      else closed.addEventListener('abort', onClose, { once: true });
    });
    let model: ChannelModel;
    try {
      model = await Promise.race([attempt, deadline]);
    } catch (err) {
      if (abandoned) attempt.then((late) => late.close().catch(() => undefined), () => undefined);
      if (err instanceof PayqError) throw err;
      throw connectError(err, url, config.vhost);
    } finally {
      clearTimeout(timer);
      if (onClose) closed.removeEventListener('abort', onClose);
    }

    let lastError: unknown;
    model.on('error', (err: unknown) => {
      lastError = err;
    });
    model.on('blocked', (reason: string) => {
      this.blockedReason = reason;
    });
    model.on('unblocked', () => {
      this.blockedReason = undefined;
    });
    model.on('close', (err: unknown) => {
      if (this.model !== model) return;
      this.model = undefined;
      this.blockedReason = undefined;
      if (this.closing) return;
      const lost = connectionLost(url, err ?? lastError);
      this.lost = lost;
      this.downNow = true;
      this.downSince = Date.now();
      this.events.lost(this);
      for (const listener of [...this.lostListeners]) listener(lost);
      // Reconnect now, not at the next use: the link is restored (and reported) as soon as it can be.
      this.get().catch(() => undefined);
    });
    if (this.closing) {
      await model.close().catch(() => undefined);
      throw new BrokerUnavailableError(`the connection to ${this.url.redacted} was closed by payq`);
    }
    this.model = model;
    this.lost = undefined;
    this.everOpened = true;
    this.downNow = false;
    this.downSince = undefined;
    this.events.opened(this);
    return model;
  }

  async close(): Promise<void> {
    this.closing = true;
    this.downNow = false;
    this.closeSignal.abort();
    const model = this.model ?? (await this.opening?.catch(() => undefined));
    this.model = undefined;
    if (!model) return;
    try {
      await model.close();
    } catch {
      // Already closed by the broker or the network: nothing left to release.
    }
  }
}
