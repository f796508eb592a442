/**
 * `payq replay-dlq` (the real CLI) on Kafka and RabbitMQ with messages payq did not write:
 * - the fixtures of every header convention go back to their origin; each bad one gets one warning
 *   line, stays in the DLQ (exit 4) and is still there, once, on the next run;
 * - a message RabbitMQ itself dead-lettered through a dead-letter exchange (no payq headers), and a
 *   Kafka record with Kafka Connect's error headers, written by the plain client libraries, are
 *   replayed to their origin;
 * - usage and topology errors: one line, the documented exit code.
 */
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { readdirSync, readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, Driver, Headers, OutgoingMessage } from '../../src/drivers/types.js';
import { PayqHeader } from '../../src/events/headers.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { createTopicsAndWait } from '../helpers/kafka.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { readUntilQuiet } from '../helpers/read.js';

interface DlqFixture {
  file: string;
  expect: { outcome: string; problem?: string };
  key: string;
  type: string;
  headers: Headers;
  body?: unknown;
  body_base64?: string;
  body_bytes?: number;
  message: OutgoingMessage;
}

/** fixtures/dlq/*.json as messages (format: fixtures/dlq/README.md). */
function loadFixtures(origin: string): DlqFixture[] {
  const dir = 'fixtures/dlq';
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const f = { file, ...(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8').replaceAll('{{origin}}', origin)) as Omit<DlqFixture, 'file' | 'message'>) };
      let value: Buffer;
      if (f.body_base64 !== undefined) value = Buffer.from(f.body_base64, 'base64');
      else if (typeof f.body === 'string') value = Buffer.from(f.body, 'utf8');
      else if (f.body_bytes !== undefined) {
        const base = JSON.stringify({ ...(f.body as object), padding: '' }).length;
        value = Buffer.from(JSON.stringify({ ...(f.body as object), padding: 'x'.repeat(f.body_bytes - base) }), 'utf8');
      } else value = Buffer.from(JSON.stringify(f.body), 'utf8');
      return { ...f, message: { key: f.key, type: f.type, value, headers: f.headers } };
    });
}

/** What `destination` holds for the group `reader` (ends 1.5 s after the last message). */
function readAll(driver: Driver, destination: string, reader: string): Promise<Delivery[]> {
  return readUntilQuiet(driver, destination, reader, 1500, 500);
}

const warnings = (stderr: string) => stderr.split('\n').filter((l) => l.startsWith('warning:'));

describe.concurrent('replay-dlq on the fixtures', () => {
  for (const [name, url] of [
    ['Kafka', KAFKA_URL],
    ['RabbitMQ', AMQP_URL],
  ] as const) {
    it(`${name}: conventions replayed, the loop parked, each bad one one line and still in the DLQ`, async () => {
      if (!(await brokerAvailable(url))) return;
      const origin = uniqueName('fixtures');
      const group = `${origin}.replay`;
      const readers = [`${origin}.r1`, `${origin}.r2`, `${origin}.r3`];
      // A default Kafka broker refuses a 5 MiB message (message.max.bytes 1 MiB): it cannot be in a Kafka DLQ.
      const fixtures = loadFixtures(origin).filter((f) => name !== 'Kafka' || f.body_bytes === undefined);
      const bad = fixtures.filter((f) => f.file.startsWith('bad-'));
      const replayed = fixtures.filter((f) => f.expect.outcome === 'replayed');
      const driver = await createDriver(url);
      await driver.connect();
      try {
        await driver.declare([{ name: origin, partitions: 2, deadLetter: true }]);
        await driver.send(`${origin}.dlq`, fixtures.map((f) => f.message));
        const args = ['replay-dlq', '--broker', url, '--dlq', `${origin}.dlq`, '--group', group, '--idle-timeout', '2s'];

        const run1 = await runCli(args);
        expect(run1.code, run1.stderr).toBe(4);
        const lines = warnings(run1.stderr);
        expect(lines, run1.stderr).toHaveLength(bad.length);
        for (const f of bad) expect(lines.filter((l) => l.includes(f.expect.problem!) && l.endsWith('left in the DLQ')), f.file).toHaveLength(1);
        expect(run1.stderr).toMatch(new RegExp(`payq: error: ${bad.length} messages were left in the DLQ`));
        expect(run1.stderr).not.toMatch(/\n\s+at /); // no stack trace

        // Only the bad ones are left, each once, and a second run leaves them again.
        const dry = await runCli([...args, '--dry-run', '--json']);
        expect(dry.code, dry.stderr).toBe(0);
        const listed = JSON.parse(dry.stdout) as { seen: number; messages: Array<{ key: string; outcome: string }> };
        expect(listed.messages.map((m) => m.key).sort()).toEqual(bad.map((f) => f.key).sort());
        const run2 = await runCli(args);
        expect(run2.code).toBe(4);
        expect(warnings(run2.stderr)).toHaveLength(bad.length);

        const back = await readAll(driver, origin, readers[0]!);
        expect(back.map((d) => d.key).sort()).toEqual(replayed.map((f) => f.key).sort());
        for (const d of back) {
          const f = replayed.find((x) => x.key === d.key)!;
          expect(d.value.equals(f.message.value), f.file).toBe(true);
          expect(d.headers[PayqHeader.replayCount], f.file).toBe('1');
          expect(Object.keys(d.headers).filter((h) => /^(x-death|x-first-death|__connect\.errors\.|kafka_dlt-|payq-dlq-|payq-original)/.test(h)), f.file).toEqual([]);
        }
        const parked = await readAll(driver, `${origin}.parked`, readers[1]!);
        expect(parked.map((d) => d.key)).toEqual(['pay_9d0e1f2a3b4c5d6e']);

        // --park-unresolved empties the DLQ into <origin>.parked.
        const run3 = await runCli([...args, '--park-unresolved']);
        expect(run3.code, run3.stderr).toBe(0);
        expect(warnings(run3.stderr).every((l) => l.endsWith(`parked in ${origin}.parked`))).toBe(true);
        // A new Kafka group reads the whole topic; the RabbitMQ queue gave its first message to the reader above.
        const parkedNow = await readAll(driver, `${origin}.parked`, readers[2]!);
        expect(parkedNow.length).toBe((name === 'Kafka' ? 1 : 0) + bad.length);
        const empty = await runCli([...args, '--dry-run', '--json']);
        expect(JSON.parse(empty.stdout)).toMatchObject({ seen: 0 });
      } finally {
        await driver.close();
        await deleteDestinations(url, [origin], { groups: [group, ...readers] });
      }
    });
  }
});

describe.concurrent('foreign dead letters go back to their origin', () => {
  it('RabbitMQ: a message the broker rejected into a dead-letter exchange, no payq headers', async () => {
    if (!(await brokerAvailable(AMQP_URL))) return;
    const queue = uniqueName('foreign');
    const dlx = `${queue}.user-dlx`;
    const body = Buffer.from(JSON.stringify({ event: 'order_placed', data: { order_id: 123, user_id: 456 } }));
    const conn = await amqplib.connect(AMQP_URL);
    const ch = await conn.createChannel();
    try {
      // The user's own topology: a queue dead-lettering through its own exchange to its own DLQ.
      await ch.assertExchange(dlx, 'fanout', { durable: false, autoDelete: false });
      await ch.assertQueue(`${queue}.dlq`, { durable: true });
      await ch.bindQueue(`${queue}.dlq`, dlx, '');
      await ch.assertQueue(queue, { durable: true, arguments: { 'x-dead-letter-exchange': dlx } });
      ch.sendToQueue(queue, body, { contentType: 'application/json', messageId: 'm-123', persistent: true });
      let msg: amqplib.GetMessage | false = false;
      for (let i = 0; i < 50 && !msg; i++) {
        msg = await ch.get(queue, { noAck: false });
        if (!msg) await new Promise((r) => setTimeout(r, 50));
      }
      expect(msg).not.toBe(false);
      ch.reject(msg as amqplib.GetMessage, false);
      for (let i = 0; i < 50 && (await ch.checkQueue(`${queue}.dlq`)).messageCount === 0; i++) await new Promise((r) => setTimeout(r, 50));

      const run = await runCli(['replay-dlq', '--broker', AMQP_URL, '--dlq', `${queue}.dlq`, '--idle-timeout', '1s', '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({ replayed: 1, left: 0, rows: [{ origin: queue, reason: 'rejected', type: 'order_placed', outcome: 'replayed', count: 1 }] });

      let back: amqplib.GetMessage | false = false;
      for (let i = 0; i < 50 && !back; i++) {
        back = await ch.get(queue, { noAck: true });
        if (!back) await new Promise((r) => setTimeout(r, 50));
      }
      expect(back).not.toBe(false);
      const got = back as amqplib.GetMessage;
      expect(got.content.equals(body)).toBe(true);
      const headers = got.properties.headers ?? {};
      expect(headers[PayqHeader.replayCount]).toBe('1');
      expect(headers['x-death']).toBeUndefined();
      expect(headers['x-first-death-queue']).toBeUndefined();
      expect((await ch.checkQueue(`${queue}.dlq`)).messageCount).toBe(0);
    } finally {
      await ch.deleteExchange(dlx).catch(() => undefined);
      await conn.close().catch(() => undefined);
      await deleteDestinations(AMQP_URL, [queue]);
    }
  });

  it('Kafka: a record with Kafka Connect error headers, written by a plain client', async () => {
    if (!(await brokerAvailable(KAFKA_URL))) return;
    const topic = uniqueName('connect');
    const dlq = `${topic}.dlq`;
    const group = `${topic}.replay`;
    const kafka = new Kafka({ clientId: 'payq-test', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    const producer = kafka.producer();
    const value = Buffer.from(JSON.stringify({ event: 'order_placed', data: { order_id: 7, user_id: 8 } }));
    const driver = await createDriver(KAFKA_URL);
    try {
      await admin.connect();
      await createTopicsAndWait(admin, [{ topic, numPartitions: 1 }, { topic: dlq, numPartitions: 1 }]);
      await producer.connect();
      await producer.send({
        topic: dlq,
        acks: -1,
        messages: [
          {
            key: 'order-7',
            value,
            headers: {
              '__connect.errors.topic': topic,
              '__connect.errors.partition': '0',
              '__connect.errors.offset': '17',
              '__connect.errors.connector.name': 'orders-sink',
              '__connect.errors.task.id': '0',
              '__connect.errors.stage': 'VALUE_CONVERTER',
              '__connect.errors.exception.class.name': 'org.apache.kafka.connect.errors.DataException',
              '__connect.errors.exception.message': 'Converting byte[] to Kafka Connect data failed',
              'trace-id': 'abc123',
            },
          },
        ],
      });
      const run = await runCli(['replay-dlq', '--broker', KAFKA_URL, '--dlq', dlq, '--group', group, '--idle-timeout', '2s', '--json']);
      expect(run.code, run.stderr).toBe(0);
      expect(JSON.parse(run.stdout)).toMatchObject({
        replayed: 1,
        left: 0,
        rows: [{ origin: topic, reason: 'org.apache.kafka.connect.errors.DataException', type: 'order_placed', outcome: 'replayed', count: 1 }],
      });
      await driver.connect();
      const back = await readAll(driver, topic, `${topic}.reader`);
      expect(back).toHaveLength(1);
      expect(back[0]!.key).toBe('order-7');
      expect(back[0]!.value.equals(value)).toBe(true);
      expect(back[0]!.headers).toEqual({ 'trace-id': 'abc123', [PayqHeader.replayCount]: '1' });
    } finally {
      await producer.disconnect().catch(() => undefined);
      await admin.disconnect().catch(() => undefined);
      await driver.close();
      await deleteDestinations(KAFKA_URL, [topic], { groups: [group, `${topic}.reader`] });
    }
  });
});

describe('replay-dlq usage and topology errors', () => {
  it('one line and the documented exit code', async () => {
    const memory = await runCli(['replay-dlq', '--broker', 'memory://']);
    expect(memory.code).toBe(2);
    const filter = await runCli(['replay-dlq', '--broker', AMQP_URL, '--filter', 'colour=red']);
    expect(filter.code).toBe(2);
    expect(filter.stderr.trim().split('\n')).toHaveLength(1);
    expect(filter.stderr).toMatch(/--filter 'colour=red': unknown key 'colour'/);
    const since = await runCli(['replay-dlq', '--broker', AMQP_URL, '--since', 'last tuesday']);
    expect(since.code).toBe(2);
    if (!(await brokerAvailable(AMQP_URL))) return;
    const missing = await runCli(['replay-dlq', '--broker', AMQP_URL, '--dlq', uniqueName('nope')]);
    expect(missing.code).toBe(3);
    expect(missing.stderr).toMatch(/no such DLQ/);
    expect(missing.stderr.trim().split('\n')).toHaveLength(1);
    expect(missing.stderr).not.toContain('guest:guest');
  });
});
