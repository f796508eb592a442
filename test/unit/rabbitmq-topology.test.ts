/**
 * The RabbitMQ driver's pure rules (no broker): routing keys and bindings, the dead-letter mark,
 * header conversion, URL settings and error mapping.
 */
import { describe, expect, it } from 'vitest';
import { AuthError, BrokerUnavailableError, ConfigError, TopologyError } from '../../src/errors.js';
import { rabbitMqConfig } from '../../src/drivers/rabbitmq/config.js';
import { connectError, operationError } from '../../src/drivers/rabbitmq/errors.js';
import { headersFromAmqp, headersToAmqp, publishOptions } from '../../src/drivers/rabbitmq/message.js';
import {
  bindingPattern,
  DEAD_LETTER_MARKER,
  deathCount,
  decodeMark,
  decodeWord,
  deliveryKey,
  encodeMark,
  encodeWord,
  isFreshMark,
  keyFromRoutingKey,
  queueArguments,
  routingKey,
  validateDestination,
} from '../../src/drivers/rabbitmq/topology.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';

/** RabbitMQ's topic matching: `*` is exactly one word, `#` zero or more; words split on '.'. */
function topicMatches(pattern: string, key: string): boolean {
  const p = pattern.split('.');
  const k = key.split('.');
  const match = (i: number, j: number): boolean => {
    if (i === p.length) return j === k.length;
    if (p[i] === '#') return match(i + 1, j) || (j < k.length && match(i, j + 1));
    if (j === k.length) return false;
    return (p[i] === '*' || p[i] === k[j]) && match(i + 1, j + 1);
  };
  return match(0, 0);
}

const config = rabbitMqConfig(parseBrokerUrl('amqp://guest:guest@127.0.0.1:5672'));

describe('rabbitmq routing', () => {
  it('encodes any text as one topic word and back', () => {
    for (const text of ['order_placed', 'a.b.c', '100%', '%2E', '', '..', 'Zahlung.über.€', 'pay_0001']) {
      const word = encodeWord(text);
      expect(word).not.toContain('.');
      expect(decodeWord(word)).toBe(text);
    }
    expect(decodeWord('cut%')).toBeUndefined();
    expect(decodeWord('bad%41')).toBeUndefined();
  });

  it('routes each destination only to its own queue, whatever the names, types and keys', () => {
    const destinations = ['payments', 'payments.dlq', 'payments.parked', 'a', 'a.b', 'a.b.c', 'orders-v2'];
    const types = ['order_placed', 'dlq', 'parked', 'com.example.type', '', 'b.c'];
    const keys = ['pay-1', 'k.with.dots', '', 'c'];
    for (const dest of destinations) {
      for (const type of types) {
        for (const key of keys) {
          const rk = routingKey(dest, type, key);
          const matched = destinations.filter((d) => topicMatches(bindingPattern(d), rk));
          expect({ rk, matched }).toEqual({ rk, matched: [dest] });
          expect(keyFromRoutingKey(dest, rk)).toBe(key);
        }
      }
    }
  });

  it('lets taps see sends by type', () => {
    expect(topicMatches('*.order_placed.*', routingKey('payments', 'order_placed', 'p1'))).toBe(true);
    expect(topicMatches('#', routingKey('payments.dlq', 'order_placed', 'p1'))).toBe(true);
  });

  it('keeps routing keys within 255 bytes, cutting the type first and never decoding a cut key', () => {
    const dest = 'd'.repeat(200);
    const longType = 't'.repeat(300);
    const rk1 = routingKey(dest, longType, 'pay-1');
    expect(Buffer.byteLength(rk1)).toBeLessThanOrEqual(255);
    expect(topicMatches(bindingPattern(dest), rk1)).toBe(true);
    expect(keyFromRoutingKey(dest, rk1)).toBe('pay-1');

    const rk2 = routingKey(dest, longType, 'k'.repeat(300));
    expect(Buffer.byteLength(rk2)).toBeLessThanOrEqual(255);
    expect(topicMatches(bindingPattern(dest), rk2)).toBe(true);
    expect(keyFromRoutingKey(dest, rk2)).toBeUndefined();

    const rk3 = routingKey('q', 'x', '€.'.repeat(200));
    expect(Buffer.byteLength(rk3)).toBeLessThanOrEqual(255);
    expect(keyFromRoutingKey('q', rk3)).toBeUndefined();
  });

  it('accepts ordinary queue names and refuses the ones RabbitMQ or the routing rule cannot take', () => {
    for (const ok of ['payments', 'payments.dlq', 'payq-test.x.1', 'a#b', 'a*b']) expect(() => validateDestination(ok)).not.toThrow();
    for (const bad of ['', 'amq.gen-1', 'a.#.b', 'a.*', 'x'.repeat(201)]) expect(() => validateDestination(bad)).toThrow(ConfigError);
  });

  it('declares the DLX arguments only for dead-lettered destinations', () => {
    expect(queueArguments({ name: 'p' }, config)).toEqual({});
    expect(queueArguments({ name: 'p', deadLetter: true }, config)).toEqual({
      'x-dead-letter-exchange': 'payq.dlx',
      'x-dead-letter-routing-key': 'p.dlq',
    });
  });
});

describe('rabbitmq dead-letter mark', () => {
  const xDeath = (queue: string, count: number) => ({
    'x-death': [
      { count, reason: 'rejected', queue, time: { '!': 'timestamp', value: 1714566896 }, exchange: '', 'routing-keys': [queue] },
      { count: 2, reason: 'expired', queue: 'other', exchange: '', 'routing-keys': ['other'] },
    ],
  });

  it('counts x-death entries of one queue', () => {
    expect(deathCount(undefined, 'q')).toBe(0);
    expect(deathCount({ 'x-death': 'not an array' }, 'q')).toBe(0);
    expect(deathCount(xDeath('q', 3), 'q')).toBe(3);
    expect(deathCount(xDeath('q', 3), 'other')).toBe(2);
  });

  it('is fresh only on its queue and before the broker dead-lettered it', () => {
    const mark = decodeMark(encodeMark({ queue: 'q', deaths: 1, key: 'pay-1' }));
    expect(mark).toEqual({ queue: 'q', deaths: 1, key: 'pay-1' });
    expect(isFreshMark(mark, 'q', xDeath('q', 1))).toBe(true);
    expect(isFreshMark(mark, 'q', xDeath('q', 2))).toBe(false); // moved back after dead-lettering
    expect(isFreshMark(mark, 'q.dlq', xDeath('q', 1))).toBe(false); // read from the DLQ
    expect(isFreshMark(decodeMark(Buffer.from(encodeMark({ queue: 'q', deaths: 0 }))), 'q', {})).toBe(true);
    for (const junk of ['1', 'forged', '{"queue":1}', 42, undefined]) expect(decodeMark(junk)).toBeUndefined();
  });

  it('finds the payment key from the routing key, the mark or x-death', () => {
    const rk = routingKey('q', 'order_placed', 'pay-7');
    expect(deliveryKey('q', rk, undefined, undefined)).toBe('pay-7');
    expect(deliveryKey('q.dlq', 'q.dlq', { queue: 'q', deaths: 0, key: 'pay-8' }, undefined)).toBe('pay-8');
    const nativeDeath = { 'x-death': [{ count: 1, reason: 'rejected', queue: 'q', exchange: 'payq', 'routing-keys': [rk] }] };
    expect(deliveryKey('q.dlq', 'q.dlq', undefined, nativeDeath)).toBe('pay-7');
    expect(deliveryKey('user-queue', 'user-queue', undefined, undefined)).toBeUndefined();
  });
});

describe('rabbitmq headers and properties', () => {
  it('flattens AMQP header values to strings and hides the mark', () => {
    const headers = headersFromAmqp({
      s: 'text',
      n: 42,
      b: true,
      buf: Buffer.from('über', 'utf8'),
      ts: { '!': 'timestamp', value: 1714566896 },
      'x-death': [{ count: 1, queue: 'q', time: { '!': 'timestamp', value: 1714566896 }, 'routing-keys': ['q'] }],
      nothing: null,
      [DEAD_LETTER_MARKER]: encodeMark({ queue: 'q', deaths: 0 }),
    });
    expect(headers).toEqual({
      s: 'text',
      n: '42',
      b: 'true',
      buf: 'über',
      ts: '2024-05-01T12:34:56.000Z',
      'x-death': '[{"count":1,"queue":"q","time":"2024-05-01T12:34:56.000Z","routing-keys":["q"]}]',
    });
  });

  it('never lets a caller send the mark', () => {
    const plain = { a: '1' };
    expect(headersToAmqp(plain)).toBe(plain);
    expect(headersToAmqp({ a: '1', [DEAD_LETTER_MARKER]: 'x' })).toEqual({ a: '1' });
  });

  it('uses ce_id as message-id and content-type from the headers when they fit', () => {
    const m = { key: 'k', type: 'order_placed', value: Buffer.from('{}'), headers: { ce_id: 'evt-1', 'content-type': 'application/cloudevents+json' } };
    expect(publishOptions(m, 1714566896)).toMatchObject({
      persistent: true,
      mandatory: true,
      messageId: 'evt-1',
      contentType: 'application/cloudevents+json',
      type: 'order_placed',
      timestamp: 1714566896,
    });
    const long = publishOptions({ ...m, type: 't'.repeat(300), headers: { ce_id: 'i'.repeat(300) } }, 0);
    expect(long.messageId).not.toBe('i'.repeat(300));
    expect(long.type).toBeUndefined();
    expect(long.contentType).toBe('application/json');
    expect(publishOptions({ ...m, headers: {} }, 0).messageId).not.toBe(publishOptions({ ...m, headers: {} }, 0).messageId);
  });
});

describe('rabbitmq URL settings and errors', () => {
  it('reads defaults and RabbitMQ URI parameters', () => {
    expect(config).toMatchObject({ exchange: 'payq', deadLetterExchange: 'payq.dlx', vhost: '/', heartbeatSeconds: 30, connectionTimeoutMs: 5000 });
    const custom = rabbitMqConfig(parseBrokerUrl('amqps://u:p@h/prod%2Fpayments?exchange=pipe&heartbeat=10&connection_timeout=2000'));
    expect(custom).toMatchObject({ exchange: 'pipe', deadLetterExchange: 'pipe.dlx', vhost: 'prod/payments', heartbeatSeconds: 10, connectionTimeoutMs: 2000 });
    expect(rabbitMqConfig(parseBrokerUrl('amqp://h/%2F')).vhost).toBe('/');
  });

  it('rejects unknown parameters, bad numbers and reserved exchange names', () => {
    for (const url of ['amqp://h?exchnage=x', 'amqp://h?heartbeat=abc', 'amqp://h?connection_timeout=1', 'amqp://h?exchange=amq.topic', 'amqp://h?exchange=']) {
      expect(() => rabbitMqConfig(parseBrokerUrl(url)), url).toThrow(ConfigError);
    }
  });

  it('maps connection failures without ever showing the password', () => {
    const url = parseBrokerUrl('amqp://guest:Sup3r-secret@127.0.0.1:5672/shop');
    const cases: Array<[unknown, new (...a: never[]) => Error]> = [
      [new Error('Handshake terminated by server: 403 (ACCESS-REFUSED) with message "ACCESS_REFUSED - Login was refused"'), AuthError],
      [new Error('Expected ConnectionOpenOk; got <ConnectionClose channel:0>'), AuthError],
      [Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:5672'), { code: 'ECONNREFUSED' }), BrokerUnavailableError],
      [new Error('connect ETIMEDOUT'), BrokerUnavailableError],
      [new Error('Socket closed abruptly during opening handshake'), BrokerUnavailableError],
    ];
    for (const [cause, type] of cases) {
      const err = connectError(cause, url, 'shop');
      expect(err).toBeInstanceOf(type);
      expect(err.exitCode).toBe(3);
      expect(err.message).not.toContain('Sup3r-secret');
      expect(err.message).toContain('amqp://guest:***@127.0.0.1:5672/shop');
    }
  });

  it('maps channel close codes of failed operations', () => {
    const url = parseBrokerUrl('amqp://guest:guest@127.0.0.1:5672');
    const closed = (code: number, text: string) =>
      Object.assign(new Error(`Operation failed: QueueDeclare; ${code} (X) with message "${text}"`), { code });
    const inequivalent = operationError(closed(406, "PRECONDITION_FAILED - inequivalent arg 'durable'"), "declare queue 'q'", url);
    expect(inequivalent).toBeInstanceOf(TopologyError);
    expect(inequivalent.message).toContain("inequivalent arg 'durable'");
    expect(operationError(closed(404, "NOT_FOUND - no queue 'q'"), "consume from queue 'q'", url)).toBeInstanceOf(TopologyError);
    expect(operationError(closed(403, 'ACCESS_REFUSED - no configure permission'), "declare queue 'q'", url)).toBeInstanceOf(AuthError);
    expect(operationError(new Error('Channel ended, no reply will be forthcoming'), "declare queue 'q'", url)).toBeInstanceOf(BrokerUnavailableError);
  });
});
