import { describe, expect, it } from 'vitest';
import { encodeHeaders } from '../../src/events/codec.js';
import { decodeEvent } from '../../src/events/decode.js';
import { EventGenerator } from '../../src/events/generator.js';
import { PayqHeader } from '../../src/events/headers.js';
import { packPayqHeaders, PAYQ_WIRE_HEADER, unpackPayqHeader } from '../../src/events/payq-header.js';
import { loadScenario } from '../../src/events/scenario.js';
import type { Headers } from '../../src/drivers/types.js';

/** What a receiving driver does with the wire headers (subscription.ts decodeHeaders). */
function received(wire: Headers): Headers {
  const out: Headers = {};
  for (const [name, value] of Object.entries(wire)) {
    if (name === PAYQ_WIRE_HEADER && unpackPayqHeader(value, out)) continue;
    out[name] = value;
  }
  return out;
}

describe('the compact payq header', () => {
  const scenario = loadScenario('checkout');
  const events = [...new EventGenerator({ scenario, seed: 5, payments: 50, lifecycle: true })];
  const ctx = { binding: 'kafka' as const, sourcePrefix: '/payq/checkout', runId: 'run-1' };

  it('carries every payq field in one header and gives back the same headers', () => {
    for (const [i, event] of events.entries()) {
      const timing = { publishedUs: String(1_700_000_000_000_000 + i), startUs: '1699999999000000', ...(i % 2 ? { intendedUs: '1700000000000001' } : {}) };
      const headers = encodeHeaders({ ...event, ...(i % 3 === 0 ? { parentId: `evt-${i}`, siblings: 2 } : {}) }, ctx, timing);
      const wire = packPayqHeaders(headers);
      expect(Object.keys(wire).filter((k) => k.startsWith('payq'))).toEqual([PAYQ_WIRE_HEADER]);
      expect(Object.keys(wire).length).toBeLessThan(Object.keys(headers).length);
      expect(received(wire)).toEqual(headers);
    }
  });

  it('escapes ; and % in values', () => {
    const headers = { [PayqHeader.runId]: 'a;b%3B%c=d', [PayqHeader.parentId]: ';;%%', other: 'x;y' };
    const wire = packPayqHeaders(headers);
    expect(wire['other']).toBe('x;y');
    expect(received(wire)).toEqual(headers);
  });

  it('leaves headers without payq fields, and a foreign payq header, as they are', () => {
    const plain = { ce_id: '1', traceparent: 't' };
    expect(packPayqHeaders(plain)).toBe(plain);
    const foreign = { payq: 'hello', [PayqHeader.runId]: 'r' };
    expect(packPayqHeaders(foreign)).toBe(foreign);
    expect(received({ payq: 'hello world', x: '1' })).toEqual({ payq: 'hello world', x: '1' });
    expect(received({ payq: 'zz=1;yy=2' })).toEqual({ payq: 'zz=1;yy=2' });
  });

  it('skips unknown fields, and a header of its own wins over the packed field', () => {
    expect(received({ payq: 'p=1;zz=9;r=run', [PayqHeader.runId]: 'own' })).toEqual({ [PayqHeader.publishedUs]: '1', [PayqHeader.runId]: 'own' });
    expect(received({ [PayqHeader.runId]: 'own', payq: 'r=run;p=1' })).toEqual({ [PayqHeader.runId]: 'own', [PayqHeader.publishedUs]: '1' });
  });

  it('decodes to the same event as the separate headers of older payq messages', () => {
    for (const event of events.slice(0, 10)) {
      const headers = encodeHeaders(event, ctx, { publishedUs: '1700000000000000', startUs: '1699999999000000' });
      const value = Buffer.from(event.body, 'utf8');
      expect(decodeEvent(value, received(packPayqHeaders(headers)), event.paymentId)).toEqual(decodeEvent(value, headers, event.paymentId));
    }
  });
});
