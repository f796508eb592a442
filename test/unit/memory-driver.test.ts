/**
 * What the memory broker promises beyond the shared conformance suite: instances by URL, retention,
 * flow control, prefetch, failing handlers, private header copies. No real broker involved.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { SEGMENT_SIZE } from '../../src/drivers/memory/segmented-log.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Delivery, Driver, OutgoingMessage } from '../../src/drivers/types.js';
import { DeliveryError, InternalError, isPayqError } from '../../src/errors.js';
import { uniqueName } from '../helpers/brokers.js';
import { gate, waitFor } from '../helpers/wait.js';

let opened: Driver[] = [];

async function open(url = 'memory://unit'): Promise<Driver> {
  const driver = await createDriver(url);
  opened.push(driver);
  await driver.connect();
  return driver;
}

afterEach(async () => {
  await Promise.all(opened.map((d) => d.close()));
  opened = [];
});

function messages(count: number, from = 0): OutgoingMessage[] {
  return Array.from({ length: count }, (_, i) => ({
    key: `k${(from + i) % 7}`,
    type: 'unit_tested',
    value: Buffer.from(String(from + i)),
    headers: { n: String(from + i) },
  }));
}

const n = (d: Delivery): number => Number(d.value.toString());

/** Lets the in-process broker run: every step it takes happens within a few event-loop turns. */
async function turns(count = 10): Promise<void> {
  for (let i = 0; i < count; i++) await new Promise((resolve) => setImmediate(resolve));
}

/** Subscribes and acks everything; returns the values received. */
async function drain(driver: Driver, destination: string, group: string, fromBeginning = true): Promise<number[]> {
  const got: number[] = [];
  await driver.subscribe({ destinations: [destination], group, fromBeginning, prefetch: 1000 }, (batch) => {
    for (const d of batch) {
      got.push(n(d));
      d.ack();
    }
  });
  return got;
}

describe('memory driver', () => {
  it('shares one broker per URL and keeps differently named ones apart', async () => {
    const dest = uniqueName('instances');
    const producer = await open('memory://left');
    const sameBroker = await open('memory://left');
    const otherBroker = await open('memory://right');
    const left = await drain(sameBroker, dest, 'g');
    const right = await drain(otherBroker, dest, 'g');
    await producer.send(dest, messages(3));
    await waitFor(() => left.length === 3);
    await turns();
    expect(right).toEqual([]);
    expect(await producer.brokerVersion()).toBe('payq memory broker');
  });

  it('reports misuse as PayqErrors: before connect, after close, oversized messages', async () => {
    const fresh = await createDriver('memory://unit');
    opened.push(fresh);
    await expect(fresh.send('x', messages(1))).rejects.toBeInstanceOf(InternalError);

    const driver = await open('memory://unit?maxMessageBytes=10');
    const dest = uniqueName('limits');
    const got = await drain(driver, dest, 'g');
    const big = { ...messages(1)[0]!, value: Buffer.alloc(11) };
    const err = await driver.send(dest, [...messages(2), big]).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(DeliveryError);
    expect((err as DeliveryError).exitCode).toBe(4);
    await driver.send(dest, messages(1, 100));
    await waitFor(() => got.length === 1);
    expect(got, 'a rejected batch stores none of its messages').toEqual([100]);

    await driver.close();
    const afterClose = await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 1 }, () => {}).catch((e: unknown) => e);
    expect(isPayqError(afterClose)).toBe(true);
  });

  it('creates destinations on first use and dead-letters into an undeclared <name>.dlq', async () => {
    const driver = await open();
    const dest = uniqueName('autocreate');
    const dead: Delivery[] = [];
    await driver.subscribe({ destinations: [`${dest}.dlq`], group: 'g', fromBeginning: true, prefetch: 10 }, (batch) => {
      for (const d of batch) {
        dead.push(d);
        d.ack();
      }
    });
    await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 10 }, async (batch) => {
      for (const d of batch) await d.deadLetter({ 'payq-dlq-reason': 'unit' });
    });
    await driver.send(dest, messages(2));
    await waitFor(() => dead.length === 2);
    expect(dead.map((d) => d.headers)).toEqual([
      { n: '0', 'payq-dlq-reason': 'unit' },
      { n: '1', 'payq-dlq-reason': 'unit' },
    ]);
  });

  it('starts a new group at the end unless fromBeginning; an existing group keeps its position', async () => {
    const driver = await open();
    const dest = uniqueName('start');
    await driver.send(dest, messages(5));
    const late = await drain(driver, dest, 'late', false);
    const early = await drain(driver, dest, 'early', true);
    await driver.send(dest, messages(1, 5));
    await waitFor(() => early.length === 6 && late.length === 1);
    expect(late).toEqual([5]);
    expect(early).toEqual([0, 1, 2, 3, 4, 5]);
  });

  it('never holds more than prefetch unacked messages per subscriber', async () => {
    const driver = await open();
    const dest = uniqueName('prefetch');
    const held: Delivery[] = [];
    await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 5 }, (batch) => {
      held.push(...batch);
    });
    await driver.send(dest, messages(20));
    await waitFor(() => held.length === 5);
    await turns();
    expect(held.map(n)).toEqual([0, 1, 2, 3, 4]);
    held[0]!.ack();
    held[1]!.ack();
    await waitFor(() => held.length === 7);
    await turns();
    expect(held.length).toBe(7);
  });

  it('hands a failing handler its batch again, flagged redelivered, without unhandled rejections', async () => {
    const driver = await open();
    const dest = uniqueName('throwing');
    const seen: Array<[number, boolean]> = [];
    let failures = 0;
    await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 10 }, (batch) => {
      for (const d of batch) seen.push([n(d), d.redelivered]);
      if (failures++ < 2) throw new Error('handler bug');
      for (const d of batch) d.ack();
    });
    await driver.send(dest, messages(3));
    await waitFor(() => seen.length === 9, 10_000);
    expect(seen).toEqual([
      [0, false], [1, false], [2, false],
      [0, true], [1, true], [2, true],
      [0, true], [1, true], [2, true],
    ]);
  });

  it('gives every delivery its own headers: edits by one consumer or by the producer leak nowhere', async () => {
    const driver = await open();
    const dest = uniqueName('headers');
    const a: Delivery[] = [];
    const b: Delivery[] = [];
    for (const [group, into] of [['a', a], ['b', b]] as const) {
      await driver.subscribe({ destinations: [dest], group, fromBeginning: true, prefetch: 10 }, (batch) => {
        for (const d of batch) {
          d.headers['edited-by'] = group;
          into.push(d);
          d.ack();
        }
      });
    }
    const [message] = messages(1);
    await driver.send(dest, [message!]);
    message!.headers['n'] = 'changed after send';
    await waitFor(() => a.length === 1 && b.length === 1);
    expect(a[0]!.headers).toEqual({ n: '0', 'edited-by': 'a' });
    expect(b[0]!.headers).toEqual({ n: '0', 'edited-by': 'b' });
  });

  it('reads several destinations in one subscription, each in order', async () => {
    const driver = await open();
    const one = uniqueName('multi');
    const two = uniqueName('multi');
    const got = new Map<string, number[]>([[one, []], [two, []]]);
    await driver.subscribe({ destinations: [one, two], group: 'g', fromBeginning: true, prefetch: 7 }, (batch) => {
      for (const d of batch) {
        got.get(d.destination)!.push(n(d));
        d.ack();
      }
    });
    await driver.send(one, messages(50));
    await driver.send(two, messages(50, 1000));
    await waitFor(() => got.get(one)!.length === 50 && got.get(two)!.length === 50);
    expect(got.get(one)).toEqual(Array.from({ length: 50 }, (_, i) => i));
    expect(got.get(two)).toEqual(Array.from({ length: 50 }, (_, i) => 1000 + i));
  });

  it('drops what every group has read, keeps everything while no group exists', async () => {
    const driver = await open();
    const total = SEGMENT_SIZE * 3;
    const kept = uniqueName('retention');
    await driver.send(kept, messages(total));
    const all = await drain(driver, kept, 'first');
    await waitFor(() => all.length === total);

    await driver.send(kept, messages(10, total));
    await waitFor(() => all.length === total + 10);
    const latecomer = await drain(driver, kept, 'second');
    await waitFor(() => latecomer.at(-1) === total + 9);
    // Segments the first group had read were dropped: a new group starts at the oldest retained.
    expect(latecomer.length).toBeLessThan(total);
    expect(latecomer[0]! % SEGMENT_SIZE).toBe(0);
    expect(latecomer).toEqual(Array.from({ length: latecomer.length }, (_, i) => latecomer[0]! + i));
  });

  it('keeps the last N messages for groups that join later with retain=N', async () => {
    const retain = SEGMENT_SIZE * 2 + 10;
    const driver = await open(`memory://${uniqueName('retain')}?retain=${retain}`);
    const total = SEGMENT_SIZE * 6;
    const dest = uniqueName('retained');
    await driver.send(dest, messages(total));
    const all = await drain(driver, dest, 'first');
    await waitFor(() => all.length === total);
    await driver.send(dest, messages(1, total));
    await waitFor(() => all.length === total + 1);
    const latecomer = await drain(driver, dest, 'second');
    await waitFor(() => latecomer.at(-1) === total);
    // At least the last `retain` (a segment's worth more at most), never the read-and-dropped rest.
    expect(latecomer.length).toBeGreaterThanOrEqual(retain + 1);
    expect(latecomer.length).toBeLessThanOrEqual(retain + 1 + SEGMENT_SIZE);
    expect(latecomer).toEqual(Array.from({ length: latecomer.length }, (_, i) => total + 1 - latecomer.length + i));
  });

  it('keeps at most maxLength=N messages, read or not; a group behind them resumes at the oldest kept', async () => {
    const maxLength = SEGMENT_SIZE + 10;
    const driver = await open(`memory://${uniqueName('maxlength')}?maxLength=${maxLength}`);
    const dest = uniqueName('bounded');
    // A group that has read nothing yet, and no group at all: both lose the oldest.
    const slow: number[] = [];
    const release = gate();
    await driver.subscribe({ destinations: [dest], group: 'slow', fromBeginning: true, prefetch: 5 }, async (batch) => {
      await release.promise;
      for (const d of batch) {
        slow.push(n(d));
        d.ack();
      }
    });
    const total = SEGMENT_SIZE * 8;
    for (let i = 0; i < total; i += 100) await driver.send(dest, messages(Math.min(100, total - i), i));
    release.open();
    await waitFor(() => slow.at(-1) === total - 1);
    // The first prefetch it took before the drop, then the last maxLength (a segment more at most).
    expect(slow.slice(0, 5)).toEqual([0, 1, 2, 3, 4]);
    const rest = slow.slice(5);
    expect(rest.length).toBeGreaterThanOrEqual(maxLength);
    expect(rest.length).toBeLessThanOrEqual(maxLength + SEGMENT_SIZE);
    expect(rest).toEqual(Array.from({ length: rest.length }, (_, i) => total - rest.length + i));
    const latecomer = await drain(driver, dest, 'late');
    await waitFor(() => latecomer.at(-1) === total - 1);
    expect(latecomer.length).toBeLessThanOrEqual(maxLength + SEGMENT_SIZE);
  });

  it('has no length limit unless every client of the broker sets one', async () => {
    const name = uniqueName('maxlength-mixed');
    const limited = await open(`memory://${name}?maxLength=0`);
    await open(`memory://${name}`);
    const dest = uniqueName('unbounded');
    const total = SEGMENT_SIZE * 4;
    await limited.send(dest, messages(total));
    const all = await drain(limited, dest, 'g');
    await waitFor(() => all.length === total);
  });

  it('holds sends back while a live group lags more than maxBacklog, and lets them go when it catches up', async () => {
    const driver = await open('memory://unit?maxBacklog=100');
    const dest = uniqueName('flow');
    const release = gate();
    let handled = 0;
    await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 10 }, async (batch) => {
      await release.promise;
      handled += batch.length;
      for (const d of batch) d.ack();
    });
    await driver.send(dest, messages(50));
    let done = false;
    const held = driver.send(dest, messages(200, 50)).then(() => {
      done = true;
    });
    await turns();
    expect(done, 'send resolved although the group lags 240 behind').toBe(false);
    release.open();
    await held;
    expect(handled).toBeGreaterThanOrEqual(250 - 50 - 10);
  });

  it('lets held sends go when the lagging group loses its last subscriber', async () => {
    const driver = await open('memory://unit?maxBacklog=10');
    const dest = uniqueName('flow-close');
    const release = gate();
    const sub = await driver.subscribe({ destinations: [dest], group: 'g', fromBeginning: true, prefetch: 1 }, () => release.promise);
    let done = false;
    const held = driver.send(dest, messages(50)).then(() => {
      done = true;
    });
    await turns();
    expect(done).toBe(false);
    const closing = sub.close();
    release.open(); // the handler returns without acking; nobody in the group consumes any more
    await closing;
    await held;
    expect(done).toBe(true);
  });
});
