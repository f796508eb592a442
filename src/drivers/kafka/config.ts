/**
 * Broker URL → kafkajs client configuration, and the driver's tuning in one place.
 */
import { isIP, connect as netConnect } from 'node:net';
import { connect as tlsConnect } from 'node:tls';
import type { ISocketFactory, KafkaConfig, SASLOptions } from 'kafkajs';
import { ConfigError } from '../../errors.js';
import { TLS_URL_PARAMS, tlsOptionsFromUrl } from '../tls.js';
import type { BrokerUrl, DriverUrlSpec } from '../url.js';

export const KAFKA_TUNING = {
  /** TCP (+TLS) connect; a dead host must fail the 15 s connect budget with retries to spare. */
  connectionTimeoutMs: 3_000,
  authenticationTimeoutMs: 5_000,
  /** Any request, produce with acks=all included; local acks take milliseconds. */
  requestTimeoutMs: 10_000,
  /** Cluster-level retry for connects and metadata: ~2.5 s of back-off before giving up. */
  retry: { retries: 4, initialRetryTime: 150, maxRetryTime: 2_000 },
  /** Hard ceiling on connect(): the CLI promises an answer well within 15 s. */
  connectDeadlineMs: 12_000,
  /** Topic creation and leader election. */
  declareTimeoutMs: 15_000,
  /**
   * Every setting from 250 to 2000 per batch and 4 to 16 in flight lands on the same plateau,
   * bounded by the client's CPU, not by the broker (a bare kafkajs loop does the same). The
   * smallest setting on the plateau keeps publish latency and memory low; 4 × 500 in flight still
   * covers a few ms of network round trip. What the plateau is depends on the machine's load, so
   * it is measured as CPU per event (`/usr/bin/time -v payq produce --count 100000`, user + sys /
   * events, 2 cores shared with the broker and other work, 2026-12): ~64 µs/event (12k events/s
   * when the machine was otherwise idle) with kafkajs' record encoder and 11 headers a record,
   * about half of that with the compact `payq` header and record-codec.ts (46–70 µs/event beside
   * 92–136 µs/event for the former, alternating runs on a machine loaded 13–20 deep).
   */
  sendBatchSize: 500,
  sendMaxInFlight: 4,
  /** Fast group joins: tests create many short-lived groups (broker initial delay is 0 too). */
  consumer: {
    sessionTimeout: 10_000,
    heartbeatInterval: 1_000,
    rebalanceTimeout: 10_000,
    maxWaitTimeInMs: 100,
    /** Waiting for the first assignment and initial offsets before subscribe() resolves. */
    readyTimeoutMs: 30_000,
    /** Acks that arrive after their handler returned are committed this often. */
    commitIntervalMs: 500,
  },
} as const;

const SASL_MECHANISMS = ['plain', 'scram-sha-256', 'scram-sha-512'] as const;
type SaslMechanism = (typeof SASL_MECHANISMS)[number];

/** What a Kafka URL may hold (README "Brokers and URLs"); url.ts refuses anything else. */
export const KAFKA_URL_SPEC: DriverUrlSpec = {
  scheme: 'kafka',
  sharedAcrossProcesses: true,
  schemes: [
    { name: 'kafka', tls: false, defaultPort: 9092 },
    { name: 'kafkas', tls: true, defaultPort: 9093 },
  ],
  hosts: { min: 1, max: Number.POSITIVE_INFINITY },
  credentials: true,
  params: [
    { name: 'tls', type: 'boolean', meaning: 'TLS (kafkas:// always uses it): the system CAs unless ca= says otherwise' },
    { name: 'sasl', type: 'enum', values: SASL_MECHANISMS, ignoreCase: true, meaning: 'the SASL mechanism for the URL user and password (default plain)' },
    ...TLS_URL_PARAMS,
  ],
};

/** SASL from URL userinfo + `?sasl=`; PLAIN when credentials are given without a mechanism. */
export function saslFromUrl(url: BrokerUrl): SASLOptions | undefined {
  // url.ts checked the value against KAFKA_URL_SPEC.
  const requested = url.params['sasl']?.toLowerCase();
  if (url.username === undefined) {
    if (requested !== undefined) {
      throw new ConfigError(`?sasl=${requested} needs a user in the URL: ${url.redacted}`, {
        hint: 'kafka://user:password@host:9092?sasl=scram-sha-512',
      });
    }
    return undefined;
  }
  const mechanism = (requested ?? 'plain') as SaslMechanism;
  return { mechanism, username: url.username, password: url.password ?? '' } as SASLOptions;
}

/**
 * kafkajs splits each bootstrap entry at its first ':' (`[::1]:9092` becomes host '['), so an
 * IPv6 literal is handed to it as a name that cannot resolve anywhere, and the socket factory
 * below connects that name to the address. Brokers the cluster's metadata names are connected
 * by kafkajs as host and port, unsplit.
 */
function ipv6Alias(index: number): string {
  return `payq-ipv6-${index}.invalid`;
}

/** kafkajs' own socket factory (keep-alive, SNI only for names), with IPv6 aliases mapped back. */
function socketFactory(aliases: ReadonlyMap<string, string>): ISocketFactory {
  return ({ host, port, ssl, onConnect }) => {
    const address = aliases.get(host) ?? host;
    const socket = ssl
      ? tlsConnect({ host: address, port, ...(isIP(address) ? {} : { servername: address }), ...(ssl as object) }, onConnect)
      : netConnect({ host: address, port }, onConnect);
    socket.setKeepAlive(true, 60_000);
    return socket;
  };
}

export function kafkaConfigFromUrl(url: BrokerUrl, logLevel: KafkaConfig['logLevel']): KafkaConfig {
  const sasl = saslFromUrl(url);
  const aliases = new Map<string, string>();
  const brokers = url.hosts.map(({ host, port }, i) => {
    if (!host.includes(':')) return `${host}:${port}`;
    aliases.set(ipv6Alias(i), host);
    return `${ipv6Alias(i)}:${port}`;
  });
  const config: KafkaConfig = {
    clientId: 'payq',
    brokers,
    socketFactory: socketFactory(aliases),
    ssl: tlsOptionsFromUrl(url) ?? false,
    connectionTimeout: KAFKA_TUNING.connectionTimeoutMs,
    authenticationTimeout: KAFKA_TUNING.authenticationTimeoutMs,
    requestTimeout: KAFKA_TUNING.requestTimeoutMs,
    enforceRequestTimeout: true,
    retry: { ...KAFKA_TUNING.retry },
    // payq maps every failure itself; kafkajs must never print.
    logLevel,
  };
  if (sasl) config.sasl = sasl;
  return config;
}

/** Kafka's own rule for topic names (legal characters, 249 at most, not . or ..). */
export function isValidTopicName(name: string): boolean {
  return /^[A-Za-z0-9._-]{1,249}$/.test(name) && name !== '.' && name !== '..';
}
