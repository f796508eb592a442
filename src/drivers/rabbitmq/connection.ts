/**
 * One AMQP connection that reopens on demand. The driver keeps two, as RabbitMQ advises: one for
 * publishing and one for consuming, so flow control on a publisher (resource alarms block the
 * publishing connection) never stops consumers from acknowledging.
 *
 * Every amqplib emitter here gets an 'error' listener: an unhandled 'error' event would crash the
 * process, and a lost connection must instead fail the pending operations with
 * BrokerUnavailableError (amqplib settles them when it emits 'close').
 */
import amqp from 'amqplib';
import type { Channel, ChannelModel, ConfirmChannel } from 'amqplib';
import { BrokerUnavailableError, PayqError } from '../../errors.js';
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

export class AmqpConnection {
  private model: ChannelModel | undefined;
  private opening: Promise<ChannelModel> | undefined;
  private closing = false;
  /** Why the last connection ended, if payq didn't end it. */
  lost: PayqError | undefined;
  blockedReason: string | undefined;
  private readonly lostListeners = new Set<(err: PayqError) => void>();

  constructor(
    private readonly url: BrokerUrl,
    private readonly config: RabbitMqConfig,
    private readonly role: 'publish' | 'consume',
  ) {}

  get isOpen(): boolean {
    return this.model !== undefined;
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
    this.opening ??= this.open().finally(() => {
      this.opening = undefined;
    });
    return this.opening;
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
    let timedOut = false;
    // amqplib 2 leaves the TLS server name unset for an IP address (no DEP0123 warning).
    const attempt = amqp.connect(options, socketOptions);
    // The socket timeout only sees idleness; this bounds the whole handshake too.
    const deadline = new Promise<never>((_resolve, reject) => {
      timer = setTimeout(() => {
        timedOut = true;
        const err = Object.assign(new Error('connect ETIMEDOUT'), { code: 'ETIMEDOUT' });
        reject(err);
      }, config.connectionTimeoutMs + 500);
    });
    let model: ChannelModel;
    try {
      model = await Promise.race([attempt, deadline]);
    } catch (err) {
      if (timedOut) attempt.then((late) => late.close().catch(() => undefined), () => undefined);
      throw connectError(err, url, config.vhost);
    } finally {
      clearTimeout(timer);
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
      for (const listener of [...this.lostListeners]) listener(lost);
    });
    this.model = model;
    this.lost = undefined;
    return model;
  }

  async close(): Promise<void> {
    this.closing = true;
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
