import kafkajs from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { classifyKafkaError, isLeaderless, mapKafkaError } from '../../src/drivers/kafka/errors.js';
import { kafkaConfigFromUrl, saslFromUrl } from '../../src/drivers/kafka/config.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import {
  AuthError,
  BrokerUnavailableError,
  ConfigError,
  DeliveryError,
  InternalError,
  TopologyError,
} from '../../src/errors.js';

// kafkajs' error classes, built the way kafkajs builds them (retry wrappers included). Its
// typings omit some classes and constructor options, hence the loose view.
type AnyErrorClass = new (...args: any[]) => Error;
const {
  KafkaJSConnectionError,
  KafkaJSNumberOfRetriesExceeded,
  KafkaJSNonRetriableError,
  KafkaJSProtocolError,
  KafkaJSSASLAuthenticationError,
  KafkaJSAggregateError,
  KafkaJSCreateTopicError,
  KafkaJSRequestTimeoutError,
} = kafkajs as unknown as Record<string, AnyErrorClass>;

function protocolError(type: string, retriable: boolean) {
  return new KafkaJSProtocolError({ type, code: 0, retriable, message: `broker says ${type}` } as never);
}

const url = parseBrokerUrl('kafka://alice:hunter2-secret@127.0.0.1:9092?sasl=scram-sha-512');
const ctx = (operation: Parameters<typeof mapKafkaError>[1]['operation']) => ({ operation, url });

describe('kafka error mapping', () => {
  it('a refused connection behind the retry wrapper is BrokerUnavailableError (exit 3, retriable)', () => {
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:1'), { code: 'ECONNREFUSED' });
    const conn = new KafkaJSConnectionError('Connection error: connect ECONNREFUSED 127.0.0.1:1', { broker: '127.0.0.1:1', code: 'ECONNREFUSED' });
    (conn as { cause?: unknown }).cause = refused;
    const wrapped = new KafkaJSNumberOfRetriesExceeded(conn, { retryCount: 4, retryTime: 2000 });
    const err = mapKafkaError(wrapped, ctx('connect'));
    expect(err).toBeInstanceOf(BrokerUnavailableError);
    expect(err.exitCode).toBe(3);
    expect(err.retriable).toBe(true);
    expect(err.message).toContain('ECONNREFUSED');
    expect(err.cause).toBe(wrapped);
  });

  it('a request timeout while sending is BrokerUnavailableError, not a delivery verdict', () => {
    const err = mapKafkaError(new KafkaJSRequestTimeoutError('Request Produce(key: 0, version: 7) timed out'), ctx('send'));
    expect(err).toBeInstanceOf(BrokerUnavailableError);
  });

  it('SASL failures and missing ACLs are AuthError, and never show the password', () => {
    const cause = new KafkaJSSASLAuthenticationError('SASL SCRAM SHA512 authentication failed: hunter2-secret rejected');
    const sasl = new KafkaJSNonRetriableError(cause, { cause });
    const err = mapKafkaError(sasl, ctx('connect'));
    expect(err).toBeInstanceOf(AuthError);
    expect(err.exitCode).toBe(3);
    expect(err.message).not.toContain('hunter2-secret');
    expect(err.message).toContain('alice:***@');
    // --debug prints the cause's stack: scrubbed where the error was mapped.
    expect(String(cause.stack)).not.toContain('hunter2-secret');
    expect(cause.message).toContain('authentication failed: *** rejected');

    expect(mapKafkaError(protocolError('TOPIC_AUTHORIZATION_FAILED', false), ctx('send'))).toBeInstanceOf(AuthError);
    expect(mapKafkaError(protocolError('GROUP_AUTHORIZATION_FAILED', false), ctx('subscribe'))).toBeInstanceOf(AuthError);
  });

  it('broker errors while sending are DeliveryError (exit 4) carrying kafkajs retriability', () => {
    const retriable = new KafkaJSNumberOfRetriesExceeded(protocolError('NOT_ENOUGH_REPLICAS', true), { retryCount: 4, retryTime: 2000 });
    const a = mapKafkaError(retriable, ctx('send'));
    expect(a).toBeInstanceOf(DeliveryError);
    expect(a.exitCode).toBe(4);
    expect(a.retriable).toBe(true);

    const tooLarge = new KafkaJSNonRetriableError(protocolError('MESSAGE_TOO_LARGE', false));
    const b = mapKafkaError(tooLarge, { ...ctx('send'), subject: 'payments' });
    expect(b).toBeInstanceOf(DeliveryError);
    expect(b.retriable).toBe(false);
    expect(b.message).toContain('(payments)');
    expect(b.message).toContain('MESSAGE_TOO_LARGE');
  });

  it('a partition without a leader (a broker back from a crash) is told apart, behind kafkajs\' retry wrapper too', () => {
    // What kafkajs' producer throws once its own retries ran out: the send waits it out (README "Failure drills").
    expect(isLeaderless(new KafkaJSNumberOfRetriesExceeded(protocolError('NOT_LEADER_FOR_PARTITION', true), { retryCount: 4, retryTime: 2000 }))).toBe(true);
    expect(isLeaderless(protocolError('LEADER_NOT_AVAILABLE', true))).toBe(true);
    expect(isLeaderless(new KafkaJSNumberOfRetriesExceeded(protocolError('NOT_ENOUGH_REPLICAS', true), { retryCount: 4, retryTime: 2000 }))).toBe(false);
    expect(isLeaderless(new KafkaJSNonRetriableError(protocolError('MESSAGE_TOO_LARGE', false)))).toBe(false);
  });

  it('topic problems are TopologyError, also inside createTopics aggregates', () => {
    expect(mapKafkaError(protocolError('UNKNOWN_TOPIC_OR_PARTITION', true), ctx('subscribe'))).toBeInstanceOf(TopologyError);
    const aggregate = new KafkaJSAggregateError('Topic creation errors', [
      new KafkaJSCreateTopicError(protocolError('INVALID_REPLICATION_FACTOR', false), 'payments'),
    ]);
    const err = mapKafkaError(aggregate, ctx('declare'));
    expect(err).toBeInstanceOf(TopologyError);
    expect(err.exitCode).toBe(3);
  });

  it('a JavaScript TypeError under the wrappers is an InternalError (a bug), not the broker', () => {
    const bug = new KafkaJSNonRetriableError(new TypeError('Cannot read properties of undefined'), {
      cause: new TypeError('Cannot read properties of undefined'),
    });
    expect(classifyKafkaError(bug)).toBe('bug');
    expect(mapKafkaError(bug, ctx('send'))).toBeInstanceOf(InternalError);
  });

  it('leaves payq errors alone and survives cyclic causes', () => {
    const own = new ConfigError('bad');
    expect(mapKafkaError(own, ctx('send'))).toBe(own);
    const a = new Error('a') as Error & { cause?: unknown };
    const b = new Error('b') as Error & { cause?: unknown };
    a.cause = b;
    b.cause = a;
    expect(mapKafkaError(a, ctx('commit'))).toBeInstanceOf(DeliveryError);
  });
});

describe('kafka URL → client config', () => {
  it('uses PLAIN when credentials come without ?sasl=, and the named mechanism otherwise', () => {
    expect(saslFromUrl(parseBrokerUrl('kafka://u:p@h:9092'))).toEqual({ mechanism: 'plain', username: 'u', password: 'p' });
    expect(saslFromUrl(parseBrokerUrl('kafka://u:p@h:9092?sasl=SCRAM-SHA-256'))).toMatchObject({ mechanism: 'scram-sha-256' });
    expect(saslFromUrl(parseBrokerUrl('kafka://h:9092'))).toBeUndefined();
  });

  it('rejects unknown mechanisms and a mechanism without a user, without echoing the password', () => {
    expect(() => saslFromUrl(parseBrokerUrl('kafka://u:topsecret@h?sasl=gssapi'))).toThrow(ConfigError);
    try {
      saslFromUrl(parseBrokerUrl('kafka://u:topsecret@h?sasl=gssapi'));
    } catch (err) {
      expect((err as Error).message).not.toContain('topsecret');
    }
    expect(() => saslFromUrl(parseBrokerUrl('kafka://h?sasl=plain'))).toThrow(ConfigError);
  });

  it('maps hosts, TLS and client id', () => {
    const config = kafkaConfigFromUrl(parseBrokerUrl('kafkas://a:9093,[::1]:9094'), kafkajs.logLevel.NOTHING);
    // kafkajs splits a bootstrap entry at its first ':', so the IPv6 literal goes in as a name
    // its socket factory connects to ::1 (unbracketed).
    expect(config.brokers).toEqual(['a:9093', 'payq-ipv6-1.invalid:9094']);
    expect(config.ssl).toEqual({ rejectUnauthorized: true });
    expect(config.clientId).toBe('payq');
    expect(config.sasl).toBeUndefined();
  });
});
