/** consume's pretty lines for events payq did not write: their type, payment and business time. */
import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import { prettyLine } from '../../src/cli/commands/consume.js';
import { decodeDelivery } from '../../src/core/consume.js';
import { decodeOptionsOf, parseCorrelate, type DecodeOptions } from '../../src/events/decode.js';

const c = new Chalk({ level: 0 });
const destinations = ['orders', 'payments'];

function line(destination: string, body: unknown, decode?: DecodeOptions, headers: Record<string, string> = {}): string {
  const m = decodeDelivery(
    { destination, key: undefined, value: Buffer.from(typeof body === 'string' ? body : JSON.stringify(body)), headers, partition: 0, offset: '1', redelivered: false, settleable: true, ack() {}, nack() {}, deadLetter: async () => {} },
    decode,
  );
  return prettyLine(m, { ndjson: false, withMeta: false, destinations }, c).replace(/ +/g, ' ').trimEnd();
}

describe('consume pretty lines for foreign shapes', () => {
  it('a CloudEvents structured envelope: its time, type, subject and data amount, without flags', () => {
    const env = { specversion: '1.0', type: 'shop.order.placed', id: 'e1', source: '/s', subject: 'ord-1', time: '2026-02-03T10:00:00.5Z', data: { amount: 1250, currency: 'EUR' } };
    expect(line('orders', env)).toBe('2026-02-03 10:00:00.500 orders shop.order.placed ord-1 12.50 EUR');
  });

  it('per-destination --correlate and --time-field pick each destination’s fields', () => {
    const decode = decodeOptionsOf({ typeField: 'kind', correlate: parseCorrelate('orders=data.order_id,payments=data.order.id'), timeField: 'data.at' });
    expect(line('orders', { kind: 'order_placed', data: { order_id: 'o-1', at: 1767225600 } }, decode)).toBe('2026-01-01 00:00:00.000 orders order_placed o-1');
    expect(line('payments', { kind: 'payment_captured', data: { order: { id: 'o-1' }, order_id: 'o-9', at: '2026-01-01T00:00:02Z' } }, decode)).toBe(
      '2026-01-01 00:00:02.000 payments payment_captured o-1',
    );
  });

  it('binary mode with the NATS binding’s ce- headers; a body that is not JSON is a problem line', () => {
    expect(line('orders', { n: 1 }, undefined, { 'ce-type': 'x.y', 'ce-id': '1', 'ce-subject': 's%201', 'ce-time': '2026-01-01T00:00:00Z' })).toBe(
      '2026-01-01 00:00:00.000 orders x.y s 1',
    );
    expect(line('orders', 'plain text')).toBe('- orders the body is not JSON: "plain text"');
  });
});
