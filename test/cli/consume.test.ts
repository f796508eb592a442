/**
 * `payq consume` as users run it (the built CLI, spawned): on Kafka and RabbitMQ, events written
 * by `payq produce` come back exactly; --limit, --type, --with-meta, a body that is not JSON,
 * taps that take nothing, and the refusals (memory://, a RabbitMQ tap --from-beginning).
 * Every run ends by itself (--limit / --idle-timeout); no assertion depends on timing.
 */
import amqplib from 'amqplib';
import { spawn } from 'node:child_process';
import { Kafka, logLevel } from 'kafkajs';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { createTopicsAndWait } from '../helpers/kafka.js';
import { BIN, runCli, expectOneErrorLine } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';

const lines = (stdout: string): string[] => stdout.split('\n').filter((l) => l !== '');

/** The bodies `payq produce` sends for these arguments, from its --dry-run. */
async function dryRun(args: string[]): Promise<string[]> {
  const r = await runCli(['produce', '--dry-run', ...args]);
  expect(r.code, r.stderr).toBe(0);
  return lines(r.stdout);
}

async function produce(url: string, topic: string, args: string[]): Promise<void> {
  const r = await runCli(['produce', '--broker', url, '--topic', topic, ...args, '-q']);
  expect(r.code, r.stderr).toBe(0);
}

const IDLE = ['--idle-timeout', '3s'];

describe('payq consume: usage', () => {
  it('--help explains tap vs --group and shows examples', async () => {
    const r = await runCli(['consume', '--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('--group');
    expect(r.stdout).toMatch(/TAKE\s+the\s+messages/);
    expect(r.stdout).toMatch(/tap:\s+it\s+observes\s+and\s+takes\s+nothing/);
    expect(r.stdout).toContain('payq consume --broker kafka://');
    const top = await runCli(['--help']);
    expect(top.stdout).toContain('consume');
  });

  it.each([
    ['memory://', ['--broker', 'memory://'], /memory:\/\/ lives inside one process.*use kafka:\/\/ or amqp:\/\/, or payq bench/],
    ['a missing broker', [], /no broker: pass --broker URL or set PAYQ_BROKER/],
    ['--limit 0', ['--broker', 'kafka://127.0.0.1:1', '--limit', '0'], /--limit: must be a whole number 1 or more/],
    ['--idle-timeout soon', ['--broker', 'kafka://127.0.0.1:1', '--idle-timeout', 'soon'], /--idle-timeout: must be a duration/],
    ['a bad topic name', ['--broker', 'kafka://127.0.0.1:1', '--topic', 'a b'], /--topic: must be a destination name/],
  ])('exits 2 with one line for %s', async (_name, args, pattern) => {
    const r = await runCli(['consume', ...args], { env: { PAYQ_BROKER: '' } });
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
    expect(r.stdout).toBe('');
  });
});

// Each broker's cases side by side: each has topics, queues and groups of its own.
describe.concurrent('payq consume on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);
  const topics: string[] = [];
  const groups: string[] = [];
  const kafka = new Kafka({ clientId: 'payq-test-consume', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });

  /**
   * A topic created up front (6 partitions, leaders elected), then filled by `payq produce`.
   * Created here so the test does not depend on how produce's first send to a brand-new topic
   * behaves (kafkajs retries while leaders are being elected); consume is what is tested.
   */
  async function topicWith(args: string[]): Promise<string> {
    const topic = uniqueName('consume');
    topics.push(topic);
    const admin = kafka.admin();
    await admin.connect();
    try {
      await createTopicsAndWait(admin, [{ topic, numPartitions: 6 }]);
    } finally {
      await admin.disconnect();
    }
    await produce(KAFKA_URL, topic, args);
    return topic;
  }

  const group = () => {
    const g = uniqueName('group');
    groups.push(g);
    return g;
  };

  afterAll(async () => {
    if (up) await deleteDestinations(KAFKA_URL, topics, { groups });
  });

  it.skipIf(!up)('--group --from-beginning prints exactly the 50 bodies produce sent, then a second run of the group prints none', async () => {
    const topic = await topicWith(['--count', '50', '--seed', '3']);
    const expected = await dryRun(['--count', '50', '--seed', '3']);
    const g = group();
    const r = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', g, '--from-beginning', ...IDLE, '--json']);
    expect(r.code, r.stderr).toBe(0);
    // Per-key order across 6 partitions: the same lines, not the same order.
    expect(lines(r.stdout).sort()).toEqual([...expected].sort());
    expect(r.stderr).toMatch(/consumed\s+│\s+50\b/);
    const again = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', g, '--from-beginning', ...IDLE, '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe('');
  });

  it.skipIf(!up)('a group stopped by --limit keeps its place on every partition: its next run, without --from-beginning, prints exactly the rest', async () => {
    const topic = await topicWith(['--count', '600', '--seed', '4']);
    const expected = await dryRun(['--count', '600', '--seed', '4']);
    const g = group();
    // 40 of 600 over 6 partitions: the first run stops before it reached most of them.
    const first = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', g, '--from-beginning', '--limit', '40']);
    expect(first.code, first.stderr).toBe(0);
    expect(lines(first.stdout)).toHaveLength(40);
    const rest = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', g, ...IDLE]);
    expect(rest.code, rest.stderr).toBe(0);
    expect(lines(rest.stdout)).toHaveLength(560);
    expect([...lines(first.stdout), ...lines(rest.stdout)].sort()).toEqual([...expected].sort());
  });

  it.skipIf(!up)('--limit, --type and --with-meta on a lifecycle stream', async () => {
    const args = ['--count', '30', '--seed', '5', '--lifecycle'];
    const topic = await topicWith(args);
    const expected = await dryRun(args);

    const limited = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', group(), '--from-beginning', '--limit', '10', '--json']);
    expect(limited.code, limited.stderr).toBe(0);
    expect(lines(limited.stdout)).toHaveLength(10);
    for (const line of lines(limited.stdout)) expect(expected).toContain(line);

    // A tap: it reads the history and takes nothing from anyone.
    const captured = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--type', 'payment_captured', ...IDLE, '--json']);
    expect(captured.code, captured.stderr).toBe(0);
    const wanted = expected.filter((l) => JSON.parse(l).event === 'payment_captured');
    expect(wanted.length).toBeGreaterThan(0);
    expect(wanted.length).toBeLessThan(expected.length);
    expect(lines(captured.stdout).sort()).toEqual(wanted.sort());
    expect(captured.stderr).toMatch(/filtered out\s+│\s+\d+/);

    const meta = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', group(), '--from-beginning', '--limit', '5', '--with-meta']);
    expect(meta.code, meta.stderr).toBe(0);
    const records = lines(meta.stdout).map((l) => JSON.parse(l));
    expect(records).toHaveLength(5);
    for (const m of records) {
      expect(m.destination).toBe(topic);
      expect(m.key).toBe(m.event.payment_id);
      expect(m.partition).toBeGreaterThanOrEqual(0);
      expect(m.partition).toBeLessThan(6);
      expect(m.offset).toMatch(/^\d+$/);
      expect(m.redelivered).toBe(false);
      expect(m.headers).toMatchObject({ ce_specversion: '1.0', ce_id: m.event.id, ce_type: m.event.event, ce_subject: m.event.payment_id });
      expect(expected).toContain(JSON.stringify(m.event));
    }
  });

  it.skipIf(!up)('prints a message that is not JSON as a problem line, warns, and exits 0', async () => {
    const topic = await topicWith(['--count', '3', '--seed', '9']);
    const producer = kafka.producer();
    await producer.connect();
    try {
      await producer.send({
        topic,
        messages: [
          { key: 'junk', value: 'hello, not json' },
          { key: 'bin', value: Buffer.from([0xff, 0xfe, 0x00]) },
        ],
      });
    } finally {
      await producer.disconnect();
    }
    const r = await runCli(['consume', '--broker', KAFKA_URL, '--topic', topic, '--group', group(), '--from-beginning', ...IDLE]);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout).map((l) => JSON.parse(l));
    expect(out).toHaveLength(5);
    expect(out).toContainEqual({ destination: topic, problem: 'the body is not JSON', raw: 'hello, not json', encoding: 'utf8' });
    expect(out).toContainEqual({ destination: topic, problem: 'the body is not JSON (not valid UTF-8)', raw: '//4A', encoding: 'base64' });
    expect(r.stderr).toMatch(/warning: .*the body is not JSON/);
    expect(r.stderr).toMatch(/not JSON\s+│\s+2/);
  });
});

describe.concurrent('payq consume on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);
  const queues: string[] = [];

  async function queueWith(args: string[]): Promise<string> {
    const queue = uniqueName('consume');
    queues.push(queue);
    await produce(AMQP_URL, queue, args);
    return queue;
  }

  afterAll(async () => {
    if (up) await deleteDestinations(AMQP_URL, queues);
  });

  it.skipIf(!up)('--group takes what the queue holds: exactly the 50 bodies, in order; the queue is then empty', async () => {
    const queue = await queueWith(['--count', '50', '--seed', '3']);
    const expected = await dryRun(['--count', '50', '--seed', '3']);
    const r = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'readers', ...IDLE, '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(lines(r.stdout)).toEqual(expected);
    const again = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'readers', '--idle-timeout', '1s', '--json']);
    expect(again.code, again.stderr).toBe(0);
    expect(again.stdout).toBe('');
  });

  it.skipIf(!up)('--limit 10 prints 10 and leaves the rest in the queue; --type filters', async () => {
    const args = ['--count', '20', '--seed', '5', '--lifecycle'];
    const queue = await queueWith(args);
    const expected = await dryRun(args);
    const limited = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'g', '--limit', '10', '--json']);
    expect(limited.code, limited.stderr).toBe(0);
    expect(lines(limited.stdout)).toEqual(expected.slice(0, 10));
    // What was delivered past the limit went back (nack), so the rest is all still there.
    const rest = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'g', '--type', 'payment_captured,order_completed', ...IDLE, '--json']);
    expect(rest.code, rest.stderr).toBe(0);
    const wanted = expected.slice(10).filter((l) => ['payment_captured', 'order_completed'].includes(JSON.parse(l).event));
    expect(wanted.length).toBeGreaterThan(0);
    expect(lines(rest.stdout).sort()).toEqual([...wanted].sort());
    expect(rest.stderr).toMatch(new RegExp(`consumed\\s+│\\s+${expected.length - 10}\\b`));
  });

  it.skipIf(!up)('prints a message that is not JSON as a problem line and exits 0', async () => {
    const queue = await queueWith(['--count', '2', '--seed', '9']);
    const conn = await amqplib.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      ch.sendToQueue(queue, Buffer.from('plain text, not json'), { persistent: true });
      await ch.waitForConfirms();
      await ch.close();
    } finally {
      await conn.close();
    }
    const r = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'g', '--with-meta', ...IDLE]);
    expect(r.code, r.stderr).toBe(0);
    const out = lines(r.stdout).map((l) => JSON.parse(l));
    expect(out).toHaveLength(3);
    expect(out[2]).toMatchObject({ destination: queue, partition: null, problem: 'the body is not JSON', raw: 'plain text, not json', encoding: 'utf8' });
    expect(out[0].headers).toMatchObject({ cloudEvents_type: 'order_placed' });
    expect(r.stderr).toMatch(/warning: .*the body is not JSON/);
  });

  it.skipIf(!up)('a tap cannot replay: --from-beginning without --group exits 2 with one sentence', async () => {
    const r = await runCli(['consume', '--broker', AMQP_URL, '--topic', uniqueName('never-created'), '--from-beginning']);
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, /a tap on rabbitmq sees only what is published after it starts.*--group/);
  });

  it.skipIf(!up)('a tap sees what is published after it started and takes nothing from the queue', async () => {
    const queue = await queueWith(['--count', '1', '--seed', '1']);
    // Empty the queue first: the tap must not see what was there before it.
    const drained = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'g', '--idle-timeout', '1s', '--json']);
    expect(lines(drained.stdout)).toHaveLength(1);
    const tap = startCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--limit', '10', '--json', '-v']);
    await tap.waitForStderr('(tap: observing, taking nothing)');
    const args = ['--count', '10', '--seed', '4'];
    await produce(AMQP_URL, queue, args);
    expect(await tap.exited, tap.stderr()).toBe(0);
    const expected = await dryRun(args);
    expect(lines(tap.stdout())).toEqual(expected);
    // The queue's own consumers still get every message.
    const group = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'g', ...IDLE, '--json']);
    expect(lines(group.stdout)).toEqual(expected);
  });
});

/** consume with its stdout read by a reader that leaves after `closeAfter` bytes (`| head -c N`). */
function consumeIntoClosingPipe(args: string[], closeAfter: number): Promise<{ code: number | null; stderr: string; received: string }> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [BIN, 'consume', ...args], { env: { ...process.env, CI: 'true', NO_COLOR: '1' }, stdio: ['ignore', 'pipe', 'pipe'] });
    let received = '';
    let stderr = '';
    child.stdout.on('data', (d: Buffer) => {
      received += d.toString('utf8');
      if (Buffer.byteLength(received) >= closeAfter) child.stdout.destroy();
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => (stderr += d));
    const timer = setTimeout(() => child.kill('SIGKILL'), 100_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, stderr, received });
    });
  });
}

describe('payq consume into a pipe its reader closes (| head -1)', async () => {
  const up = await brokerAvailable(AMQP_URL);
  const queues: string[] = [];
  afterAll(async () => {
    if (up) await deleteDestinations(AMQP_URL, queues);
  });

  async function depth(queue: string): Promise<number> {
    const conn = await amqplib.connect(AMQP_URL);
    try {
      return (await (await conn.createChannel()).checkQueue(queue)).messageCount;
    } finally {
      await conn.close();
    }
  }

  it.skipIf(!up)('is a normal end: exit 0, no "interrupted", and only what was written to stdout is acked', { timeout: 300_000 }, async () => {
    const queue = uniqueName('consume-pipe');
    queues.push(queue);
    const total = 3000;
    await produce(AMQP_URL, queue, ['--count', String(total), '--seed', '11']);
    let left = total;
    for (const closeAfter of [1, 200, 20_000]) {
      const r = await consumeIntoClosingPipe(['--broker', AMQP_URL, '--topic', queue, '--group', 'pipe', '--idle-timeout', '5s', '--json'], closeAfter);
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).not.toMatch(/interrupted|payq: error/);
      expect(r.stderr).toMatch(/stdout closed by its reader/);
      const printed = Number(/printed\s+│\s+([\d,]+)/.exec(r.stderr)?.[1]?.replaceAll(',', '') ?? NaN);
      // Every message acked was written whole before the pipe closed; the rest is back on the
      // queue. (A write the kernel took part of before the reader left counts as not printed: the
      // reader may have seen some of its lines, which then come again — seen twice, never lost.)
      expect(printed).toBeGreaterThanOrEqual(0);
      expect(lines(r.received).length).toBeGreaterThanOrEqual(Math.min(printed, 1));
      expect(await depth(queue)).toBe(left - printed);
      left -= printed;
    }
    expect(left).toBeGreaterThan(0);
  });
});
