/**
 * replay-dlq into a topology payq did not build (issue 12 item 4), all of it set up with plain
 * kafkajs / amqplib: a Kafka DLQ written by Kafka Connect and by Spring (their headers only, no
 * payq header), with 1 partition, replayed into an origin topic of 6; a RabbitMQ DLQ of
 * broker-style dead letters (x-death) replayed into a quorum origin queue with arguments of its
 * own. Every message goes back with its key, body and own headers; the origin keeps its partitions
 * or arguments (never redeclared), and nothing is parked or created.
 */
import { readFileSync } from 'node:fs';
import amqplib from 'amqplib';
import { Kafka, logLevel, type KafkaMessage } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { createTopicsAndWait } from '../helpers/kafka.js';

interface Fixture {
  key: string;
  headers: Record<string, string>;
  body: unknown;
}
const fixture = (file: string, origin: string): Fixture => JSON.parse(readFileSync(`fixtures/dlq/${file}`, 'utf8').replaceAll('{{origin}}', origin)) as Fixture;
const PER_CONVENTION = 6;

const kafkaUp = await brokerAvailable(KAFKA_URL);
const rabbitUp = await brokerAvailable(AMQP_URL);

describe.skipIf(!kafkaUp)('replay-dlq from a Kafka Connect / Spring DLQ into a topic with more partitions', () => {
  const kafka = new Kafka({ clientId: 'payq-test-foreign-replay', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
  const topics: string[] = [];
  const groups: string[] = [];
  afterAll(() => deleteDestinations(KAFKA_URL, topics, { groups }));

  it('puts every message back, key, body and own headers kept, by key over the 6 partitions', async () => {
    const origin = uniqueName('replay-origin');
    const dlq = `${origin}-dlt`;
    topics.push(origin, dlq);
    groups.push(`${origin}.replay`, `${origin}.check`);
    const admin = kafka.admin();
    await admin.connect();
    const producer = kafka.producer();
    try {
      await createTopicsAndWait(admin, [{ topic: origin, numPartitions: 6 }, { topic: dlq, numPartitions: 1 }]);
      const sent: Array<{ key: string; value: string; trace: string }> = [];
      await producer.connect();
      const messages = [];
      for (const file of ['kafka-connect.json', 'spring-dlt.json']) {
        const f = fixture(file, origin);
        for (let i = 0; i < PER_CONVENTION; i++) {
          const key = `${f.key}-${i % 3}`;
          const value = JSON.stringify({ ...(f.body as object), copy: `${file}-${i}` });
          const trace = `00-${file.length}${i}-trace`;
          sent.push({ key, value, trace });
          messages.push({ key, value, headers: { ...f.headers, 'x-trace': trace } });
        }
      }
      await producer.send({ topic: dlq, messages });

      const r = await runCli(['replay-dlq', '--broker', KAFKA_URL, '--dlq', dlq, '--group', `${origin}.replay`, '--idle-timeout', '3s']);
      expect(r.code, r.stderr).toBe(0);

      const back: Array<{ partition: number; message: KafkaMessage }> = [];
      const consumer = kafka.consumer({ groupId: `${origin}.check` });
      await consumer.connect();
      await consumer.subscribe({ topics: [origin], fromBeginning: true });
      await consumer.run({ eachMessage: async ({ partition, message }) => void back.push({ partition, message }) });
      for (let i = 0; i < 300 && back.length < sent.length; i++) await new Promise((res) => setTimeout(res, 100));
      await new Promise((res) => setTimeout(res, 500));
      await consumer.disconnect();

      expect(back).toHaveLength(sent.length);
      for (const s of sent) {
        const m = back.find((b) => b.message.value?.toString() === s.value);
        expect(m, s.value).toBeDefined();
        expect(m!.message.key?.toString()).toBe(s.key);
        expect(m!.message.headers?.['x-trace']?.toString()).toBe(s.trace);
      }
      // By key, not by the DLQ's one partition: each key in one partition, the keys spread out.
      const partitionsByKey = new Map<string, Set<number>>();
      for (const b of back) {
        const key = b.message.key!.toString();
        partitionsByKey.set(key, (partitionsByKey.get(key) ?? new Set()).add(b.partition));
      }
      for (const [key, parts] of partitionsByKey) expect(parts.size, key).toBe(1);
      const used = new Set(back.map((b) => b.partition));
      expect(used.size).toBeGreaterThan(1);

      const { topics: meta } = await admin.fetchTopicMetadata({ topics: [origin] });
      expect(meta[0]!.partitions).toHaveLength(6);
      const all = new Set(await admin.listTopics());
      expect(all.has(`${origin}.parked`)).toBe(false);
      expect(all.has(`${origin}.dlq`)).toBe(false);
    } finally {
      await producer.disconnect();
      await admin.disconnect();
    }
  });
});

describe.skipIf(!rabbitUp)('replay-dlq into a RabbitMQ origin queue declared with other arguments', () => {
  const queues: string[] = [];
  afterAll(() => deleteDestinations(AMQP_URL, queues));

  it('puts every message back into the quorum queue without redeclaring it; the DLQ is emptied', async () => {
    const origin = uniqueName('replay-quorum');
    const dlq = `${origin}.failed`;
    queues.push(origin, dlq);
    const originOptions = { durable: true, arguments: { 'x-queue-type': 'quorum', 'x-max-length': 500 } };
    const conn = await amqplib.connect(AMQP_URL);
    conn.on('error', () => {});
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    const f = fixture('rabbitmq-x-death.json', origin);
    try {
      await ch.assertQueue(origin, originOptions);
      await ch.assertQueue(dlq, { durable: true });
      const bodies: string[] = [];
      for (let i = 0; i < PER_CONVENTION; i++) {
        const body = JSON.stringify({ ...(f.body as object), copy: i });
        bodies.push(body);
        ch.sendToQueue(dlq, Buffer.from(body), { headers: { ...f.headers, 'x-death': JSON.parse(f.headers['x-death']!) as unknown, 'x-trace': `t${i}` }, persistent: true });
      }
      await ch.checkQueue(dlq);

      const r = await runCli(['replay-dlq', '--broker', AMQP_URL, '--dlq', dlq, '--idle-timeout', '2s']);
      expect(r.code, r.stderr).toBe(0);

      // The origin still has its own arguments (re-declaring with them succeeds only if equal).
      const check = await conn.createChannel();
      check.on('error', () => {});
      await check.assertQueue(origin, originOptions);
      await check.close();
      expect((await ch.checkQueue(dlq)).messageCount).toBe(0);
      const got: Array<{ body: string; trace: unknown }> = [];
      for (let i = 0; i < 50 && got.length < bodies.length; i++) {
        const m = await ch.get(origin, { noAck: true });
        if (m === false) await new Promise((res) => setTimeout(res, 100));
        else got.push({ body: m.content.toString(), trace: m.properties.headers?.['x-trace'] });
      }
      expect(got.map((g) => g.body).sort()).toEqual([...bodies].sort());
      for (const g of got) expect(g.trace).toBe(`t${(JSON.parse(g.body) as { copy: number }).copy}`);
    } finally {
      await conn.close().catch(() => undefined);
    }
  });
});
