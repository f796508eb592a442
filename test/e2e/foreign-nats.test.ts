/**
 * A NATS JetStream stream payq did not create (issue 12), set up with the plain NATS client: its
 * own name, subjects and limits. consume and trace read it as it is — every subject it holds,
 * through an ephemeral consumer — and afterwards its configuration and message count are what
 * they were and no consumer of payq's is left on it. A work-queue stream, where reading takes the
 * message, is refused for a tap.
 */
import { jetstream, jetstreamManager, RetentionPolicy, StorageType, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { NATS_URL, brokerAvailable } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';

const up = await brokerAvailable(NATS_URL);
const EVENTS = 15;
const seedEvent = (i: number) => JSON.stringify({ event: i % 2 === 0 ? 'order_placed' : 'payment_captured', data: { order_id: 9000 + Math.floor(i / 2) } });
const lines = (text: string) => text.split('\n').filter((l) => l !== '');
const suffix = () => `${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}`.toUpperCase();

let nc: NatsConnection;
let jsm: JetStreamManager;
const streams: string[] = [];

async function userStream(retention: RetentionPolicy): Promise<{ name: string; subject: string }> {
  const id = suffix();
  const name = `SHOP_${id}`;
  const subject = `shop.${id.toLowerCase()}`;
  streams.push(name);
  await jsm.streams.add({ name, subjects: [`${subject}.>`], retention, storage: StorageType.Memory, max_msgs: 500, max_age: 3_600 * 1e9, description: 'the user’s own' });
  const js = jetstream(nc);
  for (let i = 0; i < EVENTS; i++) await js.publish(`${subject}.${i % 2 === 0 ? 'orders' : 'payments'}`, seedEvent(i));
  return { name, subject };
}

describe.skipIf(!up)('a NATS stream payq did not create', () => {
  beforeAll(async () => {
    nc = await connect({ servers: NATS_URL.replace('nats://', '') });
    jsm = await jetstreamManager(nc);
  });
  afterAll(async () => {
    for (const s of streams) await jsm.streams.delete(s).catch(() => undefined);
    await nc?.close();
  });

  it('consume and trace read it as it is (all its subjects); its config, count and consumers are unchanged', async () => {
    const { name } = await userStream(RetentionPolicy.Limits);
    const before = await jsm.streams.info(name);

    const consumed = await runCli(['consume', '--broker', NATS_URL, '--topic', name, '--from-beginning', '--idle-timeout', '2s', '--json']);
    expect(consumed.code, consumed.stderr).toBe(0);
    expect(lines(consumed.stderr)[0]).toMatch(/\(tap: observing, taking nothing\) — an ephemeral consumer/);
    expect(lines(consumed.stdout)).toEqual(Array.from({ length: EVENTS }, (_, i) => seedEvent(i)));

    const traced = await runCli([
      'trace', '--broker', NATS_URL, '--topic', name, '--from-beginning', '--type-field', 'event', '--correlate', 'data.order_id',
      '--idle-timeout', '2s', '--json',
    ]);
    expect(traced.code, traced.stderr).toBe(0);
    expect(JSON.parse(traced.stdout)).toMatchObject({ events: { seen: EVENTS, duplicates: 0 }, payments: { seen: Math.ceil(EVENTS / 2) } });

    const after = await jsm.streams.info(name);
    expect(after.config).toEqual(before.config);
    expect(after.state.messages).toBe(EVENTS);
    expect(await jsm.consumers.list(name).next()).toEqual([]);
  });

  it('a work-queue stream (reading takes the message) is refused for a tap, exit 2, and keeps every message', async () => {
    const { name } = await userStream(RetentionPolicy.Workqueue);
    const r = await runCli(['consume', '--broker', NATS_URL, '--topic', name, '--idle-timeout', '1s']);
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, /is a work queue: reading .* takes its messages.*--group NAME/);
    expect((await jsm.streams.info(name)).state.messages).toBe(EVENTS);
    expect(await jsm.consumers.list(name).next()).toEqual([]);
  });

  it('a stream that does not exist is waited for, reported (exit 3) and never created', async () => {
    const name = `SHOP_MISSING_${suffix()}`;
    const r = await runCli(['trace', '--broker', NATS_URL, '--topic', name, '--start-timeout', '1s', '--idle-timeout', '1s']);
    expect(r.code, r.stderr).toBe(3);
    expectOneErrorLine(r.stderr, new RegExp(`no such destination on nats://.*: ${name}`));
    const names = await jsm.streams.names().next();
    expect(names.some((n) => n === name || n === `PAYQ_${name}`)).toBe(false);
  });
});
