/**
 * `payq trace` against the real brokers: a lifecycle stream produced by `payq produce` is
 * accounted for payment by payment; events in the seed's plain shape (no payq headers) are traced
 * by body fields.
 */
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { EventGenerator } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { declareLayout } from '../helpers/layout.js';

const PAYMENTS = 3000;
const SEED = 77;

function expectedClasses() {
  const c = { completed: 0, declined: 0, refunded: 0, 'dead-lettered': 0 };
  for (const e of new EventGenerator({ scenario: loadScenario('checkout'), seed: SEED, payments: PAYMENTS, lifecycle: true })) {
    if (e.type === 'order_completed') c.completed++;
    if (e.type === 'payment_declined') c.declined++;
    if (e.type === 'refund_completed') c.refunded++;
  }
  c.completed -= c.refunded;
  return c;
}

for (const [name, url] of [
  ['Kafka', KAFKA_URL],
  ['RabbitMQ', AMQP_URL],
] as const) {
  describe(`payq trace on ${name}`, async () => {
    const up = await brokerAvailable(url);

    it.skipIf(!up)(`accounts for each of ${PAYMENTS} payments of a lifecycle stream exactly once, in order`, async () => {
      const topic = uniqueName('trace');
      // The layout first (as produce would create it): trace only reads, and waits for what is missing.
      await declareLayout(url, [topic]);
      const tracer = startCli(['trace', '--broker', url, '--topic', topic, '--scenario', 'checkout', '--idle-timeout', '5s', '--json', '-v']);
      await tracer.waitForStderr('trace: watching');
      const p = await runCli(['produce', '--broker', url, '--topic', topic, '--lifecycle', '--count', String(PAYMENTS), '--seed', String(SEED), '--json']);
      expect(p.code, p.stderr).toBe(0);
      const code = await tracer.exited;
      expect(code, tracer.stderr()).toBe(0);
      const r = JSON.parse(tracer.stdout());
      expect(r.events.seen).toBe(JSON.parse(p.stdout).acked);
      expect(r.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, in_flight: 0, stuck: 0 });
      expect(r.payments.by_class).toEqual(expectedClasses());
      expect(r.events).toMatchObject({ duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0 });
      expect(Object.keys(r.latency.hops)).toEqual(expect.arrayContaining(['payment-service', 'capture-service', 'fulfilment-service']));
      await deleteDestinations(url, [topic]);
    });

    it.skipIf(!up)("follows events in the seed's plain shape by body fields, and --expect fails the ones that fall short", async () => {
      const topic = uniqueName('plain');
      await declareLayout(url, [topic]);
      const tracer = startCli([
        'trace', '--broker', url, '--topic', topic, '--type-field', 'event', '--correlate', 'data.order_id',
        '--expect', 'order_placed,payment_captured', '--idle-timeout', '3s', '--json', '-v',
      ]);
      await tracer.waitForStderr('trace: watching');
      // The seed's own producer code: a JSON body and nothing else, no headers.
      const bodies = [
        { event: 'order_placed', data: { order_id: 123, user_id: 456 } },
        { event: 'order_placed', data: { order_id: 124, user_id: 457 } },
        { event: 'payment_captured', data: { order_id: 123, user_id: 456 } },
      ].map((b) => Buffer.from(JSON.stringify(b)));
      if (name === 'Kafka') {
        const producer = new Kafka({ clientId: 'seed-producer', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING }).producer();
        await producer.connect();
        await producer.send({ topic, messages: bodies.map((value) => ({ value })) });
        await producer.disconnect();
      } else {
        // A tap sees what goes through the exchange (the routing payq documents), not messages
        // sent straight to a queue by the default exchange.
        const conn = await amqplib.connect(AMQP_URL);
        const ch = await conn.createConfirmChannel();
        for (const b of bodies) ch.publish('payq', `${topic}.${JSON.parse(b.toString()).event}.x`, b);
        await ch.waitForConfirms();
        await conn.close();
      }
      const code = await tracer.exited;
      expect(code, tracer.stderr()).toBe(4);
      const r = JSON.parse(tracer.stdout());
      expect(r.events.seen).toBe(3);
      expect(r.expectation).toMatchObject({ passed: 1, failed: 1 });
      expect(r.expectation.failures[0]).toMatchObject({ payment_id: '124', last_type: 'order_placed' });
      expect(tracer.stderr()).toMatch(/payq: error: 1 of 2 payments did not meet --expect order_placed,payment_captured/);
      await deleteDestinations(url, [topic]);
    });
  });
}
