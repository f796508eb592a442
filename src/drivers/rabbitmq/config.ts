/**
 * RabbitMQ settings read from the broker URL, validated once. Query parameter names follow the
 * RabbitMQ URI spec (`heartbeat`, `connection_timeout`, `frame_max`, `channel_max`) so URLs that
 * work with other clients work here; `exchange` is payq's own.
 */
import { ConfigError } from '../../errors.js';
import type { BrokerUrl } from '../url.js';

export interface RabbitMqConfig {
  /** The durable topic exchange every payq destination queue is bound to. */
  exchange: string;
  /** The direct exchange the queues' dead letters go through, to `<queue>.dlq`. */
  deadLetterExchange: string;
  vhost: string;
  heartbeatSeconds: number;
  /** Bounds TCP connect + AMQP handshake, so an unreachable broker fails fast. */
  connectionTimeoutMs: number;
  frameMax: number;
  channelMax: number;
}

const KNOWN_PARAMS = ['exchange', 'heartbeat', 'connection_timeout', 'frame_max', 'channel_max', 'tls'];

const DEFAULTS = {
  exchange: 'payq',
  heartbeatSeconds: 30,
  connectionTimeoutMs: 5000,
  // amqplib's default; 128 KiB frames keep a ~500-byte event to one body frame.
  frameMax: 131072,
  channelMax: 0,
};

function intParam(url: BrokerUrl, name: string, fallback: number, min: number, max: number): number {
  const text = url.params[name];
  if (text === undefined) return fallback;
  if (!/^\d+$/.test(text) || Number(text) < min || Number(text) > max) {
    throw new ConfigError(`invalid broker URL '${url.redacted}': ${name}=${text} is not a whole number in ${min}-${max}`);
  }
  return Number(text);
}

export function rabbitMqConfig(url: BrokerUrl): RabbitMqConfig {
  const unknown = Object.keys(url.params).filter((k) => !KNOWN_PARAMS.includes(k));
  if (unknown.length > 0) {
    throw new ConfigError(`invalid broker URL '${url.redacted}': unknown parameter ${unknown.map((k) => `'${k}'`).join(', ')}`, {
      hint: `amqp:// URLs take ${KNOWN_PARAMS.join(', ')}`,
    });
  }
  const exchange = url.params['exchange'] ?? DEFAULTS.exchange;
  // amq.* is reserved by RabbitMQ (declaring it is refused), '' is the default exchange.
  if (!/^[A-Za-z0-9_.:-]{1,200}$/.test(exchange) || exchange.startsWith('amq.')) {
    throw new ConfigError(`invalid broker URL '${url.redacted}': exchange '${exchange}' is not a usable exchange name`, {
      hint: 'use letters, digits, - _ . : (not starting with amq.)',
    });
  }
  return {
    exchange,
    deadLetterExchange: `${exchange}.dlx`,
    vhost: url.path === '' ? '/' : url.path,
    heartbeatSeconds: intParam(url, 'heartbeat', DEFAULTS.heartbeatSeconds, 0, 3600),
    connectionTimeoutMs: intParam(url, 'connection_timeout', DEFAULTS.connectionTimeoutMs, 100, 600_000),
    frameMax: intParam(url, 'frame_max', DEFAULTS.frameMax, 4096, 0x7fffffff),
    channelMax: intParam(url, 'channel_max', DEFAULTS.channelMax, 0, 65535),
  };
}
