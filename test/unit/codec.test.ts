import { describe, expect, it } from 'vitest';
import { encodeHeaders, toMessage } from '../../src/events/codec.js';
import { decodeEvent, DEFAULT_DECODE } from '../../src/events/decode.js';
import { EventGenerator } from '../../src/events/generator.js';
import { CE_ATTRIBUTES, ceHeader, CONTENT_TYPE, PayqHeader, TRACEPARENT, type HeaderBinding } from '../../src/events/headers.js';
import { loadScenario } from '../../src/events/scenario.js';

const scenario = loadScenario('checkout');
const timing = { publishedUs: '1700000000000000', startUs: '1699999999000000' };

function lifecycleEvents(n: number) {
  const out = [];
  for (const e of new EventGenerator({ scenario, seed: 3, payments: n, lifecycle: true })) out.push(e);
  return out;
}

describe('codec', () => {
  it.each(['kafka', 'amqp'] as HeaderBinding[])('writes exactly the header names of headers.ts in the %s binding', (binding) => {
    const [entry, child] = [lifecycleEvents(1)[0]!, lifecycleEvents(1)[1]!];
    const ctx = { binding, sourcePrefix: '/payq/checkout', runId: 'r1' };
    const expected = [
      ...CE_ATTRIBUTES.map((a) => ceHeader(binding, a)),
      ...(binding === 'kafka' ? [CONTENT_TYPE] : []),
      TRACEPARENT,
      PayqHeader.runId,
      PayqHeader.publishedUs,
      PayqHeader.startUs,
      PayqHeader.sequence,
    ];
    expect(Object.keys(encodeHeaders(entry, ctx, timing)).sort()).toEqual([...expected].sort());
    const withParent = encodeHeaders(child, ctx, { ...timing, intendedUs: '1700000000000001' });
    expect(Object.keys(withParent).sort()).toEqual([...expected, PayqHeader.intendedUs, PayqHeader.parentId, PayqHeader.siblings].sort());
    expect(withParent[ceHeader(binding, 'id')]).toBe(child.id);
    expect(withParent[ceHeader(binding, 'subject')]).toBe(child.paymentId);
    expect(withParent[PayqHeader.sequence]).toBe(String(child.sequence));
    expect(withParent[PayqHeader.parentId]).toBe(entry.id);
    expect(withParent[TRACEPARENT]).toBe(`00-${child.traceId}-${child.spanId}-01`);
  });

  it('decodes its own events the same with and without reading the body first', () => {
    const ctx = { binding: 'kafka' as const, sourcePrefix: '/payq/checkout', runId: 'r1' };
    for (const e of lifecycleEvents(5)) {
      const m = toMessage(e, ctx, timing);
      const full = decodeEvent(m.value, m.headers, m.key);
      const quick = decodeEvent(m.value, m.headers, m.key, { ...DEFAULT_DECODE, headersFirst: true });
      expect(full.body?.['sequence']).toBe(e.sequence);
      expect(quick.body).toBeUndefined();
      expect({ ...quick, body: full.body }).toEqual(full);
      expect(full).toMatchObject({ id: e.id, type: e.type, paymentId: e.paymentId, sequence: e.sequence, runId: 'r1', problem: undefined });
    }
  });

  it('reads the body when headers lack something, even when asked to read headers first', () => {
    const body = Buffer.from('{"event":"order_placed","id":"e1","payment_id":"p1","sequence":4}');
    const e = decodeEvent(body, { ce_type: 'order_placed' }, undefined, { ...DEFAULT_DECODE, headersFirst: true });
    expect(e).toMatchObject({ id: 'e1', type: 'order_placed', paymentId: 'p1', sequence: 4, problem: undefined });
    const bad = decodeEvent(Buffer.from('not json'), { ce_type: 'order_placed' }, undefined, { ...DEFAULT_DECODE, headersFirst: true });
    expect(bad.problem).toBe('the body is not JSON');
  });
});
