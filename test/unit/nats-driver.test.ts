/** The NATS driver's pure parts: layout, header mapping, URL parameters, ack subjects, errors. No server. */
import { JetStreamApiError } from '@nats-io/jetstream';
import { AuthorizationError, ConnectionError, TimeoutError } from '@nats-io/transport-node';
import { describe, expect, it } from 'vitest';
import { natsConfig } from '../../src/drivers/nats/config.js';
import { mapNatsError } from '../../src/drivers/nats/errors.js';
import { decodeValue, encodeValue, fromNatsHeaders, KEY_HEADER, toNatsHeaders } from '../../src/drivers/nats/headers.js';
import { consumerName, publishSubject, streamName, streamSubject, typeTokenOf, validateDestination } from '../../src/drivers/nats/layout.js';
import { deliveryCount, streamSequence } from '../../src/drivers/nats/subscription.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { AuthError, BrokerUnavailableError, ConfigError, DeliveryError, TopologyError } from '../../src/errors.js';

describe('NATS layout', () => {
  it('a stream per destination whose subjects never overlap a nested destination', () => {
    expect(streamName('checkout.orders')).toBe('PAYQ_checkout_orders');
    expect(streamSubject('checkout.orders')).toBe('payq.checkout.orders.*');
    expect(streamSubject('checkout.orders.dlq')).toBe('payq.checkout.orders.dlq.*');
    expect(publishSubject('checkout.orders', 'order_placed')).toBe('payq.checkout.orders.order_placed');
    expect(publishSubject('d', 'a.b c*>')).toBe('payq.d.a_b_c__');
    expect(publishSubject('d', '')).toBe('payq.d._');
    expect(typeTokenOf('payq.checkout.orders.order_placed')).toBe('order_placed');
  });

  it('refuses destination names NATS cannot carry as one subject prefix', () => {
    for (const bad of ['', 'a..b', '.a', 'a.', 'a*', 'a.>', 'a b', 'x'.repeat(201)]) {
      expect(() => validateDestination(bad), bad).toThrow(ConfigError);
    }
    for (const good of ['checkout.orders', 'payq-test.x_1.Y-2']) expect(() => validateDestination(good)).not.toThrow();
  });

  it('group names become consumer names: readable when valid, hashed apart when folded', () => {
    expect(consumerName('payq-worker_1')).toBe('payq-worker_1');
    const dotted = consumerName('payq.worker.orders');
    expect(dotted).toMatch(/^payq_worker_orders_[0-9a-f]{10}$/);
    expect(consumerName('payq_worker_orders')).toBe('payq_worker_orders');
    expect(consumerName('a.b')).not.toBe(consumerName('a b'));
  });
});

describe('NATS headers', () => {
  it('values NATS would trim or cut travel encoded and come back exact', () => {
    for (const v of ['  padded  ', '', 'line\r\nbreak', 'tab\t', '=?UTF-8?B?eA==?=', 'Zahlung über 12,50 € — 支付成功', 'plain']) {
      expect(decodeValue(encodeValue(v))).toBe(v);
    }
    expect(encodeValue('plain value')).toBe('plain value');
    expect(encodeValue(' x')).toMatch(/^=\?UTF-8\?B\?/);
  });

  it('the key travels in payq-key and is given back apart from the headers', () => {
    const raw = toNatsHeaders({ ce_id: 'e1', 'payq-spaces': ' a ', [KEY_HEADER]: 'stale' }, 'pay_1', 'd');
    expect(fromNatsHeaders(raw)).toEqual({ headers: { ce_id: 'e1', 'payq-spaces': ' a ' }, key: 'pay_1' });
    expect(fromNatsHeaders(toNatsHeaders({ a: 'b' }, undefined, 'd'))).toEqual({ headers: { a: 'b' }, key: undefined });
  });

  it('a header name NATS cannot carry is a DeliveryError, not a crash', () => {
    expect(() => toNatsHeaders({ 'bad name': 'x' }, 'k', 'd')).toThrow(DeliveryError);
    expect(() => toNatsHeaders({ 'a:b': 'x' }, 'k', 'd')).toThrow(DeliveryError);
  });
});

describe('NATS URL parameters', () => {
  const cfg = (u: string) => natsConfig(parseBrokerUrl(u));

  it('defaults, credentials and tokens', () => {
    expect(cfg('nats://127.0.0.1:4222')).toMatchObject({ servers: ['127.0.0.1:4222'], maxDeliver: -1, ackWaitMs: 30_000, replicas: 1, storage: 'file', user: undefined, token: undefined });
    expect(cfg('nats://u:p@a:1,b:2')).toMatchObject({ servers: ['a:1', 'b:2'], user: 'u', pass: 'p' });
    expect(cfg('nats://:tok3n@a:1')).toMatchObject({ token: 'tok3n', user: undefined, pass: undefined });
    expect(cfg('nats://a:1?maxDeliver=5&ackWait=10&replicas=3&storage=memory&maxAgeHours=1')).toMatchObject({ maxDeliver: 5, ackWaitMs: 10_000, replicas: 3, storage: 'memory', maxAgeMs: 3_600_000 });
  });

  it('rejects what it cannot use, without printing secrets', () => {
    expect(() => cfg('nats://a:1?maxdeliver=5')).toThrow(/unknown parameter 'maxdeliver'; nats:\/\/ takes tls, maxDeliver, ackWait/);
    expect(() => cfg('nats://a:1?maxDeliver=0')).toThrow(ConfigError);
    expect(() => cfg('nats://a:1?storage=disk')).toThrow(ConfigError);
    // A token written where NATS' own URLs put it would be printed in every message: refused.
    expect(() => cfg('nats://s3cret-token@a:1')).toThrow(/needs a password/);
  });
});

describe('NATS ack subjects and errors', () => {
  it('reads the delivery count from both ack subject formats', () => {
    expect(deliveryCount('$JS.ACK.S.C.1.5.5.1795709320961777166.0')).toBe(1);
    expect(deliveryCount('$JS.ACK.S.C.3.5.9.1795709320961777166.0')).toBe(3);
    expect(deliveryCount('$JS.ACK.dom.ACCHASH.S.C.2.5.9.1795709320961777166.0.tok')).toBe(2);
    expect(deliveryCount(undefined)).toBe(1);
  });

  it('reads the stream sequence (where a re-created tap starts after) from both formats', () => {
    expect(streamSequence('$JS.ACK.S.C.1.5.5.1795709320961777166.0')).toBe(5);
    expect(streamSequence('$JS.ACK.dom.ACCHASH.S.C.2.17.9.1795709320961777166.0.tok')).toBe(17);
    expect(streamSequence('_INBOX.x.1')).toBe(0);
    expect(streamSequence(undefined)).toBe(0);
  });

  it('a publish whose acknowledgement timed out is unconfirmed (the server may hold it), a lookup that timed out is not', () => {
    const send = mapNatsError(new TimeoutError(), { operation: 'send', url: 'nats://h:1' });
    expect(send).toMatchObject({ unconfirmed: true, retriable: true });
    expect(mapNatsError(new TimeoutError(), { operation: 'exists', url: 'nats://h:1' })).toMatchObject({ unconfirmed: false, retriable: true });
  });

  it('maps client errors onto exit codes, naming the broker by its redacted URL', () => {
    const ctx = { operation: 'connect' as const, url: 'nats://u:***@h:1' };
    const auth = mapNatsError(new AuthorizationError('Authorization Violation'), ctx);
    expect(auth).toBeInstanceOf(AuthError);
    expect(auth.exitCode).toBe(3);
    expect(auth.message).toContain('nats://u:***@h:1');
    expect(mapNatsError(new ConnectionError('connection refused'), ctx)).toBeInstanceOf(BrokerUnavailableError);
    const missing = Object.assign(new Error('jetstream is not enabled'), { name: 'JetStreamNotEnabled' });
    expect(mapNatsError(missing, { ...ctx, operation: 'send' })).toBeInstanceOf(TopologyError);
    expect(mapNatsError(missing, ctx)).toBeInstanceOf(BrokerUnavailableError);
    expect(mapNatsError(new TimeoutError(), { ...ctx, operation: 'send' })).toBeInstanceOf(DeliveryError);
    const notFound = new JetStreamApiError({ code: 404, err_code: 10059, description: 'stream not found' });
    expect(mapNatsError(notFound, { ...ctx, operation: 'subscribe' })).toBeInstanceOf(TopologyError);
  });
});
