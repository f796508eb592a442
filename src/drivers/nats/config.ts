/**
 * `nats://[user:pass@|:token@]host:port[,host:port][?params]` → client and JetStream settings,
 * parsed and validated once.
 *
 * URL parameters (all optional):
 *   tls=true         TLS with the system's CAs; ca=, cert=, key=, insecure= as for every driver (tls.ts)
 *   maxDeliver=N     JetStream stops redelivering a message after N deliveries and moves on
 *                    without telling anyone, so payq leaves it unlimited (-1): the worker
 *                    dead-letters after its own retry policy, and replay's dry runs give every
 *                    message back (a nak counts as a delivery). Set it for consumers payq creates.
 *   ackWait=S        seconds a delivery may stay unsettled before JetStream redelivers it
 *                    (default 30); payq keeps messages its handler still holds alive (+WPI).
 *   replicas=N       stream replicas when payq creates a stream (default 1; 3 on a cluster)
 *   storage=file|memory   stream storage when payq creates a stream (default file)
 *   maxAgeHours=H    stream retention when payq creates a stream (default 168 = Kafka's 7 days)
 */
import { ConfigError } from '../../errors.js';
import { TLS_URL_PARAMS, tlsOptionsFromUrl, type TlsOptions } from '../tls.js';
import type { BrokerUrl, DriverUrlSpec } from '../url.js';

export interface NatsConfig {
  servers: string[];
  /** user + pass, or a token (`nats://:TOKEN@…`: in the password's place, so it is redacted). */
  user: string | undefined;
  pass: string | undefined;
  token: string | undefined;
  tls: TlsOptions | undefined;
  maxDeliver: number;
  ackWaitMs: number;
  replicas: number;
  storage: 'file' | 'memory';
  maxAgeMs: number;
  /** connect(): the whole attempt, below the 15 s payq promises for exit code 3. */
  connectTimeoutMs: number;
  /** One JetStream API call or publish acknowledgement. */
  requestTimeoutMs: number;
}

/** What a NATS URL may hold (the parameters above); url.ts refuses anything else. */
export const NATS_URL_SPEC: DriverUrlSpec = {
  scheme: 'nats',
  sharedAcrossProcesses: true,
  schemes: [{ name: 'nats', tls: false, defaultPort: 4222 }],
  hosts: { min: 1, max: Number.POSITIVE_INFINITY },
  credentials: true,
  params: [
    { name: 'tls', type: 'boolean', meaning: "TLS: the system's CAs unless ca= says otherwise" },
    { name: 'maxDeliver', type: 'integer', min: 1, orMinusOne: true, meaning: 'deliveries before JetStream gives up on a message (default -1, unlimited)' },
    { name: 'ackWait', type: 'integer', min: 1, meaning: 'seconds a delivery may stay unsettled before redelivery (default 30)' },
    { name: 'replicas', type: 'integer', min: 1, meaning: 'replicas of streams payq creates (default 1)' },
    { name: 'storage', type: 'enum', values: ['file', 'memory'], meaning: 'storage of streams payq creates (default file)' },
    ...TLS_URL_PARAMS,
    { name: 'maxAgeHours', type: 'integer', min: 0, meaning: 'retention of streams payq creates, in hours (default 168)' },
  ],
};

/** A parameter url.ts already checked against NATS_URL_SPEC, or its default. */
function intParam(url: BrokerUrl, name: string, fallback: number): number {
  const text = url.params[name];
  return text === undefined ? fallback : Number(text);
}

export function natsConfig(url: BrokerUrl): NatsConfig {
  const storage = (url.params['storage'] ?? 'file') as 'file' | 'memory';
  if (url.username !== undefined && url.username !== '' && url.password === undefined) {
    // NATS' own URLs put a token where the user goes; payq would then print it in every message.
    throw new ConfigError(`a NATS URL with a user name needs a password (${url.redacted})`, {
      hint: 'for token authentication write nats://:TOKEN@host:port, so the token is never printed',
    });
  }
  const token = url.username === '' && url.password !== undefined ? url.password : undefined;
  return {
    servers: url.hosts.map((h) => (h.host.includes(':') ? `[${h.host}]:${h.port}` : `${h.host}:${h.port}`)),
    user: token === undefined ? url.username : undefined,
    pass: token === undefined ? url.password : undefined,
    token,
    tls: tlsOptionsFromUrl(url),
    maxDeliver: intParam(url, 'maxDeliver', -1),
    ackWaitMs: intParam(url, 'ackWait', 30) * 1000,
    replicas: intParam(url, 'replicas', 1),
    storage,
    maxAgeMs: intParam(url, 'maxAgeHours', 168) * 3_600_000,
    connectTimeoutMs: 10_000,
    requestTimeoutMs: 10_000,
  };
}
