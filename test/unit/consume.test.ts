/**
 * The consume core on memory:// in one process: groups and taps, the type filter, --limit
 * (what is past it goes back, not acked), bodies that are not JSON, ack-after-write, idle end,
 * interrupt and a failing writer. Nothing here asserts on time.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { TopologyError } from '../../src/errors.js';
import { consume, decodeDelivery, type ConsumedMessage } from '../../src/core/consume.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, DeliveryHandler, Driver, LinkStatus, OutgoingMessage, SubscribeOptions } from '../../src/drivers/types.js';
import { toMessage } from '../../src/events/codec.js';
import { EventGenerator } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';
import { uniqueName } from '../helpers/brokers.js';

let opened: Driver[] = [];

async function open(): Promise<Driver> {
  const driver = await createDriver('memory://consume-unit');
  opened.push(driver);
  await driver.connect();
  return driver;
}

afterEach(async () => {
  await Promise.all(opened.map((d) => d.close()));
  opened = [];
});

/** Seeded payq events, as produce sends them. */
function events(payments: number, lifecycle = false): OutgoingMessage[] {
  const gen = new EventGenerator({ scenario: loadScenario('checkout'), seed: 11, payments, lifecycle });
  const timing = { publishedUs: '1', startUs: '1' };
  return [...gen].map((e) => toMessage(e, { binding: 'kafka', sourcePrefix: '/payq/checkout', runId: 'unit' }, timing));
}

const raw = (value: Buffer | string, key = 'k'): OutgoingMessage => ({ key, type: 'raw', value: Buffer.from(value), headers: {} });

const IDLE_MS = 150;

/** Consumes until idle, collecting what was handed out. */
async function collect(driver: Driver, options: Partial<Parameters<typeof consume>[0]> & { destinations: string[] }) {
  const printed: ConsumedMessage[] = [];
  const writes: number[] = [];
  const result = await consume(
    { fromBeginning: true, idleTimeoutMs: IDLE_MS, ...options },
    {
      driver,
      onMessages: async (messages) => {
        writes.push(messages.length);
        printed.push(...messages);
      },
    },
  );
  return { result, printed, writes, bodies: printed.map((m) => m.value.toString()) };
}

describe('consume core (memory://)', () => {
  it('reads everything a group has not read yet, in order, and acks it', async () => {
    const driver = await open();
    const dest = uniqueName('all');
    const sent = events(300);
    await driver.send(dest, sent);
    const first = await collect(driver, { destinations: [dest], group: 'readers' });
    expect(first.bodies).toEqual(sent.map((m) => m.value.toString()));
    expect(first.result).toMatchObject({ consumed: 300, printed: 300, filtered: 0, returned: 0, not_json: 0, ended_by: 'idle', tap: false });
    expect(first.result.by_type).toEqual({ order_placed: { consumed: 300, printed: 300 } });
    // One write per delivery batch, not per message.
    expect(first.writes.length).toBeLessThan(300);
    const again = await collect(driver, { destinations: [dest], group: 'readers' });
    expect(again.result.consumed).toBe(0);
  });

  it('a tap takes nothing: the group that comes after still gets every message', async () => {
    const driver = await open();
    const dest = uniqueName('tap');
    const sent = events(50);
    await driver.send(dest, sent);
    const tap = await collect(driver, { destinations: [dest] });
    expect(tap.result).toMatchObject({ printed: 50, tap: true });
    const group = await collect(driver, { destinations: [dest], group: 'workers' });
    expect(group.bodies).toEqual(sent.map((m) => m.value.toString()));
  });

  it('a tap without fromBeginning sees only what is published after it is ready', async () => {
    const driver = await open();
    const dest = uniqueName('tap-new');
    await driver.send(dest, events(5));
    const later = events(8).slice(5);
    const printed: string[] = [];
    const result = await consume(
      { destinations: [dest], fromBeginning: false, idleTimeoutMs: IDLE_MS },
      {
        driver,
        onReady: () => void driver.send(dest, later),
        onMessages: async (messages) => void printed.push(...messages.map((m) => m.value.toString())),
      },
    );
    expect(printed).toEqual(later.map((m) => m.value.toString()));
    expect(result.consumed).toBe(3);
  });

  it('--type prints only those types; the others are read and acked', async () => {
    const driver = await open();
    const dest = uniqueName('types');
    const sent = events(40, true);
    await driver.send(dest, sent);
    const run = await collect(driver, { destinations: [dest], group: 'g', types: new Set(['payment_captured', 'refund_completed']) });
    const expected = sent.filter((m) => m.type === 'payment_captured' || m.type === 'refund_completed');
    expect(expected.length).toBeGreaterThan(0);
    expect(run.bodies).toEqual(expected.map((m) => m.value.toString()));
    expect(run.result.consumed).toBe(sent.length);
    expect(run.result.filtered).toBe(sent.length - expected.length);
    expect(run.result.by_type['payment_captured']).toEqual({ consumed: expected.filter((m) => m.type === 'payment_captured').length, printed: expected.filter((m) => m.type === 'payment_captured').length });
    expect(run.result.by_type['order_placed']).toEqual({ consumed: 40, printed: 0 });
    // Filtered-out messages were acked: the group has nothing left.
    expect((await collect(driver, { destinations: [dest], group: 'g' })).result.consumed).toBe(0);
  });

  it('--limit stops after N printed; the group keeps the rest', async () => {
    const driver = await open();
    const dest = uniqueName('limit');
    const sent = events(100);
    await driver.send(dest, sent);
    const first = await collect(driver, { destinations: [dest], group: 'g', limit: 10, idleTimeoutMs: undefined });
    expect(first.printed).toHaveLength(10);
    expect(first.result).toMatchObject({ consumed: 10, printed: 10, ended_by: 'limit' });
    const rest = await collect(driver, { destinations: [dest], group: 'g' });
    expect([...first.bodies, ...rest.bodies].sort()).toEqual(sent.map((m) => m.value.toString()).sort());
    expect(rest.result.consumed).toBe(90);
  });

  it('never drops a body that is not JSON: it is handed out with its problem', async () => {
    const driver = await open();
    const dest = uniqueName('junk');
    const [good] = events(1);
    await driver.send(dest, [raw('hello, not json'), raw(Buffer.from([0xff, 0xfe, 0x41])), raw(''), raw('[1,2]'), good!]);
    const run = await collect(driver, { destinations: [dest], group: 'g' });
    expect(run.printed.map((m) => m.problem)).toEqual([
      'the body is not JSON',
      'the body is not JSON (not valid UTF-8)',
      'the body is empty',
      undefined,
      undefined,
    ]);
    expect(run.printed[3]!.json).toEqual([1, 2]);
    expect(run.result).toMatchObject({ consumed: 5, printed: 5, not_json: 3 });
    expect(run.result.by_type['(not JSON)']).toEqual({ consumed: 3, printed: 3 });
    expect(run.result.by_type['(no type)']).toEqual({ consumed: 1, printed: 1 });
  });

  it('--type never matches a body that is not JSON, but still reads it', async () => {
    const driver = await open();
    const dest = uniqueName('junk-typed');
    await driver.send(dest, [raw('{"event":"x","payment_id":"p"}'), raw('nope')]);
    const run = await collect(driver, { destinations: [dest], group: 'g', types: new Set(['x']) });
    expect(run.bodies).toEqual(['{"event":"x","payment_id":"p"}']);
    expect(run.result).toMatchObject({ consumed: 2, printed: 1, filtered: 1, not_json: 1 });
  });

  it('reads type and correlation from body fields for events payq did not write', async () => {
    const driver = await open();
    const dest = uniqueName('seed-shape');
    await driver.send(dest, [raw('{"kind":"order_placed","data":{"order_id":123,"user_id":456}}')]);
    const run = await collect(driver, {
      destinations: [dest],
      group: 'g',
      types: new Set(['order_placed']),
      decode: { typeField: 'kind', correlate: 'data.order_id', preferBody: true },
    });
    expect(run.printed).toHaveLength(1);
    expect(run.printed[0]!.event).toMatchObject({ type: 'order_placed', paymentId: '123' });
  });

  it('stops on the abort signal and gives back what it did not print', async () => {
    const driver = await open();
    const dest = uniqueName('abort');
    await driver.send(dest, events(20));
    const controller = new AbortController();
    const result = await consume(
      { destinations: [dest], group: 'g', fromBeginning: true, prefetch: 5 },
      {
        driver,
        signal: controller.signal,
        onMessages: async () => controller.abort(),
      },
    );
    expect(result.ended_by).toBe('interrupted');
    // The batch being written when Ctrl-C came was written, so it was acked.
    expect(result.printed).toBe(5);
    const rest = await collect(driver, { destinations: [dest], group: 'g' });
    expect(rest.result.consumed).toBe(15);
  });

  it('a failing writer stops the run with its error and acks nothing it did not write', async () => {
    const driver = await open();
    const dest = uniqueName('epipe');
    await driver.send(dest, events(20));
    const broken = Object.assign(new Error('write EPIPE'), { code: 'EPIPE' });
    await expect(
      consume({ destinations: [dest], group: 'g', fromBeginning: true }, { driver, onMessages: () => Promise.reject(broken) }),
    ).rejects.toBe(broken);
    expect((await collect(driver, { destinations: [dest], group: 'g' })).result.consumed).toBe(20);
  });
});

/** A driver that records the order of writes and acks, with deliveries the test controls. */
function scriptedDriver(batches: string[][], present: (name: string) => boolean = () => true, replayFromBeginning = true) {
  const log: string[] = [];
  const link: LinkStatus = { connected: true, reconnects: 0, downMs: 0, gone: false };
  let options: SubscribeOptions | undefined;
  const deliveries = (values: string[]): Delivery[] =>
    values.map((v) => ({
      destination: 'd',
      key: undefined,
      value: Buffer.from(v),
      headers: { ce_type: 't' },
      partition: undefined,
      offset: undefined,
      redelivered: false,
      settleable: true,
      ack: () => void log.push(`ack ${v}`),
      nack: () => void log.push(`nack ${v}`),
      deadLetter: () => Promise.reject(new Error('not in this test')),
    }));
  const driver = {
    name: 'scripted',
    url: { redacted: 'scripted://' },
    capabilities: { storedDestinations: true, replayFromBeginning },
    exists: async (names: string[]) => {
      log.push(`exists ${names.join(',')}`);
      return new Set(names.filter(present));
    },
    subscribe: async (o: SubscribeOptions, handler: DeliveryHandler) => {
      options = o;
      const running = (async () => {
        for (const b of batches) await handler(deliveries(b));
      })();
      return { close: () => running.then(() => void log.push('closed')) };
    },
    link: () => ({ ...link }),
  } as unknown as Driver;
  return { driver, log, link, options: () => options };
}

describe('consume core: acks', () => {
  it('acks each message only after its batch was written, and nacks what is past the limit', async () => {
    const { driver, log, options } = scriptedDriver([['"a"', '"b"'], ['"c"', '"d"', '"e"']]);
    const result = await consume(
      { destinations: ['d'], group: 'g', fromBeginning: false, limit: 3 },
      { driver, onMessages: async (ms) => void log.push(`write ${ms.map((m) => m.value.toString()).join(' ')}`) },
    );
    expect(log).toEqual(['exists d', 'write "a" "b"', 'ack "a"', 'ack "b"', 'write "c"', 'ack "c"', 'nack "d"', 'nack "e"', 'closed']);
    expect(result).toMatchObject({ consumed: 3, printed: 3, returned: 2, ended_by: 'limit' });
    expect(options()).toMatchObject({ group: 'g', tap: false, prefetch: 3 });
  });

  it('--requeue holds every message it read and hands them all back before closing, each once', async () => {
    const { driver, log, options } = scriptedDriver([['"a"', '"b"'], ['"c"']]);
    const result = await consume(
      { destinations: ['d'], mode: { kind: 'group', group: 'g', requeue: true }, fromBeginning: false, idleTimeoutMs: 20 },
      { driver, onMessages: async (ms) => void log.push(`write ${ms.map((m) => m.value.toString()).join(' ')}`) },
    );
    expect(log).toEqual(['exists d', 'write "a" "b"', 'write "c"', 'nack "a"', 'nack "b"', 'nack "c"', 'closed']);
    expect(result).toMatchObject({ consumed: 3, printed: 3, requeued: 3, returned: 3, tap: false });
    expect(options()).toMatchObject({ group: 'g', tap: false });
  });

  it('never subscribes to a destination that does not exist: waits for it, then names it (exit 3)', async () => {
    const { driver, log } = scriptedDriver([['"a"']], () => false);
    const err = await consume({ destinations: ['d', 'e'], fromBeginning: false, idleTimeoutMs: 20, startTimeoutMs: 300 }, { driver, onMessages: async () => {} }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(TopologyError);
    expect((err as TopologyError).exitCode).toBe(3);
    expect((err as Error).message).toMatch(/no such destination on scripted:\/\/: d, e \(waited/);
    expect(log.filter((l) => l.startsWith('exists')).length).toBeGreaterThan(1);
    expect(log).not.toContain('closed');
  });

  it('a destination created while it waited is read from its beginning (all it holds is newer)', async () => {
    let checks = 0;
    const { driver, options } = scriptedDriver([], () => ++checks > 2);
    await consume({ destinations: ['d'], fromBeginning: false, idleTimeoutMs: 20, startTimeoutMs: 10_000 }, { driver, onMessages: async () => {} });
    expect(options()).toMatchObject({ fromBeginning: true, tap: true });
    const queue = scriptedDriver([], () => ++checks > 4, false);
    await consume({ destinations: ['d'], fromBeginning: false, idleTimeoutMs: 20, startTimeoutMs: 10_000 }, { driver: queue.driver, onMessages: async () => {} });
    expect(queue.options()).toMatchObject({ fromBeginning: false });
  });

  it('ends when the broker is gone for good, without an idle timeout to wait for: broker-gone, the messages written acked', async () => {
    const { driver, log, link } = scriptedDriver([['"a"', '"b"']]);
    // No idle timeout: without the link's word, this would wait for ever.
    const result = await consume(
      { destinations: ['d'], group: 'g', fromBeginning: false },
      {
        driver,
        onMessages: async (ms) => {
          log.push(`write ${ms.map((m) => m.value.toString()).join(' ')}`);
          Object.assign(link, { connected: false, downMs: 61_000, gone: true });
        },
      },
    );
    expect(log).toEqual(['exists d', 'write "a" "b"', 'ack "a"', 'ack "b"', 'closed']);
    expect(result).toMatchObject({ consumed: 2, printed: 2, returned: 0, ended_by: 'broker-gone' });
  });

  it('a broker away is not idleness: the idle timeout counts from when it is back', async () => {
    const { driver, log, link } = scriptedDriver([['"a"']]);
    let asked = 0;
    const linkOf = driver.link.bind(driver);
    driver.link = () => {
      asked++;
      return linkOf();
    };
    let ended = false;
    const consuming = consume(
      { destinations: ['d'], group: 'g', fromBeginning: false, idleTimeoutMs: 20 },
      {
        driver,
        onMessages: async (ms) => {
          log.push(`write ${ms.map((m) => m.value.toString()).join(' ')}`);
          // The broker goes away right after the first batch.
          Object.assign(link, { connected: false, downMs: 1 });
        },
      },
    ).finally(() => (ended = true));
    // The loop looked at the link a good many idle timeouts' worth while the broker was away.
    const from = asked;
    while (asked < from + 10 && !ended) await new Promise((r) => setTimeout(r, 5));
    expect(ended).toBe(false);
    Object.assign(link, { connected: true, reconnects: 1 });
    const result = await consuming;
    expect(result).toMatchObject({ consumed: 1, printed: 1, ended_by: 'idle' });
    expect(log).toEqual(['exists d', 'write "a"', 'ack "a"', 'closed']);
  });

  it('subscribes as a tap when no group is given', async () => {
    const { driver, options } = scriptedDriver([]);
    const result = await consume({ destinations: ['d'], fromBeginning: true, idleTimeoutMs: 20 }, { driver, onMessages: async () => {} });
    expect(options()).toMatchObject({ tap: true, fromBeginning: true, destinations: ['d'] });
    expect(result).toMatchObject({ tap: true, consumed: 0, ended_by: 'idle' });
  });
});

describe('decodeDelivery', () => {
  const delivery = (value: Buffer): Delivery => ({
    destination: 'd',
    key: 'k',
    value,
    headers: {},
    partition: 0,
    offset: '7',
    redelivered: true,
    settleable: true,
    ack() {},
    nack() {},
    deadLetter: async () => {},
  });

  it('keeps JSON that is not an object as JSON, and marks bodies that are not JSON', () => {
    expect(decodeDelivery(delivery(Buffer.from('"just a string"')))).toMatchObject({ json: 'just a string', problem: undefined });
    expect(decodeDelivery(delivery(Buffer.from('{"a":')))).toMatchObject({ json: undefined, problem: 'the body is not JSON' });
    // Bytes that are not UTF-8 are not JSON text, even when the replacement characters would parse.
    expect(decodeDelivery(delivery(Buffer.from([0x22, 0xff, 0x22])))).toMatchObject({ json: undefined, problem: 'the body is not JSON (not valid UTF-8)' });
  });
});
