/** The lines `payq consume` writes: NDJSON bodies, --with-meta objects, problem lines, pretty lines. */
import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import { formatAmount, ndjsonLine, prettyLine } from '../../src/cli/commands/consume.js';
import { decodeDelivery, type ConsumedMessage } from '../../src/core/consume.js';
import type { Delivery } from '../../src/drivers/types.js';

function message(value: Buffer | string, extra: Partial<Delivery> = {}): ConsumedMessage {
  return decodeDelivery({
    destination: 'checkout.orders',
    key: 'pay_1',
    value: Buffer.from(value),
    headers: { ce_type: 'order_placed', ce_subject: 'pay_1' },
    partition: 2,
    offset: '41',
    redelivered: false,
    settleable: true,
    ack() {},
    nack() {},
    deadLetter: async () => {},
    ...extra,
  });
}

const BODY = '{"event":"order_placed","payment_id":"pay_1","occurred_at":"2026-01-01T00:00:00.001Z","data":{"amount":11527,"currency":"USD"}}';

describe('consume NDJSON lines', () => {
  it('prints the body exactly as it is', () => {
    expect(ndjsonLine(message(BODY), false)).toBe(BODY);
  });

  it('keeps a multi-line body on one line without re-serialising it (big numbers stay exact)', () => {
    const line = ndjsonLine(message('{\n  "event": "x",\n  "n": 12345678901234567890\n}\n'), false);
    expect(line).not.toMatch(/[\r\n]/);
    expect(line).toContain('12345678901234567890');
    expect(JSON.parse(line)).toMatchObject({ event: 'x' });
  });

  it('wraps the body with the delivery metadata under --with-meta', () => {
    const line = ndjsonLine(message(BODY, { redelivered: true }), true);
    expect(JSON.parse(line)).toEqual({
      destination: 'checkout.orders',
      key: 'pay_1',
      partition: 2,
      offset: '41',
      redelivered: true,
      headers: { ce_type: 'order_placed', ce_subject: 'pay_1' },
      event: JSON.parse(BODY),
    });
    const noKafka = JSON.parse(ndjsonLine(message(BODY, { partition: undefined, offset: undefined, key: undefined }), true));
    expect(noKafka).toMatchObject({ key: null, partition: null, offset: null });
  });

  it('prints a body that is not JSON as a problem line: UTF-8 text as it is, other bytes as base64', () => {
    expect(JSON.parse(ndjsonLine(message('hello, "world"\n'), false))).toEqual({
      destination: 'checkout.orders',
      problem: 'the body is not JSON',
      raw: 'hello, "world"\n',
      encoding: 'utf8',
    });
    const binary = Buffer.from([0xff, 0x00, 0xfe]);
    expect(JSON.parse(ndjsonLine(message(binary), false))).toEqual({
      destination: 'checkout.orders',
      problem: 'the body is not JSON (not valid UTF-8)',
      raw: binary.toString('base64'),
      encoding: 'base64',
    });
    expect(JSON.parse(ndjsonLine(message('oops'), true))).toMatchObject({ key: 'pay_1', partition: 2, offset: '41', problem: 'the body is not JSON', raw: 'oops' });
  });
});

describe('consume pretty lines', () => {
  const plain = new Chalk({ level: 0 });
  const options = { ndjson: false, withMeta: false, destinations: ['checkout.orders'] };

  it('shows time, destination, type, payment id and amount', () => {
    const line = prettyLine(message(BODY), options, plain);
    expect(line).toMatch(/^2026-01-01 00:00:00\.001 {2}checkout\.orders {2}order_placed +pay_1 +115\.27 USD$/);
  });

  it('shows a problem instead of an event for a body that is not JSON', () => {
    expect(prettyLine(message('nope'), options, plain)).toContain('the body is not JSON: "nope"');
  });

  it('formats minor units by the currency exponent', () => {
    expect(formatAmount(11527, 'USD')).toBe('115.27 USD');
    expect(formatAmount(5, 'EUR')).toBe('0.05 EUR');
    expect(formatAmount(-250, 'GBP')).toBe('-2.50 GBP');
    expect(formatAmount(1200, 'JPY')).toBe('1200 JPY');
    expect(formatAmount(1234, 'KWD')).toBe('1.234 KWD');
    expect(formatAmount(99, 'XXX')).toBe('99 XXX');
    expect(formatAmount(undefined, 'USD')).toBeUndefined();
  });
});
