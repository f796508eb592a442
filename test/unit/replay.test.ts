/**
 * replay-dlq's core on the in-process memory broker: the fixtures in every header convention and
 * the bad ones, dry runs that change nothing, selection, the loop guard, --to, interruption.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { replayDlq, type ReplayOptions, type ReplayResult } from '../../src/core/replay.js';
import { ReplayHeader } from '../../src/core/replay-origin.js';
import { parseFilters } from '../../src/core/replay-select.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, DeliveryHandler, Driver, Headers, OutgoingMessage } from '../../src/drivers/types.js';
import { BrokerUnavailableError } from '../../src/errors.js';
import { PayqHeader } from '../../src/events/headers.js';
import { readUntilQuiet } from '../helpers/read.js';

interface DlqFixture {
  file: string;
  expect: { outcome: string; origin_from?: string; destination?: string; problem?: string };
  key: string;
  type: string;
  headers: Headers;
  body?: unknown;
  body_base64?: string;
  body_bytes?: number;
}

/** fixtures/dlq/*.json as messages, `{{origin}}` replaced (format: fixtures/dlq/README.md). */
function loadFixtures(origin: string): Array<DlqFixture & { message: OutgoingMessage }> {
  const dir = 'fixtures/dlq';
  return readdirSync(dir)
    .filter((f) => f.endsWith('.json'))
    .sort()
    .map((file) => {
      const f = { file, ...(JSON.parse(readFileSync(`${dir}/${file}`, 'utf8').replaceAll('{{origin}}', origin)) as Omit<DlqFixture, 'file'>) };
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

let n = 0;
const drivers: Driver[] = [];
async function memory(): Promise<Driver> {
  const driver = await createDriver(`memory://replay-unit-${process.pid}-${n++}?maxMessageBytes=8000000`);
  await driver.connect();
  drivers.push(driver);
  return driver;
}
afterEach(async () => {
  await Promise.all(drivers.splice(0).map((d) => d.close()));
});

function replay(driver: Driver, options: Partial<ReplayOptions> & { dlqs: string[] }, signal?: AbortSignal): Promise<ReplayResult> {
  return replayDlq({ dryRun: false, filter: {}, idleTimeoutMs: 300, listMessages: true, ...options }, { driver, clock: systemClock, signal });
}

/** Everything in `destination` that the group `reader` has not taken yet (ends 300 ms after the last one). */
function drain(driver: Driver, destination: string, reader = 'test-reader'): Promise<Delivery[]> {
  return readUntilQuiet(driver, destination, reader, 300);
}

function fill(driver: Driver, dlq: string, messages: OutgoingMessage[]): Promise<void> {
  return driver.send(dlq, messages);
}

describe('replay-dlq on the fixtures (memory)', () => {
  it('replays each convention to its origin, parks the loop, leaves each bad one with one line', async () => {
    const driver = await memory();
    const origin = 'shop.orders';
    await driver.declare([{ name: origin, deadLetter: true }]);
    const fixtures = loadFixtures(origin);
    await fill(driver, `${origin}.dlq`, fixtures.map((f) => f.message));

    // Dry run, twice: the same answer, nothing moved.
    const dry = await replay(driver, { dlqs: [`${origin}.dlq`], dryRun: true });
    const again = await replay(driver, { dlqs: [`${origin}.dlq`], dryRun: true });
    expect(again.messages!.map((m) => m.event_id ?? m.key)).toEqual(dry.messages!.map((m) => m.event_id ?? m.key));
    expect(dry.seen).toBe(fixtures.length);
    for (const [i, f] of fixtures.entries()) {
      const m = dry.messages![i]!;
      expect(m.key, f.file).toBe(f.key);
      expect(m.outcome, f.file).toBe(f.expect.outcome);
      if (f.expect.origin_from) expect(m.origin_from, f.file).toBe(f.expect.origin_from);
      if (f.expect.destination) expect(m.destination, f.file).toBe(f.expect.destination);
      if (f.expect.problem) expect(m.problem, f.file).toContain(f.expect.problem);
    }
    const bad = fixtures.filter((f) => f.file.startsWith('bad-'));
    expect(dry.problems).toHaveLength(bad.length);
    for (const f of bad) expect(dry.problems.filter((p) => p.includes(f.expect.problem!)), f.file).toHaveLength(1);
    expect(dry.problems.every((p) => p.endsWith('would stay in the DLQ'))).toBe(true);
    expect(dry).toMatchObject({ replayed: 6, parked: 1, parked_over_max_replays: 1, unresolved: 1, invalid: 4, failed: 0, skipped: 0 });
    expect(await drain(driver, origin)).toHaveLength(0);

    const real = await replay(driver, { dlqs: [`${origin}.dlq`] });
    expect(real).toMatchObject({ replayed: 6, parked: 1, unresolved: 1, invalid: 4, failed: 0, left: 5, dry_run: false });
    expect(real.problems).toHaveLength(5);
    expect(real.problems.every((p) => p.endsWith('left in the DLQ'))).toBe(true);

    const back = await drain(driver, origin);
    expect(back.map((d) => d.key).sort()).toEqual(fixtures.filter((f) => f.expect.outcome === 'replayed').map((f) => f.key).sort());
    for (const d of back) {
      const f = fixtures.find((x) => x.key === d.key)!;
      expect(d.value.equals(f.message.value), f.file).toBe(true);
      expect(d.headers[PayqHeader.replayCount]).toBe('1');
      for (const h of ['x-death', 'x-first-death-queue', '__connect.errors.topic', 'kafka_dlt-original-topic', PayqHeader.originalDestination, PayqHeader.dlqReason]) {
        expect(d.headers[h], `${f.file}: ${h}`).toBeUndefined();
      }
      const id = f.headers['ce_id'] ?? f.headers['cloudEvents_id'];
      if (id) expect(d.headers['ce_id'] ?? d.headers['cloudEvents_id']).toBe(id);
    }
    const parked = await drain(driver, `${origin}.parked`);
    expect(parked.map((d) => d.key)).toEqual(['pay_9d0e1f2a3b4c5d6e']);
    expect(parked[0]!.headers[PayqHeader.replayCount]).toBe('3');
    expect(parked[0]!.headers[ReplayHeader.parkedReason]).toMatch(/replayed 3 times/);

    // The bad ones are still in the DLQ, and only they.
    const rest = await replay(driver, { dlqs: [`${origin}.dlq`], dryRun: true });
    expect(rest.messages!.map((m) => m.key).sort()).toEqual(bad.map((f) => f.key).sort());

    // --park-unresolved moves them on: to <origin>.parked (here also the DLQ's base).
    const parkAll = await replay(driver, { dlqs: [`${origin}.dlq`], parkUnresolved: true });
    expect(parkAll).toMatchObject({ parked: 5, parked_over_max_replays: 0, left: 0, replayed: 0 });
    expect(parkAll.problems.every((p) => p.endsWith(`parked in ${origin}.parked`))).toBe(true);
    const parkedBad = await drain(driver, `${origin}.parked`);
    expect(parkedBad.map((d) => d.key).sort()).toEqual(bad.map((f) => f.key).sort());
    expect(parkedBad.every((d) => /^(unresolved|invalid): /.test(d.headers[ReplayHeader.parkedReason] ?? ''))).toBe(true);
    expect((await replay(driver, { dlqs: [`${origin}.dlq`], dryRun: true })).seen).toBe(0);
  });
});

function events(count: number, origin: string, extra: (i: number) => Headers = () => ({})): OutgoingMessage[] {
  return Array.from({ length: count }, (_, i) => ({
    key: `pay_${i}`,
    type: i % 2 === 0 ? 'payment_authorized' : 'order_placed',
    value: Buffer.from(JSON.stringify({ event: i % 2 === 0 ? 'payment_authorized' : 'order_placed', id: `evt_${i}`, payment_id: `pay_${i}` })),
    headers: {
      ce_id: `evt_${i}`,
      ce_type: i % 2 === 0 ? 'payment_authorized' : 'order_placed',
      ce_subject: `pay_${i}`,
      [PayqHeader.originalDestination]: origin,
      [PayqHeader.dlqReason]: i % 3 === 0 ? 'retries-exhausted' : 'permanent-failure',
      [PayqHeader.firstFailedAt]: new Date(Date.parse('2025-01-15T10:00:00Z') + i * 60_000).toISOString(),
      ...extra(i),
    },
  }));
}

describe('replay-dlq selection and guards (memory)', () => {
  it('--filter, --since/--until and --limit take only what they say; the rest stays in order', async () => {
    const driver = await memory();
    await driver.declare([{ name: 'o', deadLetter: true }]);
    await fill(driver, 'o.dlq', events(30, 'o'));
    const filter = parseFilters(['type=payment_authorized', 'reason=^perm'], { since: '2025-01-15T10:05:00Z', until: '2025-01-15T10:25:00Z' });
    const picked = await replay(driver, { dlqs: ['o.dlq'], filter });
    // Even i in [5, 25) not divisible by 3: 8, 10, 14, 16, 20, 22.
    const expected = [8, 10, 14, 16, 20, 22].map((i) => `pay_${i}`);
    expect(picked).toMatchObject({ replayed: 6, skipped: 24, left: 0, seen: 30 });
    expect((await drain(driver, 'o')).map((d) => d.key)).toEqual(expected);

    const limited = await replay(driver, { dlqs: ['o.dlq'], limit: 5, filter: parseFilters(['payment=pay_1,pay_2,pay_3,pay_4,pay_5,pay_6,pay_7,pay_9']) });
    expect(limited).toMatchObject({ replayed: 5, stopped_by: 'limit' });
    expect((await drain(driver, 'o')).map((d) => d.key)).toEqual(['pay_1', 'pay_2', 'pay_3', 'pay_4', 'pay_5']);

    const rest = await replay(driver, { dlqs: ['o.dlq'] });
    expect(rest).toMatchObject({ replayed: 30 - 6 - 5, left: 0 });
    const keys = (await drain(driver, 'o')).map((d) => Number(d.key!.slice(4)));
    expect(keys).toEqual([...keys].sort((a, b) => a - b));
    expect((await replay(driver, { dlqs: ['o.dlq'], dryRun: true })).seen).toBe(0);
  });

  it('counts replays in payq-replay-count and parks a message that keeps failing, never drops it', async () => {
    const driver = await memory();
    await driver.declare([{ name: 'loop', deadLetter: true }]);
    await fill(driver, 'loop.dlq', events(3, 'loop'));
    // A consumer of the origin that dead-letters everything again, as a still-broken service would.
    const failing = await driver.subscribe({ destinations: ['loop'], group: 'broken-service', fromBeginning: true, prefetch: 10 }, async (ds) => {
      for (const d of ds) await d.deadLetter({ [PayqHeader.originalDestination]: 'loop', [PayqHeader.dlqReason]: 'permanent-failure' });
    });
    // The run goes round the loop by itself: the service dead-letters each replay at once.
    const result = await replay(driver, { dlqs: ['loop.dlq'], maxReplays: 3 });
    await failing.close();
    expect(result).toMatchObject({ replayed: 9, parked: 3, parked_over_max_replays: 3, left: 0, problem_count: 0 });
    const parked = await drain(driver, 'loop.parked');
    expect(parked.map((d) => d.headers['ce_id']).sort()).toEqual(['evt_0', 'evt_1', 'evt_2']);
    expect(parked.every((d) => d.headers[PayqHeader.replayCount] === '3')).toBe(true);
  });

  it('--to sends everything there; a missing --to or DLQ is refused before anything is read', async () => {
    const driver = await memory();
    await driver.declare([{ name: 'x', deadLetter: true }, { name: 'elsewhere' }]);
    await fill(driver, 'x.dlq', events(4, 'x', (i): Headers => (i === 0 ? { [PayqHeader.originalDestination]: '' } : {})));
    await expect(replay(driver, { dlqs: ['x.dlq'], to: 'nowhere' })).rejects.toThrow(/--to nowhere: no such destination/);
    await expect(replay(driver, { dlqs: ['x.dlq', 'y.dlq'] })).rejects.toMatchObject({ exitCode: 3, message: expect.stringMatching(/no such DLQ .*y\.dlq/) });
    const r = await replay(driver, { dlqs: ['x.dlq'], to: 'elsewhere' });
    expect(r).toMatchObject({ replayed: 4, unresolved: 0 });
    expect(r.messages!.every((m) => m.origin_from === '--to' && m.destination === 'elsewhere')).toBe(true);
    expect(await drain(driver, 'elsewhere')).toHaveLength(4);
    expect(await drain(driver, 'x')).toHaveLength(0);
  });

  it('--rate paces the republishing (the 40th send cannot go before 39 intervals)', async () => {
    const driver = await memory();
    await driver.declare([{ name: 'paced', deadLetter: true }]);
    await fill(driver, 'paced.dlq', events(40, 'paced'));
    const r = await replay(driver, { dlqs: ['paced.dlq'], rate: 200 });
    expect(r.replayed).toBe(40);
    // A lower bound only: a slow machine makes it longer, never shorter.
    expect(r.elapsed_s - 0.3).toBeGreaterThanOrEqual(39 / 200);
  });

  it('stops on the abort signal: what was not replayed stays in the DLQ', async () => {
    const driver = await memory();
    await driver.declare([{ name: 'stop', deadLetter: true }]);
    await fill(driver, 'stop.dlq', events(200, 'stop'));
    const controller = new AbortController();
    const running = replayDlq(
      { dlqs: ['stop.dlq'], dryRun: false, filter: {}, idleTimeoutMs: 5000, rate: 100 },
      { driver, clock: systemClock, signal: controller.signal, onProgress: (p) => p.replayed >= 10 && controller.abort() },
    );
    const r = await running;
    expect(r).toMatchObject({ interrupted: true, stopped_by: 'signal' });
    const rest = await replay(driver, { dlqs: ['stop.dlq'] });
    expect(r.replayed + rest.replayed).toBe(200);
    const ids = new Set((await drain(driver, 'stop')).map((d) => d.headers['ce_id']));
    expect(ids.size).toBe(200);
  });
});

/**
 * A DLQ behind a link that is lost once, as RabbitMQ loses a channel: at the `lossAt`-th send the
 * channel closes (after that send was confirmed, or failing it unconfirmed); its deliveries are no
 * longer settleable (their acks do nothing), and what it held unacked is handed out again,
 * redelivered, on a new channel once the handler returned. `origin` lists every event id the
 * broker may have stored in the origin, in order.
 */
function lossyDriver(messages: OutgoingMessage[], lossAt: number, how: 'after-confirm' | 'unconfirmed') {
  const origin: string[] = [];
  let sends = 0;
  let channel = { closed: false };
  const unacked = new Map<string, OutgoingMessage>();
  const deliveriesOn = (ch: { closed: boolean }, ms: OutgoingMessage[], redelivered: boolean): Delivery[] =>
    ms.map((m) => ({
      destination: 'lossy.dlq',
      key: m.key,
      value: m.value,
      headers: { ...m.headers },
      partition: undefined,
      offset: undefined,
      redelivered,
      get settleable() {
        return !ch.closed;
      },
      ack: () => {
        if (!ch.closed) unacked.delete(m.headers['ce_id']!);
      },
      nack: () => undefined,
      deadLetter: () => Promise.reject(new Error('not in this test')),
    }));
  const driver = {
    name: 'lossy',
    url: { redacted: 'lossy://' },
    capabilities: { partitions: false, storedDestinations: true },
    tuning: { sendBatchSize: 3, sendMaxInFlight: 1 },
    link: () => ({ connected: true, reconnects: 0, downMs: 0 }),
    exists: async (names: string[]) => new Set(names),
    declare: async () => [],
    send: async (_destination: string, batch: OutgoingMessage[]) => {
      const ids = batch.map((m) => m.headers['ce_id']!);
      if (++sends === lossAt) {
        channel.closed = true;
        if (how === 'unconfirmed') {
          origin.push(...ids);
          throw new BrokerUnavailableError('the connection was lost with the confirm pending', { retriable: true, unconfirmed: true });
        }
      }
      origin.push(...ids);
    },
    subscribe: async (_options: unknown, handler: DeliveryHandler) => {
      for (const m of messages) unacked.set(m.headers['ce_id']!, m);
      const running = (async () => {
        await handler(deliveriesOn(channel, messages, false));
        if (!channel.closed) return;
        channel = { closed: false };
        await handler(deliveriesOn(channel, [...unacked.values()], true));
      })();
      return { close: () => running };
    },
  } as unknown as Driver;
  return { driver, origin, unacked };
}

describe('replay-dlq when the link its deliveries came on is lost (Delivery.settleable)', () => {
  it('republishes nothing the broker took back, counts each message once and the confirmed-then-lost ones as duplicates', async () => {
    // Chunks of 3: the second is confirmed just as the channel goes; the two after it are not sent then.
    const { driver, origin, unacked } = lossyDriver(events(10, 'lossy'), 2, 'after-confirm');
    const r = await replay(driver, { dlqs: ['lossy.dlq'], idleTimeoutMs: 50 });
    expect(unacked.size).toBe(0);
    expect(new Set(origin).size).toBe(10);
    // evt_3..5 twice (confirmed, then their DLQ ack could not go), nothing else.
    expect(origin.length).toBe(13);
    expect(r).toMatchObject({ seen: 10, replayed: 10, failed: 0, left: 0, duplicates: 3, unconfirmed: 0 });
    expect(r.messages!.map((m) => m.event_id).sort()).toEqual([...new Set(origin)].sort());
  });

  it('a send cut off with its channel is not a failure: counted unconfirmed, sent again when the message comes back', async () => {
    const { driver, origin, unacked } = lossyDriver(events(10, 'lossy'), 2, 'unconfirmed');
    const r = await replay(driver, { dlqs: ['lossy.dlq'], idleTimeoutMs: 50 });
    expect(unacked.size).toBe(0);
    expect(new Set(origin).size).toBe(10);
    expect(origin.length).toBe(13);
    expect(r).toMatchObject({ seen: 10, replayed: 10, failed: 0, left: 0, duplicates: 0, unconfirmed: 3 });
    expect(r.rows.filter((row) => row.outcome === 'failed')).toEqual([]);
  });

  it('a dry run that loses its channel counts each message once', async () => {
    const { driver, origin } = lossyDriver(events(10, 'lossy'), 1, 'after-confirm');
    // No send in a dry run: the channel is lost after the first handler call instead.
    const subscribe = driver.subscribe.bind(driver);
    driver.subscribe = (options, handler) =>
      subscribe(options, async (ds) => {
        await handler(ds);
        void driver.send('lossy', []).catch(() => undefined);
      });
    const r = await replay(driver, { dlqs: ['lossy.dlq'], dryRun: true, idleTimeoutMs: 50 });
    expect(origin).toEqual([]);
    expect(r).toMatchObject({ seen: 10, replayed: 10, duplicates: 0 });
    expect(r.messages).toHaveLength(10);
  });
});

