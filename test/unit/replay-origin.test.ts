import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { dlqBase, inspectDeadLetter, isDeadLetterHeader, parkedHeaders, ReplayHeader, replayHeaders } from '../../src/core/replay-origin.js';
import { filterMismatch, parseFilters, parseTime } from '../../src/core/replay-select.js';
import { PayqHeader } from '../../src/events/headers.js';

const DIR = 'fixtures/dlq';
const fixtures = readdirSync(DIR)
  .filter((f) => f.endsWith('.json'))
  .map((file) => {
    const f = JSON.parse(readFileSync(`${DIR}/${file}`, 'utf8').replaceAll('{{origin}}', 'shop.orders')) as {
      headers: Record<string, string>;
      expect: { outcome: string; origin_from?: string };
    };
    return { file, ...f };
  });

describe('inspectDeadLetter on the fixtures', () => {
  it('has a fixture for every header convention and every bad input', () => {
    const from = new Set(fixtures.map((f) => f.expect.origin_from).filter(Boolean));
    expect([...from].sort()).toEqual(['__connect.errors.topic', 'kafka_dlt-original-topic', 'payq-original-destination', 'x-death', 'x-first-death-queue']);
    expect(fixtures.filter((f) => f.file.startsWith('bad-')).map((f) => f.file).sort()).toEqual([
      'bad-5mb-body.json',
      'bad-invalid-utf8.json',
      'bad-missing-headers.json',
      'bad-not-json.json',
      'bad-unknown-destination.json',
    ]);
  });

  for (const f of fixtures.filter((x) => x.expect.origin_from !== undefined)) {
    it(`${f.file}: origin from ${f.expect.origin_from}`, () => {
      const info = inspectDeadLetter(f.headers, 'shop.orders.dlq');
      expect(info.origin).toBe('shop.orders');
      expect(info.via === undefined ? undefined : { payq: PayqHeader.originalDestination, 'x-death': 'x-death', 'x-first-death-queue': 'x-first-death-queue', 'kafka-connect': '__connect.errors.topic', spring: 'kafka_dlt-original-topic' }[info.via as string]).toBe(f.expect.origin_from);
      expect(info.reason).not.toBe('unknown');
    });
  }

  it('reads each convention’s reason, time and source position', () => {
    const byFile = Object.fromEntries(fixtures.map((f) => [f.file, inspectDeadLetter(f.headers, 'shop.orders.dlq')]));
    expect(byFile['payq-worker-kafka.json']).toMatchObject({ reason: 'permanent-failure', failedAt: '2025-01-15T10:21:03.130Z', replayCount: 0 });
    expect(byFile['rabbitmq-x-death.json']).toMatchObject({ reason: 'rejected', failedAt: '2025-01-15T10:22:41.000Z' });
    expect(byFile['rabbitmq-first-death-only.json']).toMatchObject({ reason: 'expired', failedAt: undefined });
    expect(byFile['kafka-connect.json']).toMatchObject({ reason: 'org.apache.kafka.connect.errors.DataException', originPartition: '0', originOffset: '41' });
    expect(byFile['spring-dlt.json']).toMatchObject({ reason: 'org.springframework.kafka.listener.ListenerExecutionFailedException' });
    expect(byFile['over-max-replays.json']).toMatchObject({ replayCount: 3 });
    expect(byFile['bad-missing-headers.json']).toMatchObject({ origin: undefined, via: undefined, reason: 'unknown' });
  });
});

describe('inspectDeadLetter precedence', () => {
  it('payq beats x-death, which beats the first-death header, Kafka Connect and Spring', () => {
    const all = {
      [PayqHeader.originalDestination]: 'a',
      'x-death': JSON.stringify([{ queue: 'b', reason: 'rejected' }]),
      'x-first-death-queue': 'c',
      '__connect.errors.topic': 'd',
      'kafka_dlt-original-topic': 'e',
    };
    expect(inspectDeadLetter(all, 'z.dlq').origin).toBe('a');
    const { [PayqHeader.originalDestination]: _a, ...noPayq } = all;
    expect(inspectDeadLetter(noPayq, 'z.dlq')).toMatchObject({ origin: 'b', via: 'x-death' });
    const { 'x-death': _b, ...noDeath } = noPayq;
    expect(inspectDeadLetter(noDeath, 'z.dlq')).toMatchObject({ origin: 'c', via: 'x-first-death-queue' });
    const { 'x-first-death-queue': _c, ...noFirst } = noDeath;
    expect(inspectDeadLetter(noFirst, 'z.dlq')).toMatchObject({ origin: 'd', via: 'kafka-connect' });
    const { '__connect.errors.topic': _d, ...onlySpring } = noFirst;
    expect(inspectDeadLetter(onlySpring, 'z.dlq')).toMatchObject({ origin: 'e', via: 'spring' });
    expect(inspectDeadLetter(all, 'z.dlq', 'forced')).toMatchObject({ origin: 'forced', via: 'to' });
  });

  it('takes the newest x-death entry that is not the DLQ itself, and never the exchange', () => {
    const deaths = [
      { queue: 'orders.dlq', reason: 'expired', exchange: 'payq.dlx' },
      { queue: 'orders', reason: 'rejected', exchange: 'shop' },
    ];
    expect(inspectDeadLetter({ 'x-death': JSON.stringify(deaths) }, 'orders.dlq')).toMatchObject({ origin: 'orders', reason: 'rejected' });
    expect(inspectDeadLetter({ 'x-first-death-queue': 'orders.dlq', 'x-first-death-exchange': 'shop' }, 'orders.dlq').origin).toBeUndefined();
  });

  it('ignores garbage x-death and replay counts', () => {
    expect(inspectDeadLetter({ 'x-death': 'not json' }, 'q.dlq').origin).toBeUndefined();
    expect(inspectDeadLetter({ [PayqHeader.replayCount]: 'lots' }, 'q.dlq').replayCount).toBe(0);
    expect(inspectDeadLetter({ [PayqHeader.originalDestination]: '   ' }, 'q.dlq').origin).toBeUndefined();
  });
});

describe('headers of a replayed and a parked message', () => {
  it('drop every convention’s dead-letter headers, keep the event’s, count the replay', () => {
    const f = fixtures.find((x) => x.file === 'payq-worker-rabbitmq.json')!;
    const out = replayHeaders({ ...f.headers, [ReplayHeader.leftBy]: 'run1' }, 0, 1_700_000_000_000_000);
    expect(out[PayqHeader.replayCount]).toBe('1');
    expect(out['cloudEvents_id']).toBe(f.headers['cloudEvents_id']);
    expect(out['traceparent']).toBe(f.headers['traceparent']);
    expect(out[PayqHeader.startUs]).toBe(f.headers[PayqHeader.startUs]);
    expect(out[PayqHeader.publishedUs]).toBe('1700000000000000');
    for (const name of Object.keys(out)) expect(isDeadLetterHeader(name), name).toBe(false);
    for (const name of [PayqHeader.dlqReason, PayqHeader.originalDestination, 'x-death', 'x-first-death-queue', ReplayHeader.leftBy]) expect(out[name]).toBeUndefined();
    const connect = replayHeaders(fixtures.find((x) => x.file === 'kafka-connect.json')!.headers, 2, 0);
    expect(Object.keys(connect)).toEqual([PayqHeader.replayCount]);
    expect(connect[PayqHeader.replayCount]).toBe('3');
    expect(Object.keys(replayHeaders(fixtures.find((x) => x.file === 'spring-dlt.json')!.headers, 0, 0))).toEqual([PayqHeader.replayCount]);
  });

  it('a parked message keeps its history and says why', () => {
    const parked = parkedHeaders({ a: '1', [PayqHeader.dlqReason]: 'x', [ReplayHeader.leftBy]: 'r' }, 'replayed 3 times');
    expect(parked).toEqual({ a: '1', [PayqHeader.dlqReason]: 'x', [ReplayHeader.parkedReason]: 'replayed 3 times' });
    expect(dlqBase('payments.dlq')).toBe('payments');
    expect(dlqBase('orders-dead')).toBe('orders-dead');
    expect(dlqBase('.dlq')).toBe('.dlq');
  });
});

describe('--filter, --since, --until', () => {
  const now = Date.parse('2025-01-15T12:00:00Z');
  const m = { type: 'payment_authorized', reason: 'permanent-failure', paymentId: 'pay_1', origin: 'o', timeMs: Date.parse('2025-01-15T11:00:00Z') };

  it('parses and matches every key', () => {
    expect(filterMismatch(parseFilters([]), m)).toBeUndefined();
    expect(filterMismatch(parseFilters(['type=order_placed,payment_authorized']), m)).toBeUndefined();
    expect(filterMismatch(parseFilters(['type=order_placed']), m)).toBe('type payment_authorized');
    expect(filterMismatch(parseFilters(['reason=^perm']), m)).toBeUndefined();
    expect(filterMismatch(parseFilters(['reason=^retries']), m)).toBe('reason permanent-failure');
    expect(filterMismatch(parseFilters(['payment=pay_2']), m)).toBe('payment pay_1');
    expect(filterMismatch(parseFilters(['origin=o', 'payment=pay_1']), m)).toBeUndefined();
    expect(filterMismatch(parseFilters([], { since: '2h' }, now), m)).toBeUndefined();
    expect(filterMismatch(parseFilters([], { since: '30m' }, now), m)).toBe('before --since');
    expect(filterMismatch(parseFilters([], { until: '2025-01-15T11:00:00Z' }, now), m)).toBe('not before --until');
    expect(filterMismatch(parseFilters([], { since: '2025-01-15' }, now), { ...m, timeMs: undefined })).toBe('no time');
  });

  it('refuses what it cannot read, naming it', () => {
    expect(() => parseFilters(['colour=red'])).toThrow(/unknown key 'colour'/);
    expect(() => parseFilters(['type='])).toThrow(/no value/);
    expect(() => parseFilters(['reason=('])).toThrow(/not a regular expression/);
    expect(() => parseFilters(['type=a', 'type=b'])).toThrow(/given twice/);
    expect(() => parseTime('yesterday', '--since', now)).toThrow(/--since 'yesterday'/);
    expect(() => parseFilters([], { since: '1h', until: '2h' }, now)).toThrow(/before --until/);
    expect(parseTime('90m', '--since', now)).toBe(now - 90 * 60_000);
  });
});
