/**
 * `zmq://host:port[?params]` → the hub's two endpoints and socket settings, validated once.
 *
 *   hub=auto|host|join   auto (default): host the hub when its ports are free on this machine,
 *                        join the one already there otherwise; host: fail unless this process
 *                        can host it; join: never host (a hub must be running).
 *   hwm=N                messages ZeroMQ queues per peer before it drops (default 10000): the
 *                        sender's queue to the hub, the hub's queue to each subscriber and the
 *                        subscriber's receive queue. A slow subscriber loses what overflows.
 */
import { ConfigError } from '../../errors.js';
import type { BrokerUrl } from '../url.js';

export interface ZmqConfig {
  host: string;
  /** The hub's XSUB: publishers connect here. */
  publishEndpoint: string;
  /** The hub's XPUB (port + 1): subscribers connect here. */
  subscribeEndpoint: string;
  hub: 'auto' | 'host' | 'join';
  hwm: number;
  /** connect() and subscribe() give up after this long without the hub answering. */
  answerTimeoutMs: number;
}

const KNOWN = new Set(['hub', 'hwm']);

export function zmqConfig(url: BrokerUrl): ZmqConfig {
  for (const name of Object.keys(url.params)) {
    if (!KNOWN.has(name)) throw new ConfigError(`unknown ZeroMQ URL parameter '${name}' (${url.redacted})`, { hint: `known: ${[...KNOWN].join(', ')}` });
  }
  if (url.hosts.length !== 1) throw new ConfigError(`a ZeroMQ URL names exactly one host:port, the hub's (${url.redacted})`);
  if (url.username !== undefined) {
    throw new ConfigError(`ZeroMQ has no user names or passwords (${url.redacted})`, { hint: 'write zmq://host:port' });
  }
  const { host, port } = url.hosts[0]!;
  if (port >= 65535) throw new ConfigError(`zmq:// port ${port}: the hub uses it and the next one, so at most 65534 (${url.redacted})`);
  const hub = url.params['hub'] ?? 'auto';
  if (hub !== 'auto' && hub !== 'host' && hub !== 'join') {
    throw new ConfigError(`ZeroMQ parameter hub='${hub}' must be auto, host or join (${url.redacted})`);
  }
  const hwmText = url.params['hwm'] ?? '10000';
  if (!/^\d+$/.test(hwmText) || Number(hwmText) < 1) throw new ConfigError(`ZeroMQ parameter hwm='${hwmText}' must be a whole number of at least 1 (${url.redacted})`);
  const h = host.includes(':') ? `[${host}]` : host;
  return {
    host,
    publishEndpoint: `tcp://${h}:${port}`,
    subscribeEndpoint: `tcp://${h}:${port + 1}`,
    hub,
    hwm: Number(hwmText),
    answerTimeoutMs: 5_000,
  };
}
