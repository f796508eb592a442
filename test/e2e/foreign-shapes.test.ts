/**
 * Foreign shapes on a real Kafka (issue 12, item 3): events written by another producer with a
 * plain client (kafkajs) — CloudEvents structured mode, binary mode with another SDK's headers,
 * a body that is not JSON — are traced without flags; a payment whose id sits in a different
 * field on each topic is correlated with a per-destination `--correlate`.
 * The topics are created beforehand with kafkajs's admin, as a platform team would.
 */
import { Kafka, logLevel, type Producer } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';

const up = await brokerAvailable(KAFKA_URL);
const kafka = new Kafka({ clientId: 'another-producer', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
const created: string[] = [];
let producer: Producer | undefined;

async function createTopics(...names: string[]): Promise<void> {
  const admin = kafka.admin();
  await admin.connect();
  try {
    // Each with its .dlq, which trace also reads: nothing is left for trace to create.
    await admin.createTopics({ waitForLeaders: true, topics: names.flatMap((topic) => [{ topic, numPartitions: 3 }, { topic: `${topic}.dlq`, numPartitions: 1 }]) });
  } finally {
    await admin.disconnect();
  }
  created.push(...names);
}

beforeAll(async () => {
  if (!up) return;
  producer = kafka.producer();
  await producer.connect();
});

afterAll(async () => {
  await producer?.disconnect();
  if (created.length > 0) await deleteDestinations(KAFKA_URL, created);
});

const T1 = '2026-02-03T10:00:00.000Z';
const T2 = '2026-02-03T10:00:01.250Z';

function structured(type: string, id: string, subject: string, time: string, data: object) {
  return {
    // Keyed by the order, as a producer keeps one order's events in one partition (in order).
    key: subject,
    headers: { 'content-type': 'application/cloudevents+json; charset=UTF-8' },
    value: JSON.stringify({ specversion: '1.0', type, source: '/shop/checkout', id, subject, time, datacontenttype: 'application/json', data }),
  };
}

describe.skipIf(!up)('payq trace on Kafka: events payq did not write', () => {
  it('traces CloudEvents structured and binary mode without flags, and counts a body that is not JSON', async () => {
    const topic = uniqueName('cloudevents');
    await createTopics(topic);
    const tracer = startCli([
      'trace', '--broker', KAFKA_URL, '--topic', topic, '--expect', 'shop.order.placed,shop.payment.captured',
      '--payment', 'ord-1', '--idle-timeout', '3s', '--json', '-v',
    ]);
    await tracer.waitForStderr('trace: watching');
    await producer!.send({
      topic,
      messages: [
        structured('shop.order.placed', 'e1', 'ord-1', T1, { order_id: 1, amount: 1200 }),
        structured('shop.order.placed', 'e2', 'ord-2', T1, { order_id: 2, amount: 300 }),
        structured('shop.payment.captured', 'e3', 'ord-1', T2, { order_id: 1 }),
        // Binary mode as another SDK writes it: attributes in ce_* headers, the data as the body.
        { key: 'ord-3', headers: { ce_specversion: '1.0', ce_type: 'shop.order.placed', ce_id: 'e4', ce_source: '/shop', ce_subject: 'ord-3', ce_time: T1, 'content-type': 'application/json' }, value: '{"order_id":3}' },
        { key: 'ord-3', headers: { ce_specversion: '1.0', ce_type: 'shop.payment.captured', ce_id: 'e5', ce_source: '/shop', ce_subject: 'ord-3', ce_time: T2 }, value: '{"order_id":3}' },
        { key: 'x', value: 'order placed: 4 (a legacy line, not JSON)' },
      ],
    });
    const code = await tracer.exited;
    expect(code, tracer.stderr()).toBe(4);
    const r = JSON.parse(tracer.stdout());
    expect(r.events).toMatchObject({ seen: 5, undecodable: 1, duplicates: 0 });
    expect(r.undecodable_samples).toEqual([`${topic}: the body is not JSON`]);
    expect(r.payments.seen).toBe(3);
    expect(r.expectation).toMatchObject({ passed: 2, failed: 1 });
    expect(r.expectation.failures.map((f: { payment_id: string }) => f.payment_id)).toEqual(['ord-2']);
    expect(r.timeline.map((t: { type: string; event_id: string; occurred_at: string }) => [t.type, t.event_id, t.occurred_at])).toEqual([
      ['shop.order.placed', 'e1', T1],
      ['shop.payment.captured', 'e3', T2],
    ]);
    expect(tracer.stderr()).toMatch(/could not be read as events \(left where they are\): .*the body is not JSON/);

    // consume shows the same messages, the one that is not JSON as a problem line (never dropped).
    const c = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--idle-timeout', '3s']);
    expect(c.code, c.stderr).toBe(0);
    const lines = c.stdout.trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(6);
    expect(lines.filter((l) => l.problem !== undefined)).toEqual([
      { destination: topic, problem: 'the body is not JSON', raw: 'order placed: 4 (a legacy line, not JSON)', encoding: 'utf8' },
    ]);
  });

  it('correlates one payment across topics whose id field differs (--correlate per destination)', async () => {
    const orders = uniqueName('orders');
    const payments = uniqueName('payments');
    await createTopics(orders, payments);
    const tracer = startCli([
      'trace', '--broker', KAFKA_URL, '--topic', orders, '--topic', payments,
      '--type-field', 'kind', '--correlate', `${orders}=data.order_id,${payments}=data.order.id`, '--time-field', 'data.at',
      '--expect', 'order_placed,payment_captured', '--payment', 'o-1', '--idle-timeout', '3s', '--json', '-v',
    ]);
    await tracer.waitForStderr('trace: watching');
    await producer!.send({
      topic: orders,
      messages: [
        { value: JSON.stringify({ kind: 'order_placed', data: { order_id: 'o-1', at: T1 } }) },
        { value: JSON.stringify({ kind: 'order_placed', data: { order_id: 'o-2', at: T1 } }) },
      ],
    });
    await producer!.send({
      topic: payments,
      // The order_id here is another order's: only the path named for this topic counts.
      messages: [{ value: JSON.stringify({ kind: 'payment_captured', data: { order: { id: 'o-1' }, order_id: 'o-2', at: T2 } }) }],
    });
    const code = await tracer.exited;
    expect(code, tracer.stderr()).toBe(4);
    const r = JSON.parse(tracer.stdout());
    expect(r.events).toMatchObject({ seen: 3, undecodable: 0 });
    expect(r.payments.seen).toBe(2);
    expect(r.expectation).toMatchObject({ passed: 1, failed: 1 });
    expect(r.expectation.failures[0]).toMatchObject({ payment_id: 'o-2', last_type: 'order_placed' });
    // Two topics: trace may see them in either order.
    expect(r.timeline.map((t: { type: string; destination: string; occurred_at: string }) => [t.type, t.destination, t.occurred_at]).sort()).toEqual([
      ['order_placed', orders, T1],
      ['payment_captured', payments, T2],
    ]);
  });
});
