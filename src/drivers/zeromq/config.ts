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
import type { BrokerUrl, DriverUrlSpec } from '../url.js';

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

/** What a zmq:// URL may hold (the parameters above); url.ts refuses anything else. */
export const ZMQ_URL_SPEC: DriverUrlSpec = {
  scheme: 'zmq',
  sharedAcrossProcesses: true,
  schemes: [{ name: 'zmq', tls: false, defaultPort: 5555 }],
  hosts: { min: 1, max: 1 },
  credentials: false,
  params: [
    { name: 'hub', type: 'enum', values: ['auto', 'host', 'join'], meaning: 'host the hub here, join a running one, or auto (default)' },
    { name: 'hwm', type: 'integer', min: 1, meaning: 'messages ZeroMQ queues per peer before dropping (default 10000)' },
  ],
};

export function zmqConfig(url: BrokerUrl): ZmqConfig {
  if (url.hosts.length !== 1) throw new ConfigError(`a ZeroMQ URL names exactly one host:port, the hub's (${url.redacted})`);
  const { host, port } = url.hosts[0]!;
  if (port >= 65535) throw new ConfigError(`zmq:// port ${port}: the hub uses it and the next one, so at most 65534 (${url.redacted})`);
  // url.ts checked both against ZMQ_URL_SPEC.
  const hub = (url.params['hub'] ?? 'auto') as ZmqConfig['hub'];
  const hwmText = url.params['hwm'] ?? '10000';
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
