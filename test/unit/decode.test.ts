/**
 * Foreign shapes (issue 12, item 3): events payq did not write are read without flags when they
 * are CloudEvents (structured mode, or binary mode in any broker binding), and with
 * `--type-field`, `--correlate` (also per destination) and `--time-field` when they are plain
 * JSON. A body that is not JSON is reported, never taken for an event.
 */
import { describe, expect, it } from 'vitest';
import { checkCorrelateDestinations, decodeEvent, decodeOptionsOf, DEFAULT_DECODE, parseCorrelate, parseFieldPath, timeMs } from '../../src/events/decode.js';
import { headers as natsHeaders } from '@nats-io/transport-node';
import { fromNatsHeaders } from '../../src/drivers/nats/headers.js';
import { headersFromAmqp } from '../../src/drivers/rabbitmq/message.js';
import { UsageError } from '../../src/errors.js';

const json = (v: unknown) => Buffer.from(JSON.stringify(v));
const T = '2026-03-04T05:06:07.089Z';
const TMS = Date.parse(T);

describe('decodeEvent: CloudEvents structured mode, without flags', () => {
  const envelope = {
    specversion: '1.0',
    type: 'com.shop.order.placed',
    source: '/shop/orders',
    id: 'evt-1',
    subject: 'order-77',
    time: T,
    datacontenttype: 'application/json',
    data: { order_id: 77, amount: 1200 },
  };

  it('takes type, id, subject and time from the envelope', () => {
    const e = decodeEvent(json(envelope), {}, undefined);
    expect(e).toMatchObject({ type: 'com.shop.order.placed', id: 'evt-1', paymentId: 'order-77', occurredMs: TMS, structured: true, problem: undefined });
  });

  it('without a subject, correlates by payq’s field inside data, then by the message key', () => {
    const { subject: _s, ...noSubject } = envelope;
    expect(decodeEvent(json({ ...noSubject, data: { payment_id: 'pay_1' } }), {}, undefined).paymentId).toBe('pay_1');
    expect(decodeEvent(json(noSubject), {}, 'key-9').paymentId).toBe('key-9');
    expect(decodeEvent(json(noSubject), {}, undefined).problem).toMatch(/no correlation id/);
  });

  it('a --correlate path is read from the envelope, so data.* reaches the payload', () => {
    const o = decodeOptionsOf({ correlate: parseCorrelate('data.order_id') });
    expect(decodeEvent(json(envelope), {}, undefined, o)).toMatchObject({ paymentId: '77', type: 'com.shop.order.placed', id: 'evt-1' });
  });

  it('is not mistaken for: a body with specversion but no type or id, or payq’s own body', () => {
    const notCe = decodeEvent(json({ specversion: '1.0', event: 'order_placed', payment_id: 'p' }), {}, undefined);
    expect(notCe).toMatchObject({ structured: false, type: 'order_placed', paymentId: 'p' });
    const payq = decodeEvent(json({ event: 'order_placed', id: 'x', payment_id: 'p', occurred_at: T }), {}, undefined);
    expect(payq).toMatchObject({ structured: false, id: 'x', occurredMs: TMS });
  });
});

describe('decodeEvent: CloudEvents binary mode from other SDKs, per broker binding', () => {
  const body = json({ order_id: 5 });
  const cases: [string, Record<string, string>][] = [
    ['Kafka (ce_*)', { ce_specversion: '1.0', ce_type: 'order.placed', ce_id: 'k1', ce_subject: 'ord-5', ce_time: T, ce_source: '/x' }],
    ['AMQP 1.0 (cloudEvents:*)', { 'cloudEvents:specversion': '1.0', 'cloudEvents:type': 'order.placed', 'cloudEvents:id': 'k1', 'cloudEvents:subject': 'ord-5', 'cloudEvents:time': T }],
    ['AMQP, JMS-safe (cloudEvents_*)', { cloudEvents_specversion: '1.0', cloudEvents_type: 'order.placed', cloudEvents_id: 'k1', cloudEvents_subject: 'ord-5', cloudEvents_time: T }],
    ['NATS (ce-*, percent-encoded)', { 'ce-specversion': '1.0', 'ce-type': 'order.placed', 'ce-id': 'k1', 'ce-subject': 'ord%2D5', 'ce-time': T.replace(/:/g, '%3A') }],
    ['NATS/HTTP, capitalised (Ce-*)', { 'Ce-Specversion': '1.0', 'Ce-Type': 'order.placed', 'Ce-Id': 'k1', 'Ce-Subject': 'ord-5', 'Ce-Time': T }],
  ];
  it.each(cases)('%s', (_name, headers) => {
    const e = decodeEvent(body, headers, undefined);
    expect(e).toMatchObject({ type: 'order.placed', id: 'k1', paymentId: 'ord-5', occurredMs: TMS, structured: false, problem: undefined });
    expect(e.body).toEqual({ order_id: 5 });
  });

  it('AMQP application properties as amqplib hands them over (typed timestamp, byte strings)', () => {
    const headers = headersFromAmqp({
      'cloudEvents:specversion': Buffer.from('1.0'),
      'cloudEvents:type': Buffer.from('order.placed'),
      'cloudEvents:id': 'k1',
      'cloudEvents:subject': 'ord-5',
      'cloudEvents:time': { '!': 'timestamp', value: Math.floor(TMS / 1000) },
    });
    expect(decodeEvent(body, headers, undefined)).toMatchObject({ type: 'order.placed', id: 'k1', paymentId: 'ord-5', occurredMs: Math.floor(TMS / 1000) * 1000 });
  });

  it('NATS headers as the NATS client hands them over (ce-*, percent-encoded values)', () => {
    const raw = natsHeaders();
    raw.set('ce-specversion', '1.0');
    raw.set('ce-type', 'order.placed');
    raw.set('ce-id', 'k1');
    raw.set('ce-subject', 'ord%205');
    raw.set('ce-time', encodeURIComponent(T));
    const { headers } = fromNatsHeaders(raw);
    expect(decodeEvent(body, headers, undefined)).toMatchObject({ type: 'order.placed', id: 'k1', paymentId: 'ord 5', occurredMs: TMS });
  });

  it('headers win over body fields unless a flag says where to look', () => {
    const headers = { ce_type: 'from.header', ce_id: 'h', ce_subject: 'sub' };
    const b = json({ kind: 'from.body', ref: { id: 'r-1' }, at: '2026-05-01T00:00:00Z' });
    expect(decodeEvent(b, headers, undefined)).toMatchObject({ type: 'from.header', paymentId: 'sub' });
    const o = decodeOptionsOf({ typeField: 'kind', correlate: parseCorrelate('ref.id'), timeField: 'at' });
    expect(decodeEvent(b, headers, undefined, o)).toMatchObject({ type: 'from.body', paymentId: 'r-1', occurredMs: Date.parse('2026-05-01T00:00:00Z') });
  });
});

describe('decodeEvent: plain JSON bodies with flags', () => {
  it('--correlate per destination: each destination its field, DLQs their origin’s, the plain path the rest', () => {
    const o = decodeOptionsOf({ correlate: parseCorrelate('ref,orders=data.order_id,payments=data.order.id') });
    const order = json({ event: 'order_placed', data: { order_id: 'o-1' } });
    const payment = json({ event: 'payment_captured', data: { order: { id: 'o-1' } } });
    const other = json({ event: 'shipped', ref: 'o-1' });
    expect(decodeEvent(order, {}, undefined, o, 'orders').paymentId).toBe('o-1');
    expect(decodeEvent(payment, {}, undefined, o, 'payments').paymentId).toBe('o-1');
    expect(decodeEvent(payment, {}, undefined, o, 'payments.dlq').paymentId).toBe('o-1');
    expect(decodeEvent(other, {}, undefined, o, 'shipping').paymentId).toBe('o-1');
    // The field of another destination is not used: the payment on the wrong destination has none.
    expect(decodeEvent(payment, {}, undefined, o, 'orders').problem).toMatch(/no correlation id .*'data\.order_id'/);
  });

  it('--time-field alone wins for the time only: type and payment still come from the headers first', () => {
    const headers = { ce_type: 'from.header', ce_id: 'h', ce_subject: 'sub', ce_time: T, 'payq-sequence': '0' };
    const b = json({ event: 'from.body', payment_id: 'body-pay', at: '2026-05-01T00:00:00Z' });
    const o = { ...decodeOptionsOf({ timeField: 'at' }), headersFirst: true };
    expect(decodeEvent(b, headers, undefined, o)).toMatchObject({ type: 'from.header', paymentId: 'sub', occurredMs: Date.parse('2026-05-01T00:00:00Z') });
    expect(decodeEvent(b, headers, undefined, { ...DEFAULT_DECODE, headersFirst: true })).toMatchObject({ occurredMs: TMS, body: undefined });
  });

  it('--time-field: ISO text, epoch seconds or milliseconds; a field that is not a time gives none', () => {
    const o = decodeOptionsOf({ timeField: 'meta.at' });
    const at = (v: unknown) => decodeEvent(json({ event: 'x', payment_id: 'p', meta: { at: v } }), {}, undefined, o).occurredMs;
    expect(at(T)).toBe(TMS);
    expect(at(TMS)).toBe(TMS);
    expect(at(TMS / 1000)).toBe(TMS);
    expect(at(String(TMS))).toBe(TMS);
    expect(at('yesterday')).toBeUndefined();
    expect(at('1')).toBe(1000);
    expect(at(-5)).toBeUndefined();
    expect(at({ nested: true })).toBeUndefined();
    expect(timeMs('2026-03-04')).toBe(Date.parse('2026-03-04'));
    expect(timeMs('March 4')).toBeUndefined();
  });

  it.each([
    ['not JSON', Buffer.from('order_placed,77'), 'the body is not JSON'],
    ['empty', Buffer.alloc(0), 'the body is empty'],
    ['a JSON array', json([1, 2]), 'the body is JSON but not an object'],
    ['truncated JSON', Buffer.from('{"specversion":"1.0","type":"a"'), 'the body is not JSON'],
  ])('a body that is %s is a problem, with CloudEvents headers or without', (_name, value, problem) => {
    expect(decodeEvent(value, {}, 'k', DEFAULT_DECODE).problem).toBe(problem);
    expect(decodeEvent(value, { 'ce-type': 'a', 'ce-id': 'b', 'ce-subject': 'c' }, 'k', DEFAULT_DECODE).problem).toBe(problem);
  });
});

describe('--correlate, --time-field and --type-field syntax', () => {
  it('parses a plain path, per-destination paths, and both', () => {
    expect(parseCorrelate('data.order_id')).toEqual({ path: 'data.order_id', byDestination: {} });
    expect(parseCorrelate('orders=data.order_id, checkout.payments = data.order.id')).toEqual({
      path: undefined,
      byDestination: { orders: 'data.order_id', 'checkout.payments': 'data.order.id' },
    });
    expect(parseCorrelate('id,orders=data.order_id')).toEqual({ path: 'id', byDestination: { orders: 'data.order_id' } });
  });

  it.each([
    ['', /empty/],
    [',', /empty/],
    ['orders=', /destination 'orders': empty field path/],
    ['=data.id', /no destination before '='/],
    ['a,b', /two paths for every destination/],
    ['orders=a,orders=b', /'orders' is named twice/],
    ['orders=data..id', /not a field path/],
    ['data.', /not a field path/],
    ['orders=a=b', /not a field path/],
    ['a,,orders=b', /an empty item/],
  ])('refuses %j', (text, message) => {
    expect(() => parseCorrelate(text)).toThrow(UsageError);
    expect(() => parseCorrelate(text)).toThrow(message);
  });

  it('refuses a destination that is not read; a DLQ counts as its origin', () => {
    expect(() => checkCorrelateDestinations(parseCorrelate('orders=a'), ['orders', 'payments'])).not.toThrow();
    expect(() => checkCorrelateDestinations(parseCorrelate('orders.dlq=a'), ['orders'])).not.toThrow();
    expect(() => checkCorrelateDestinations(parseCorrelate('ordrs=a'), ['orders', 'payments'])).toThrow(/'ordrs' is not one that is read \(reading: orders, payments\)/);
  });

  it.each(['.at', 'at.', 'a..b', 'a b', 'a/b'])('a field path such as %j is refused', (path) => {
    expect(() => parseFieldPath(path)).toThrow(/^'.*' is not a field path/);
  });
});
