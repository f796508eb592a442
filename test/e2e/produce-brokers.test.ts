/**
 * `payq produce` against the real brokers, checked by an independent reader: the broker's own
 * client library, not payq's driver. The expected events come from the generator with the same
 * seed, so the test knows every id and body that must arrive. Whatever happens, the topic / queue
 * (and its `.dlq`) and the reader's group are deleted afterwards.
 */
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { EventGenerator } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';

// Enough for many batches and confirm windows; the volume itself is measured by npm run bench:produce.
const COUNT = 50_000;
const SEED = 2024;

function expectedBodies(): Map<string, string> {
  const bodies = new Map<string, string>();
  for (const e of new EventGenerator({ scenario: loadScenario('checkout'), seed: SEED, payments: COUNT, lifecycle: false })) {
    bodies.set(e.id, e.body);
  }
  return bodies;
}

interface Received {
  body: string;
  headers: Record<string, string>;
  key?: string | undefined;
}

function checkAll(received: Received[], expected: Map<string, string>, prefix: 'ce_' | 'cloudEvents_'): void {
  const ids = new Set<string>();
  let badBody = 0;
  let badHeaders = 0;
  for (const r of received) {
    const id = r.headers[`${prefix}id`]!;
    ids.add(id);
    if (expected.get(id) !== r.body) badBody++;
    const event = JSON.parse(r.body);
    // On Kafka payq's own fields travel in the compact `payq` header (README "Events").
    const published = prefix === 'ce_' ? /(?:^|;)p=(\d+)(?:;|$)/.exec(r.headers['payq'] ?? '')?.[1] : r.headers['payq-published-us'];
    const ok =
      event.id === id &&
      r.headers[`${prefix}type`] === 'order_placed' &&
      r.headers[`${prefix}specversion`] === '1.0' &&
      r.headers[`${prefix}subject`] === event.payment_id &&
      r.headers[`${prefix}source`] === '/payq/checkout/producer' &&
      /^00-[0-9a-f]{32}-[0-9a-f]{16}-01$/.test(r.headers['traceparent'] ?? '') &&
      /^\d{16}$/.test(published ?? '') &&
      (r.key === undefined || r.key === event.payment_id);
    if (!ok) badHeaders++;
  }
  expect(received.length).toBe(COUNT);
  expect(ids.size).toBe(COUNT);
  expect([...expected.keys()].every((id) => ids.has(id))).toBe(true);
  expect(badBody).toBe(0);
  expect(badHeaders).toBe(0);
}

describe('payq produce on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);
  it.skipIf(!up)(`acknowledges ${COUNT} events and an independent kafkajs reader gets exactly them back`, async () => {
    const topic = uniqueName('produce');
    const readerGroup = uniqueName('reader');
    try {
      const r = await runCli(['produce', '--broker', KAFKA_URL, '--topic', topic, '--partitions', '3', '--count', String(COUNT), '--seed', String(SEED), '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ sent: COUNT, acked: COUNT, failed: 0 });

      const kafka = new Kafka({ clientId: 'payq-test-reader', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
      const consumer = kafka.consumer({ groupId: readerGroup, maxWaitTimeInMs: 200 });
      const received: Received[] = [];
      try {
        await consumer.connect();
        await consumer.subscribe({ topic, fromBeginning: true });
        const done = new Promise<void>((resolve) => {
          void consumer.run({
            eachBatch: async ({ batch }) => {
              for (const m of batch.messages) {
                const headers: Record<string, string> = {};
                for (const [k, v] of Object.entries(m.headers ?? {})) headers[k] = String(v);
                received.push({ body: m.value!.toString('utf8'), headers, key: m.key?.toString('utf8') });
              }
              if (received.length >= COUNT) resolve();
            },
          });
        });
        await Promise.race([done, new Promise((r) => setTimeout(r, 90_000))]);
      } finally {
        await consumer.disconnect();
      }
      checkAll(received, expectedBodies(), 'ce_');
    } finally {
      await deleteDestinations(KAFKA_URL, [topic], { groups: [readerGroup] });
    }
  }, 300_000);
});

describe('payq produce on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);
  it.skipIf(!up)(`acknowledges ${COUNT} events and an independent amqplib reader gets exactly them back`, async () => {
    const queue = uniqueName('produce');
    try {
      const r = await runCli(['produce', '--broker', AMQP_URL, '--topic', queue, '--count', String(COUNT), '--seed', String(SEED), '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ sent: COUNT, acked: COUNT, failed: 0 });

      const conn = await amqplib.connect(AMQP_URL);
      // A channel error (e.g. the queue missing) must fail the test, not crash the worker.
      conn.on('error', () => {});
      const received: Received[] = [];
      try {
        const ch = await conn.createChannel();
        expect((await ch.checkQueue(queue)).messageCount).toBe(COUNT);
        await ch.prefetch(2000);
        await new Promise<void>((resolve) => {
          void ch.consume(queue, (msg) => {
            if (!msg) return;
            const headers: Record<string, string> = {};
            for (const [k, v] of Object.entries(msg.properties.headers ?? {})) headers[k] = String(v);
            received.push({ body: msg.content.toString('utf8'), headers });
            ch.ack(msg);
            if (received.length >= COUNT) resolve();
          });
          setTimeout(resolve, 90_000);
        });
      } finally {
        await conn.close().catch(() => undefined);
      }
      checkAll(received, expectedBodies(), 'cloudEvents_');
    } finally {
      await deleteDestinations(AMQP_URL, [queue]);
    }
  }, 300_000);
});
