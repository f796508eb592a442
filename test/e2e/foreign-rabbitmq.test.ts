/**
 * A RabbitMQ pipeline payq did not build (issue 12): queues declared by the user's services with
 * their own arguments — a classic queue without payq's dead-letter arguments, a quorum queue, a
 * queue with x-max-length — filled with seed-shaped events published straight to the queue
 * through the default exchange. Everything foreign is set up with plain amqplib, never with payq.
 *
 * Each queue is read in every mode payq offers for it, and afterwards still has its arguments
 * (a declare with the user's own arguments still succeeds, which RabbitMQ allows only when they are
 * equal) and, in the modes that take nothing, its message count.
 */
import amqplib from 'amqplib';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { startCli } from '../helpers/spawn.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery } from '../../src/drivers/types.js';

const EVENTS = 20;
const up = await brokerAvailable(AMQP_URL);

/** The seed document's shape, nothing of payq's. */
function seedEvent(i: number): string {
  return JSON.stringify({ event: 'order_placed', data: { order_id: 5000 + i, user_id: 77 } });
}
const expectedBodies = Array.from({ length: EVENTS }, (_, i) => seedEvent(i));

const KINDS: Array<{ kind: string; options: amqplib.Options.AssertQueue }> = [
  { kind: 'classic queue without payq arguments', options: { durable: true } },
  { kind: 'quorum queue', options: { durable: true, arguments: { 'x-queue-type': 'quorum' } } },
  { kind: 'queue with x-max-length', options: { durable: true, arguments: { 'x-max-length': 1000, 'x-overflow': 'reject-publish' } } },
];

async function withChannel<T>(work: (ch: amqplib.Channel) => Promise<T>): Promise<T> {
  const conn = await amqplib.connect(AMQP_URL);
  conn.on('error', () => {});
  try {
    const ch = await conn.createChannel();
    ch.on('error', () => {});
    return await work(ch);
  } finally {
    await conn.close().catch(() => undefined);
  }
}

async function foreignQueue(options: amqplib.Options.AssertQueue): Promise<string> {
  const queue = uniqueName('foreign');
  created.push(queue);
  await withChannel(async (ch) => {
    await ch.assertQueue(queue, options);
    for (let i = 0; i < EVENTS; i++) ch.sendToQueue(queue, Buffer.from(seedEvent(i)), { persistent: true, contentType: 'application/json' });
    // A round trip after the publishes: they are in the queue before the test reads it.
    await ch.checkQueue(queue);
  });
  // Quorum queues report a publish a moment later.
  for (let i = 0; i < 50 && (await messageCount(queue)) < EVENTS; i++) await new Promise((r) => setTimeout(r, 100));
  return queue;
}

async function messageCount(queue: string): Promise<number> {
  return withChannel(async (ch) => (await ch.checkQueue(queue)).messageCount);
}

/** The queue still has exactly the user's arguments: re-declaring with them succeeds (and changes nothing). */
async function stillDeclaredAs(queue: string, options: amqplib.Options.AssertQueue): Promise<boolean> {
  return withChannel(async (ch) => {
    try {
      await ch.assertQueue(queue, options);
      return true;
    } catch {
      return false;
    }
  });
}

/** Waits until the queue's unacked messages are back (a closed consumer's channel requeues them). */
async function countSettles(queue: string, expected: number): Promise<number> {
  let n = await messageCount(queue);
  for (let i = 0; i < 50 && n !== expected; i++) {
    await new Promise((r) => setTimeout(r, 100));
    n = await messageCount(queue);
  }
  return n;
}

const lines = (text: string) => text.split('\n').filter((l) => l !== '');
const created: string[] = [];

afterAll(async () => {
  if (up) await deleteDestinations(AMQP_URL, created);
});

// Side by side: each case fills a queue of its own.
describe.skipIf(!up)('a RabbitMQ queue payq did not declare, filled through the default exchange', { concurrent: true }, () => {
  for (const { kind, options } of KINDS) {
    describe(kind, () => {
      it('a tap refuses it (exit 2, naming the modes that can read it) instead of showing nothing; the queue is untouched', async () => {
        const queue = await foreignQueue(options);
        for (const command of ['consume', 'trace']) {
          const r = await runCli([command, '--broker', AMQP_URL, '--topic', queue, '--idle-timeout', '1s']);
          expect(r.code, r.stderr).toBe(2);
          expectOneErrorLine(r.stderr, new RegExp(`queue '${queue.replace(/\./g, '\\.')}' was not declared by payq.*--group NAME.*--requeue.*--exchange NAME --binding KEY`));
        }
        expect(await stillDeclaredAs(queue, options)).toBe(true);
        expect(await messageCount(queue)).toBe(EVENTS);
      });

      it('consume --group --requeue prints every message once and hands them all back: same arguments, same count', async () => {
        const queue = await foreignQueue(options);
        const r = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'audit', '--requeue', '--idle-timeout', '2s', '--json']);
        expect(r.code, r.stderr).toBe(0);
        expect(lines(r.stderr)[0]).toMatch(/^consuming .* \(group audit with --requeue: .*handing every message back/);
        expect(lines(r.stdout).sort()).toEqual([...expectedBodies].sort());
        expect(r.stderr).toMatch(/handed back\s+│\s+20\b/);
        expect(await stillDeclaredAs(queue, options)).toBe(true);
        expect(await countSettles(queue, EVENTS)).toBe(EVENTS);
      });

      it('trace --group --requeue --type-field event --correlate data.order_id --expect reads every message and leaves them', async () => {
        const queue = await foreignQueue(options);
        const r = await runCli([
          'trace', '--broker', AMQP_URL, '--topic', queue, '--group', 'audit', '--requeue',
          '--type-field', 'event', '--correlate', 'data.order_id', '--expect', 'order_placed', '--idle-timeout', '2s', '--json',
        ]);
        expect(r.code, r.stderr).toBe(0);
        expect(lines(r.stderr)[0]).toMatch(/^trace: watching .* \(group audit with --requeue/);
        const report = JSON.parse(r.stdout) as { events: { seen: number; duplicates: number }; payments: { seen: number }; expectation: { passed: number; failed: number } };
        expect(report.events).toMatchObject({ seen: EVENTS, duplicates: 0 });
        expect(report.payments.seen).toBe(EVENTS);
        expect(report.expectation).toMatchObject({ passed: EVENTS, failed: 0 });
        expect(await stillDeclaredAs(queue, options)).toBe(true);
        expect(await countSettles(queue, EVENTS)).toBe(EVENTS);
      });

      it('consume --group (the mode that takes) reads every message and acks it; the arguments stay', async () => {
        const queue = await foreignQueue(options);
        const r = await runCli(['consume', '--broker', AMQP_URL, '--topic', queue, '--group', 'audit', '--idle-timeout', '2s', '--json']);
        expect(r.code, r.stderr).toBe(0);
        expect(lines(r.stderr)[0]).toMatch(/\(group audit: competing with the queue’s consumers, taking the messages\)/);
        expect(lines(r.stdout).sort()).toEqual([...expectedBodies].sort());
        expect(await stillDeclaredAs(queue, options)).toBe(true);
        expect(await countSettles(queue, 0)).toBe(0);
      });
    });
  }

  it('consume --exchange NAME --binding KEY taps the exchange the user publishes to, taking nothing from its queue', async () => {
    const exchange = uniqueName('exchange');
    const queue = await foreignQueue({ durable: true });
    await withChannel(async (ch) => {
      await ch.assertExchange(exchange, 'topic', { durable: false, autoDelete: false });
      await ch.bindQueue(queue, exchange, 'orders.#');
    });
    try {
      const tap = startCli(['consume', '--broker', AMQP_URL, '--exchange', exchange, '--binding', 'orders.#', '--limit', '5', '--json']);
      await tap.waitForStderr(`tap on exchange '${exchange}' with binding 'orders.#'`);
      await withChannel(async (ch) => {
        for (let i = 0; i < 5; i++) ch.publish(exchange, 'orders.placed', Buffer.from(seedEvent(100 + i)));
        await ch.checkExchange(exchange);
      });
      expect(await tap.exited, tap.stderr()).toBe(0);
      expect(lines(tap.stdout())).toEqual(Array.from({ length: 5 }, (_, i) => seedEvent(100 + i)));
      // The user's queue got its copies as well: 20 from before plus 5.
      expect(await countSettles(queue, EVENTS + 5)).toBe(EVENTS + 5);
    } finally {
      await withChannel((ch) => ch.deleteExchange(exchange));
    }
  });

  it('produce to an existing foreign queue uses it as it is (no PRECONDITION_FAILED), with a one-line notice', async () => {
    const options = { durable: true, arguments: { 'x-max-length': 1000 } };
    const queue = await foreignQueue(options);
    const r = await runCli(['produce', '--broker', AMQP_URL, '--topic', queue, '--count', '3', '--seed', '1']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`queue '${queue.replace(/\./g, '\\.')}' exists without payq's dead-letter exchange: used as it is; payq dead-letters by publishing to '.*\\.dlq' itself`));
    expect(await stillDeclaredAs(queue, options)).toBe(true);
    expect(await countSettles(queue, EVENTS + 3)).toBe(EVENTS + 3);
  });

  it('consume and trace on a queue that does not exist wait for it, then exit 3 naming it, and never declare it', async () => {
    const queue = uniqueName('missing');
    created.push(queue);
    for (const command of ['consume', 'trace']) {
      const r = await runCli([command, '--broker', AMQP_URL, '--topic', queue, '--start-timeout', '1s', '--idle-timeout', '1s']);
      expect(r.code, r.stderr).toBe(3);
      expectOneErrorLine(r.stderr, new RegExp(`no such destination on .*: ${queue.replace(/\./g, '\\.')}`));
    }
    const exists = await withChannel(async (ch) => ch.checkQueue(queue).then(() => true, () => false));
    expect(exists).toBe(false);
  });

  it('--stream-offset first reads a stream queue from its start and takes nothing: same count afterwards', async () => {
    const options = { durable: true, arguments: { 'x-queue-type': 'stream' } };
    const queue = await foreignQueue(options);
    for (const command of [
      ['consume', '--broker', AMQP_URL, '--topic', queue, '--stream-offset', 'first', '--idle-timeout', '2s', '--json'],
      ['consume', '--broker', AMQP_URL, '--topic', queue, '--stream-offset', '0', '--idle-timeout', '2s', '--json'],
    ]) {
      const r = await runCli(command);
      expect(r.code, r.stderr).toBe(0);
      expect(lines(r.stderr)[0]).toMatch(/\(stream queue from offset (first|0): a stream keeps its messages, taking nothing\)/);
      expect(lines(r.stdout)).toEqual(expectedBodies);
    }
    const traced = await runCli([
      'trace', '--broker', AMQP_URL, '--topic', queue, '--stream-offset', 'first', '--type-field', 'event', '--correlate', 'data.order_id',
      '--expect', 'order_placed', '--idle-timeout', '2s', '--json',
    ]);
    expect(traced.code, traced.stderr).toBe(0);
    expect(JSON.parse(traced.stdout)).toMatchObject({ events: { seen: EVENTS }, expectation: { passed: EVENTS, failed: 0 } });
    expect(await stillDeclaredAs(queue, options)).toBe(true);
    expect(await messageCount(queue)).toBe(EVENTS);
  });

  it('the worker side: a queue without payq\'s dead-letter exchange dead-letters by publishing to <queue>.dlq, headers kept, arguments untouched', async () => {
    const options = { durable: true, arguments: { 'x-max-length': 1000 } };
    const queue = await foreignQueue(options);
    created.push(`${queue}.dlq`);
    const driver = await createDriver(AMQP_URL);
    await driver.connect();
    try {
      const notices = await driver.declare([{ name: queue, deadLetter: true }]);
      expect(notices).toEqual([expect.stringMatching(/exists without payq's dead-letter exchange: used as it is; payq dead-letters by publishing to '.*\.dlq' itself/)]);
      const got: Delivery[] = [];
      const sub = await driver.subscribe({ destinations: [queue], group: 'worker', fromBeginning: true, prefetch: 5 }, async (ds) => {
        for (const d of ds) {
          if (got.length < 3) {
            got.push(d);
            await d.deadLetter({ 'payq-dlq-reason': 'permanent-failure' });
          } else d.nack();
        }
      });
      for (let i = 0; i < 100 && got.length < 3; i++) await new Promise((r) => setTimeout(r, 100));
      await sub.close();
      expect(got).toHaveLength(3);
      const dead: Delivery[] = [];
      const dlqSub = await driver.subscribe({ destinations: [`${queue}.dlq`], group: 'check', fromBeginning: true, prefetch: 10 }, (ds) => {
        for (const d of ds) {
          dead.push(d);
          d.ack();
        }
      });
      for (let i = 0; i < 100 && dead.length < 3; i++) await new Promise((r) => setTimeout(r, 100));
      await dlqSub.close();
      expect(dead.map((d) => d.value.toString()).sort()).toEqual(got.map((d) => d.value.toString()).sort());
      for (const d of dead) expect(d.headers['payq-dlq-reason']).toBe('permanent-failure');
      expect(await stillDeclaredAs(queue, options)).toBe(true);
      expect(await countSettles(queue, EVENTS - 3)).toBe(EVENTS - 3);
    } finally {
      await driver.close();
    }
  });
});
