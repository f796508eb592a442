/**
 * RabbitMQ settings read from the broker URL, validated once. Query parameter names follow the
 * RabbitMQ URI spec (`heartbeat`, `connection_timeout`, `frame_max`, `channel_max`) so URLs that
 * work with other clients work here; `exchange` is payq's own.
 */
import { ConfigError } from '../../errors.js';
import { TLS_URL_PARAMS } from '../tls.js';
import type { BrokerUrl, DriverUrlSpec } from '../url.js';

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

const DEFAULTS = {
  exchange: 'payq',
  heartbeatSeconds: 30,
  connectionTimeoutMs: 5000,
  // amqplib's default; 128 KiB frames keep a ~500-byte event to one body frame.
  frameMax: 131072,
  channelMax: 0,
};

/** What an AMQP URL may hold; url.ts refuses anything else. */
export const RABBITMQ_URL_SPEC: DriverUrlSpec = {
  scheme: 'amqp',
  sharedAcrossProcesses: true,
  schemes: [
    { name: 'amqp', tls: false, defaultPort: 5672 },
    { name: 'amqps', tls: true, defaultPort: 5671 },
  ],
  hosts: { min: 1, max: 1 },
  credentials: true,
  path: "the virtual host (percent-encoded; empty or %2F is '/')",
  params: [
    { name: 'exchange', type: 'string', meaning: `the topic exchange payq's destinations are bound to (default ${DEFAULTS.exchange})` },
    { name: 'heartbeat', type: 'integer', min: 0, max: 3600, meaning: `heartbeat interval in seconds (default ${DEFAULTS.heartbeatSeconds}; 0 disables)` },
    { name: 'connection_timeout', type: 'integer', min: 100, max: 600_000, meaning: `TCP connect + handshake timeout in ms (default ${DEFAULTS.connectionTimeoutMs})` },
    { name: 'frame_max', type: 'integer', min: 4096, max: 0x7fffffff, meaning: `largest frame in bytes (default ${DEFAULTS.frameMax})` },
    { name: 'channel_max', type: 'integer', min: 0, max: 65535, meaning: 'most channels per connection (default 0: the server decides)' },
    { name: 'tls', type: 'boolean', meaning: 'TLS (amqps:// always uses it): the system CAs unless ca= says otherwise' },
    ...TLS_URL_PARAMS,
  ],
};

/** A parameter url.ts already checked against RABBITMQ_URL_SPEC, or its default. */
function intParam(url: BrokerUrl, name: string, fallback: number): number {
  const text = url.params[name];
  return text === undefined ? fallback : Number(text);
}

export function rabbitMqConfig(url: BrokerUrl): RabbitMqConfig {
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
    heartbeatSeconds: intParam(url, 'heartbeat', DEFAULTS.heartbeatSeconds),
    connectionTimeoutMs: intParam(url, 'connection_timeout', DEFAULTS.connectionTimeoutMs),
    frameMax: intParam(url, 'frame_max', DEFAULTS.frameMax),
    channelMax: intParam(url, 'channel_max', DEFAULTS.channelMax),
  };
}
