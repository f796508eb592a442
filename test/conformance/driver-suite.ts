/**
 * The one conformance suite every driver passes (Watermill's TestPubSub, for payq): a table of
 * cases (CASES), each naming what it needs (NEEDS: the driver's declared capabilities, what its
 * URL declares, what the test file says of the transport); a case whose needs are not met is
 * skipped with the reason. Drivers are created through the registry, like the CLI does. Each
 * driver has a short test file calling defineDriverConformance; cases are numbered by their
 * place in the table.
 *
 * Every case uses fresh destination and group names, waits for conditions (never for time), and
 * where it must prove that something did NOT arrive, it sends a marker on a one-partition
 * destination and checks what came before it.
 *
 * Everything a case creates on the broker (destinations with their `.dlq`, Kafka groups) is named
 * through `destinationName` / `groupName` and deleted in afterAll, so runs leave nothing behind.
 */
import net from 'node:net';
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest';
import { createDriver, descriptorFor } from '../../src/drivers/registry.js';
import type {
  Delivery,
  DeliveryHandler,
  Driver,
  DriverCapabilities,
  DriverTuning,
  OutgoingMessage,
  Subscription,
} from '../../src/drivers/types.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { isPayqError } from '../../src/errors.js';
import { uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { gate, sleep, waitFor, withTimeout } from '../helpers/wait.js';

export interface ConformanceOptions {
  /** Skip the whole block: a real broker that is not running (brokerAvailable returned false). */
  skip?: boolean;
  /**
   * Messages left unacked by a closed subscription come back flagged `redelivered` to the next
   * subscriber. True unless the broker has no such flag and a new consumer cannot know (Kafka
   * resuming from a committed offset). A nacked message is always flagged: the driver knows.
   */
  flagsReturnedMessages?: boolean;
  /**
   * Messages a closed subscription left unsettled go back to its group. True unless the
   * transport keeps nothing at all (ZeroMQ: not even while the process lives, unlike memory://,
   * so the `persistence` capability can't tell).
   */
  returnsUnsettled?: boolean;
  /**
   * The unreachable-address case's URL for a port nothing listens on. Default: the suite's URL with that port.
   * A brokerless driver that would itself listen there (ZeroMQ hosts its hub) passes one that
   * only joins.
   */
  unreachableUrl?: (closedPort: number) => string;
}

const TYPE = 'conformance_checked';
/** Non-ASCII on purpose: bodies and header values are UTF-8 end to end. */
const NOTE = 'Zahlung über 12,50 € — 支付成功 ✓ Ω';
const DLQ_REASON = 'payq-dlq-reason';

interface Body {
  event: string;
  id: string;
  key: string;
  seq: number;
  index: number;
  note: string;
}

/** `count` messages with ids `<prefix>-<i>` over `keys` keys; `seq` counts per key from 0. */
function makeMessages(prefix: string, count: number, keys = count): OutgoingMessage[] {
  const perKey = new Map<string, number>();
  const out: OutgoingMessage[] = [];
  for (let i = 0; i < count; i++) {
    const key = `${prefix}-k${i % keys}`;
    const seq = perKey.get(key) ?? 0;
    perKey.set(key, seq + 1);
    const id = `${prefix}-${i}`;
    const body: Body = { event: TYPE, id, key, seq, index: i, note: NOTE };
    out.push({
      key,
      type: TYPE,
      value: Buffer.from(JSON.stringify(body), 'utf8'),
      headers: { ce_id: id, 'payq-conformance-note': NOTE },
    });
  }
  return out;
}

function bodyOf(d: Delivery): Body {
  return JSON.parse(d.value.toString('utf8')) as Body;
}

function idOf(d: Delivery): string {
  return bodyOf(d).id;
}

function idsOf(messages: OutgoingMessage[]): string[] {
  return messages.map((m) => m.headers['ce_id']!);
}

/** What is missing from / extra in `got` compared with `want`, for readable failures. */
function setDiff(got: Iterable<string>, want: Iterable<string>): { missing: string[]; extra: string[] } {
  const g = new Set(got);
  const w = new Set(want);
  return {
    missing: [...w].filter((x) => !g.has(x)).sort(),
    extra: [...g].filter((x) => !w.has(x)).sort(),
  };
}

async function sendAll(driver: Driver, destination: string, messages: OutgoingMessage[], batchSize: number, inFlight = 1): Promise<void> {
  const batches: OutgoingMessage[][] = [];
  for (let i = 0; i < messages.length; i += batchSize) batches.push(messages.slice(i, i + batchSize));
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < batches.length) await driver.send(destination, batches[next++]!);
  };
  await Promise.all(Array.from({ length: Math.max(1, inFlight) }, worker));
}

/** Deliveries received by one subscription, in arrival order. */
class Received {
  readonly deliveries: Delivery[] = [];
  readonly ids = new Set<string>();

  add(d: Delivery): string {
    const id = idOf(d);
    this.deliveries.push(d);
    this.ids.add(id);
    return id;
  }

  count(id: string): number {
    return this.deliveries.filter((d) => idOf(d) === id).length;
  }

  has(id: string): boolean {
    return this.ids.has(id);
  }
}

function describeError(err: unknown): string {
  if (err instanceof Error) return `${err.constructor.name}: ${err.message}`;
  return String(err);
}

/** A loopback port nothing listens on: bound, then released. */
async function closedPort(): Promise<number> {
  const server = net.createServer();
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const { port } = server.address() as net.AddressInfo;
  await new Promise<void>((resolve) => server.close(() => resolve()));
  return port;
}

/** What a case may need: the driver's declared capabilities, its URL's, and the test file's word. */
export interface Features extends DriverCapabilities {
  /** Another process reaches the broker at the URL's address (false: memory://, in process). */
  sharedAcrossProcesses: boolean;
  flagsReturnedMessages: boolean;
  returnsUnsettled: boolean;
}

/** One need of a case: met when `has` says so, else the case is skipped saying `otherwise`. */
interface Need {
  has: (f: Features) => boolean;
  otherwise: string;
}

const NEEDS = {
  returnsUnsettled: { has: (f) => f.returnsUnsettled, otherwise: 'the transport keeps no messages to give back' },
  ordering: { has: (f) => f.ordering !== 'none', otherwise: 'the driver declares no ordering' },
  consumerGroups: { has: (f) => f.consumerGroups, otherwise: 'the driver has no consumer groups' },
  storedDestinations: { has: (f) => f.storedDestinations, otherwise: 'destinations are only topic names here: nothing to look up' },
  unstoredDestinations: { has: (f) => !f.storedDestinations, otherwise: 'the broker stores its destinations (the exists case covers them)' },
  refusesMissing: {
    has: (f) => !f.createsOnSubscribe,
    otherwise: 'the driver creates on subscribe, in process (types.ts): readers check with exists first',
  },
  address: { has: (f) => f.sharedAcrossProcesses, otherwise: 'the broker lives in this process: it has no address' },
} satisfies Record<string, Need>;

/** What a case runs with: the suite's helpers, and what the driver declared. */
interface Suite {
  name: string;
  url: string;
  options: ConformanceOptions;
  caps: Features;
  tuning: DriverTuning;
  flagsReturnedMessages: boolean;
  returnsUnsettled: boolean;
  /** A new driver of the suite's URL, connected; closed after the case. */
  open(): Promise<Driver>;
  /** A fresh destination name, deleted (with its `.dlq`) after the suite. */
  destinationName(prefix: string): string;
  /** A fresh consumer group name, deleted after the suite where groups are broker state (Kafka). */
  groupName(): string;
  /** Subscribes with the suite's defaults; `handle` decides per batch (default: ack all). */
  subscribe(driver: Driver, destination: string, group: string, received: Received, handle?: DeliveryHandler, prefetch?: number): Promise<Subscription>;
  /** Sends a marker on `destination` and waits until `received` has it (see the header comment). */
  sendMarker(driver: Driver, destination: string, received: Received, prefix: string): Promise<string>;
  batchSize(): number;
  partitionsFor(n: number): number | undefined;
}

interface ConformanceCase {
  title: string;
  needs?: Need[];
  run(suite: Suite): Promise<void>;
}

const CASES: ConformanceCase[] = [
  {
    title: 'round trip: 1000 messages arrive once each with key, body and headers intact',
    run: async ({ open, destinationName, groupName, subscribe, batchSize, partitionsFor, tuning }) => {
      const producer = await open();
      const consumer = await open();
      const dest = destinationName('roundtrip');
      await producer.declare([{ name: dest, partitions: partitionsFor(3) }]);
      const received = new Received();
      await subscribe(consumer, dest, groupName(), received, undefined, 200);

      const messages = makeMessages('rt', 1000, 50);
      await sendAll(producer, dest, messages, batchSize(), tuning.sendMaxInFlight);
      await waitFor(() => received.ids.size >= messages.length, 30_000, () => `1000 messages, got ${received.ids.size}`);

      expect(setDiff(received.ids, idsOf(messages))).toEqual({ missing: [], extra: [] });
      const sent = new Map(messages.map((m) => [m.headers['ce_id']!, m]));
      for (const d of received.deliveries) {
        const want = sent.get(idOf(d))!;
        expect(d.destination).toBe(dest);
        expect(d.key).toBe(want.key);
        expect(d.value.equals(want.value), `body of ${idOf(d)} is byte-identical`).toBe(true);
        expect(bodyOf(d).note).toBe(NOTE);
        expect(d.headers).toMatchObject(want.headers);
      }
    },
  },
  {
    title: 'headers survive with exact names and string values',
    run: async ({ open, destinationName, groupName, subscribe, partitionsFor }) => {
      const driver = await open();
      const dest = destinationName('headers');
      await driver.declare([{ name: dest, partitions: partitionsFor(1) }]);
      const received = new Received();
      await subscribe(driver, dest, groupName(), received);

      const headers = {
        ce_specversion: '1.0',
        ce_id: 'hdr-0',
        ce_type: 'payment_captured',
        ce_source: '/payq/conformance',
        ce_time: '2024-05-01T12:34:56.789Z',
        'content-type': 'application/json; charset=utf-8',
        traceparent: '00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01',
        'payq-published-us': '1714566896789123',
        'payq-started-us': '0001714566896000000',
        'payq-numeric-looking': '007',
        'payq-boolean-looking': 'true',
        'payq-utf8': NOTE,
        'payq-spaces': '  padded value  ',
        'payq-empty': '',
      };
      const [message] = makeMessages('hdr', 1);
      await driver.send(dest, [{ ...message!, headers }]);
      await waitFor(() => received.has('hdr-0'), 30_000, 'the message with headers');

      const got = received.deliveries[0]!.headers;
      for (const [k, v] of Object.entries(headers)) {
        expect({ header: k, value: got[k] }).toEqual({ header: k, value: v });
      }
    },
  },
  {
    title: 'ack/nack: a nacked message comes again; acked ones never do after re-subscribing',
    run: async ({ open, destinationName, groupName, subscribe, sendMarker, batchSize, partitionsFor }) => {
      const producer = await open();
      const consumer = await open();
      const dest = destinationName('acknack');
      const group = groupName();
      await producer.declare([{ name: dest, partitions: partitionsFor(1) }]);
      const messages = makeMessages('an', 10);
      const target = 'an-3';
      const received = new Received();
      let nacked = false;
      const sub = await subscribe(consumer, dest, group, received, (batch) => {
        for (const d of batch) {
          const id = received.add(d);
          if (id === target && !nacked) {
            nacked = true;
            d.nack();
          } else {
            d.ack();
          }
        }
      });
      await sendAll(producer, dest, messages, batchSize());
      await waitFor(
        () => received.count(target) >= 2 && received.ids.size === messages.length,
        30_000,
        () => `the nacked message twice and all 10 (got ${received.ids.size}, target ${received.count(target)} times)`,
      );

      const deliveriesOfTarget = received.deliveries.filter((d) => idOf(d) === target);
      expect(deliveriesOfTarget[0]!.redelivered, 'first delivery is not flagged redelivered').toBe(false);
      expect(deliveriesOfTarget[1]!.redelivered, 'the nacked message comes back flagged redelivered').toBe(true);
      await sub.close();

      const again = new Received();
      await subscribe(await open(), dest, group, again);
      const marker = await sendMarker(producer, dest, again, 'an');
      expect([...again.ids].filter((id) => id !== marker), 'acked messages delivered again').toEqual([]);
    },
  },
  {
    title: 'unacked messages come back to a new subscriber of the group after the subscription closes',
    needs: [NEEDS.returnsUnsettled],
    run: async ({ open, destinationName, groupName, subscribe, batchSize, partitionsFor, flagsReturnedMessages }) => {
      const producer = await open();
      const dest = destinationName('unacked');
      const group = groupName();
      await producer.declare([{ name: dest, partitions: partitionsFor(1) }]);
      const messages = makeMessages('ua', 20);

      const first = new Received();
      const crashing = await open();
      const held: Delivery[] = [];
      const sub = await subscribe(crashing, dest, group, first, (batch) => {
        for (const d of batch) first.add(d); // never settled: the consumer "crashes"
        held.push(...batch);
      }, 50);
      await sendAll(producer, dest, messages, batchSize());
      await waitFor(() => first.ids.size === messages.length, 30_000, () => `20 unacked deliveries, got ${first.ids.size}`);
      expect(held.filter((d) => !d.settleable).map(idOf), 'deliveries of a live subscription not settleable').toEqual([]);
      await sub.close();
      // Given back with the subscription: settling them now would reach no one (types.ts, settleable).
      expect(held.filter((d) => d.settleable).map(idOf), 'deliveries still settleable after close').toEqual([]);

      const second = new Received();
      await subscribe(await open(), dest, group, second);
      await waitFor(() => second.ids.size >= messages.length, 30_000, () => `20 redeliveries, got ${second.ids.size}`);
      expect(setDiff(second.ids, idsOf(messages))).toEqual({ missing: [], extra: [] });
      if (flagsReturnedMessages) {
        expect(second.deliveries.filter((d) => !d.redelivered).map(idOf), 'redeliveries not flagged').toEqual([]);
      }
    },
  },
  {
    title: 'ordering: 500 messages over 5 keys arrive in send order per key (per destination where declared)',
    needs: [NEEDS.ordering],
    run: async ({ open, destinationName, groupName, subscribe, partitionsFor, caps }) => {
      const producer = await open();
      const consumer = await open();
      const dest = destinationName('ordering');
      await producer.declare([{ name: dest, partitions: partitionsFor(3) }]);
      const received = new Received();
      await subscribe(consumer, dest, groupName(), received, undefined, 50);

      const messages = makeMessages('ord', 500, 5);
      // One batch at a time: send order is then well defined.
      await sendAll(producer, dest, messages, 50, 1);
      await waitFor(() => received.ids.size >= messages.length, 30_000, () => `500 messages, got ${received.ids.size}`);

      const firstSeen: Body[] = [];
      const seen = new Set<string>();
      for (const d of received.deliveries) {
        const body = bodyOf(d);
        if (!seen.has(body.id)) {
          seen.add(body.id);
          firstSeen.push(body);
        }
      }
      const perKey = new Map<string, number[]>();
      for (const b of firstSeen) perKey.set(b.key, [...(perKey.get(b.key) ?? []), b.seq]);
      expect(perKey.size).toBe(5);
      for (const [key, seqs] of perKey) {
        expect({ key, seqs }).toEqual({ key, seqs: Array.from({ length: 100 }, (_, i) => i) });
      }
      if (caps.ordering === 'per-destination') {
        expect(firstSeen.map((b) => b.index)).toEqual(Array.from({ length: 500 }, (_, i) => i));
      }
    },
  },
  {
    title: 'consumer groups: two subscribers of a group share the messages; another group gets them all',
    needs: [NEEDS.consumerGroups],
    run: async ({ open, destinationName, groupName, subscribe, batchSize, partitionsFor, caps }) => {
      const producer = await open();
      const dest = destinationName('groups');
      const group = groupName();
      await producer.declare([{ name: dest, partitions: partitionsFor(3) }]);
      const a = new Received();
      const b = new Received();
      await subscribe(await open(), dest, group, a, undefined, 10);
      await subscribe(await open(), dest, group, b, undefined, 10);

      const messages = makeMessages('grp', 300);
      await sendAll(producer, dest, messages, batchSize());
      const union = (): Set<string> => new Set([...a.ids, ...b.ids]);
      await waitFor(() => union().size >= messages.length, 30_000, () => `300 messages over two subscribers, got ${union().size}`);
      // Only makes a late duplicate more likely to be seen; it can't make the case fail wrongly.
      await sleep(300);

      expect(setDiff(union(), idsOf(messages))).toEqual({ missing: [], extra: [] });
      const all = [...a.deliveries, ...b.deliveries].map(idOf);
      expect(all.filter((id, i) => all.indexOf(id) !== i), 'duplicates within the group').toEqual([]);
      expect({ a: a.deliveries.length > 0, b: b.deliveries.length > 0 }, 'both subscribers got messages').toEqual({ a: true, b: true });

      if (caps.replayFromBeginning) {
        const other = new Received();
        await subscribe(await open(), dest, groupName(), other);
        await waitFor(() => other.ids.size >= messages.length, 30_000, () => `300 messages for a second group, got ${other.ids.size}`);
        expect(setDiff(other.ids, idsOf(messages))).toEqual({ missing: [], extra: [] });
      }
    },
  },
  {
    title: 'dead-lettering moves the message to <dest>.dlq with its body, headers and the extra header',
    run: async ({ open, destinationName, groupName, subscribe, sendMarker, batchSize, partitionsFor, caps }) => {
      const producer = await open();
      const consumer = await open();
      const dest = destinationName('deadletter');
      const dlq = `${dest}.dlq`;
      const group = groupName();
      await producer.declare([{ name: dest, partitions: partitionsFor(1), deadLetter: true }]);
      const messages = makeMessages('dl', 3);
      const target = messages[1]!;
      const targetId = target.headers['ce_id']!;

      const dead = new Received();
      await subscribe(await open(), dlq, groupName(), dead);
      const received = new Received();
      const errors: unknown[] = [];
      const sub = await subscribe(consumer, dest, group, received, async (batch) => {
        for (const d of batch) {
          const id = received.add(d);
          if (id === targetId) {
            await d.deadLetter({ [DLQ_REASON]: 'test' }).catch((err: unknown) => errors.push(err));
          } else {
            d.ack();
          }
        }
      });
      await sendAll(producer, dest, messages, batchSize());
      await waitFor(() => dead.has(targetId), 30_000, `${targetId} on ${dlq}`);
      expect(errors.map(describeError), 'deadLetter() errors').toEqual([]);

      const d = dead.deliveries.find((x) => idOf(x) === targetId)!;
      expect(d.destination).toBe(dlq);
      expect(d.value.equals(target.value), 'dead letter body is byte-identical').toBe(true);
      expect(d.headers).toMatchObject({ ...target.headers, [DLQ_REASON]: 'test' });
      if (caps.nativeDeadLetter) expect(Object.keys(d.headers)).toContain('x-death');
      expect(dead.ids.size, 'only the dead-lettered message is on the DLQ').toBe(1);

      await sub.close();
      const again = new Received();
      await subscribe(await open(), dest, group, again);
      const marker = await sendMarker(producer, dest, again, 'dl');
      expect([...again.ids].filter((id) => id !== marker), 'settled messages delivered again').toEqual([]);
    },
  },
  {
    title: 'close while a handler runs: close waits, acked stay acked, the rest is redelivered',
    run: async ({ open, destinationName, groupName, subscribe, sendMarker, batchSize, partitionsFor, returnsUnsettled }) => {
      const producer = await open();
      const consumer = await open();
      const dest = destinationName('closing');
      const group = groupName();
      await producer.declare([{ name: dest, partitions: partitionsFor(1) }]);
      const messages = makeMessages('cl', 10);

      const entered = gate();
      const release = gate();
      const acked: string[] = [];
      let calls = 0;
      let handlerDone = false;
      const first = new Received();
      const sub = await subscribe(consumer, dest, group, first, async (batch) => {
        if (++calls > 1) return; // after close was asked for, settle nothing more
        for (const d of batch) first.add(d);
        // Ack a prefix (in delivery order, so offset-committing brokers can keep it too), block,
        // then ack one more while close() is already waiting.
        const before = Math.floor(batch.length / 2);
        for (const d of batch.slice(0, before)) {
          d.ack();
          acked.push(idOf(d));
        }
        entered.open();
        await release.promise;
        const late = batch[before];
        if (late) {
          late.ack();
          acked.push(idOf(late));
        }
        handlerDone = true;
      }, 10);
      await sendAll(producer, dest, messages, batchSize());
      await withTimeout(entered.promise, 30_000, 'the first handler call');

      let closed = false;
      const closing = sub.close().then(() => {
        closed = true;
      });
      await sleep(200);
      expect(closed, 'close() resolved while the handler was still running').toBe(false);
      release.open();
      await withTimeout(closing, 15_000, 'close() after the handler finished');
      expect(handlerDone).toBe(true);

      const again = new Received();
      await subscribe(await open(), dest, group, again);
      const marker = await sendMarker(producer, dest, again, 'cl');
      const redelivered = [...again.ids].filter((id) => id !== marker);
      // Without persistence the unsettled ones are gone; acked ones must not come back either way.
      const want = returnsUnsettled ? idsOf(messages).filter((id) => !acked.includes(id)) : [];
      expect(setDiff(redelivered, want), `redelivered after close (acked: ${acked.join(', ')})`).toEqual({ missing: [], extra: [] });
    },
  },
  {
    title: 'send after close() rejects with a PayqError',
    run: async ({ open, destinationName }) => {
      const driver = await open();
      const dest = destinationName('closed');
      await driver.declare([{ name: dest }]);
      await driver.close();
      const outcome = await driver.send(dest, makeMessages('closed', 1)).then(
        () => 'resolved',
        (err: unknown) => err,
      );
      expect(outcome, 'send after close() must reject').not.toBe('resolved');
      expect(isPayqError(outcome), `rejected with a PayqError, got ${describeError(outcome)}`).toBe(true);
    },
  },
  {
    title: 'taps: each sees every message, a group still gets all of them, a tap on <dest>.dlq sees dead letters',
    run: async ({ open, destinationName, groupName, subscribe, batchSize, partitionsFor, caps }) => {
      const producer = await open();
      const dest = destinationName('tap');
      const dlq = `${dest}.dlq`;
      await producer.declare([{ name: dest, partitions: partitionsFor(3), deadLetter: true }]);
      const messages = makeMessages('tap', 200, 20);
      const target = messages[7]!;
      const targetId = target.headers['ce_id']!;

      // Both taps name the same group: `group` must be ignored, or they would share the messages.
      const sharedTapGroup = groupName();
      /** A tap from now on (RabbitMQ cannot replay), acking what it sees. */
      const tap = async (destination: string, received: Received, handle?: DeliveryHandler): Promise<Subscription> =>
        (await open()).subscribe({ destinations: [destination], group: sharedTapGroup, fromBeginning: false, prefetch: 50, tap: true }, async (batch) => {
          if (handle) return handle(batch);
          for (const d of batch) {
            received.add(d);
            d.ack();
          }
        });
      const tapA = new Received();
      const tapB = new Received();
      const dead = new Received();
      const tapDeadLetter: unknown[] = [];
      await tap(dest, tapA);
      await tap(dest, tapB, async (batch) => {
        for (const d of batch) {
          const id = tapB.add(d);
          // A tap only watches: dead-lettering its copy must fail, and the message stays its own to ack.
          if (id === targetId) tapDeadLetter.push(await d.deadLetter({ [DLQ_REASON]: 'from-a-tap' }).then(() => 'resolved', (err: unknown) => err));
          d.ack();
        }
      });
      await tap(dlq, dead);

      const group = new Received();
      const errors: unknown[] = [];
      await subscribe(await open(), dest, groupName(), group, async (batch) => {
        for (const d of batch) {
          const id = group.add(d);
          if (id === targetId) await d.deadLetter({ [DLQ_REASON]: 'test' }).catch((err: unknown) => errors.push(err));
          else d.ack();
        }
      });

      await sendAll(producer, dest, messages, batchSize());
      const all = idsOf(messages);
      await waitFor(
        () => tapA.ids.size >= all.length && tapB.ids.size >= all.length && group.ids.size >= all.length && dead.has(targetId),
        30_000,
        () => `200 messages each on two taps and the group, and ${targetId} on the DLQ tap (tap A ${tapA.ids.size}, tap B ${tapB.ids.size}, group ${group.ids.size}, DLQ tap ${dead.ids.size})`,
      );
      expect(errors.map(describeError), 'deadLetter() errors').toEqual([]);
      expect(setDiff(tapA.ids, all), 'tap A sees every message').toEqual({ missing: [], extra: [] });
      expect(setDiff(tapB.ids, all), 'tap B sees every message').toEqual({ missing: [], extra: [] });
      expect(setDiff(group.ids, all), 'the group still gets every message').toEqual({ missing: [], extra: [] });
      for (const d of tapA.deliveries) expect(d.destination).toBe(dest);
      const seen = tapA.deliveries.find((d) => idOf(d) === targetId)!;
      expect(seen.key).toBe(target.key);
      expect(seen.value.equals(target.value), 'a tap gets the body byte-identical').toBe(true);
      expect(seen.headers).toMatchObject(target.headers);

      expect(tapDeadLetter.map((outcome) => (outcome === 'resolved' ? outcome : isPayqError(outcome))), 'deadLetter() from a tap rejects with a PayqError').toEqual([true]);
      const d = dead.deliveries.find((x) => idOf(x) === targetId)!;
      expect(d.destination).toBe(dlq);
      expect(d.value.equals(target.value), 'dead letter body seen by the DLQ tap is byte-identical').toBe(true);
      expect(d.headers).toMatchObject({ ...target.headers, [DLQ_REASON]: 'test' });
      if (caps.nativeDeadLetter) expect(Object.keys(d.headers)).toContain('x-death');
      // Makes a stray second dead letter (e.g. one from tap B) more likely to be seen first.
      await sleep(300);
      expect([...dead.ids], 'the DLQ tap sees only the dead-lettered message').toEqual([targetId]);
    },
  },
  {
    title: 'exists is passive: a missing name stays missing; declare creates payq\'s layout once, and again changes nothing',
    needs: [NEEDS.storedDestinations],
    run: async ({ open, destinationName, partitionsFor }) => {
      const driver = await open();
      const dest = destinationName('exists');
      const before = await driver.exists([dest, `${dest}.dlq`]);
      expect([...before]).toEqual([]);
      // Asking twice creates nothing (Kafka metadata, RabbitMQ passive declares, NATS lookups).
      expect([...(await driver.exists([dest]))]).toEqual([]);
      expect(await driver.declare([{ name: dest, partitions: partitionsFor(2), deadLetter: true }]), 'no notice for payq\'s own new layout').toEqual([]);
      expect([...(await driver.exists([dest, `${dest}.dlq`, `${dest}.other`]))].sort()).toEqual([dest, `${dest}.dlq`]);
      expect(await driver.declare([{ name: dest, partitions: partitionsFor(2), deadLetter: true }]), 'declaring its own layout again').toEqual([]);
    },
  },
  {
    title: 'subscribing to a missing destination fails with exit code 3 and creates nothing',
    needs: [NEEDS.storedDestinations, NEEDS.refusesMissing],
    run: async ({ open, destinationName, groupName }) => {
      const driver = await open();
      const dest = destinationName('missing');
      for (const tap of [false, true]) {
        const outcome = await driver.subscribe({ destinations: [dest], group: groupName(), fromBeginning: false, prefetch: 10, tap }, () => {}).then(
          async (sub) => {
            await sub.close();
            return 'subscribed';
          },
          (err: unknown) => err,
        );
        expect({ tap, error: describeError(outcome), exitCode: (outcome as { exitCode?: unknown }).exitCode }).toMatchObject({ exitCode: 3 });
      }
      expect([...(await driver.exists([dest, `${dest}.dlq`]))]).toEqual([]);
    },
  },
  {
    title: 'connecting to an unreachable address rejects with exit code 3 within 15 s',
    needs: [NEEDS.address],
    run: async ({ url, options }) => {
      const parsed = parseBrokerUrl(url);
      const port = await closedPort();
      const user =
        parsed.username === undefined
          ? ''
          : `${encodeURIComponent(parsed.username)}${parsed.password === undefined ? '' : `:${encodeURIComponent(parsed.password)}`}@`;
      const path = parsed.path === '' ? '' : `/${encodeURIComponent(parsed.path)}`;
      const driver = await createDriver(options.unreachableUrl?.(port) ?? `${parsed.protocol}//${user}127.0.0.1:${port}${path}`);
      const outcome = await withTimeout(
        driver.connect().then(
          () => 'resolved',
          (err: unknown) => err,
        ),
        15_000,
        'connect() to an unreachable broker',
      );
      // Closing a driver whose connect failed must not hang (a failure to close is tolerated).
      await withTimeout(driver.close().catch(() => undefined), 10_000, 'close() after a failed connect');
      expect(outcome, 'connect() must reject').not.toBe('resolved');
      expect({ error: describeError(outcome), exitCode: (outcome as { exitCode?: unknown }).exitCode }).toMatchObject({ exitCode: 3 });
    },
  },

  {
    title: 'exists sees what another driver of the URL declared, and only the names asked for',
    needs: [NEEDS.storedDestinations],
    run: async ({ open, destinationName, partitionsFor }) => {
      const declarer = await open();
      const checker = await open();
      const dest = destinationName('exists-other');
      const missing = destinationName('exists-missing');
      await declarer.declare([{ name: dest, partitions: partitionsFor(1) }]);
      expect([...(await checker.exists([dest, missing]))]).toEqual([dest]);
      expect([...(await checker.exists([]))]).toEqual([]);
      expect([...(await checker.exists([missing]))]).toEqual([]);
    },
  },
  {
    title: 'exists refuses with a ConfigError (exit 2) where destinations are not stored',
    needs: [NEEDS.unstoredDestinations],
    run: async ({ open, destinationName }) => {
      const driver = await open();
      const outcome = await driver.exists([destinationName('unstored')]).then(
        () => 'answered',
        (err: unknown) => err,
      );
      expect({ error: describeError(outcome), exitCode: (outcome as { exitCode?: unknown }).exitCode }).toMatchObject({ exitCode: 2 });
    },
  },
  {
    title: 'brokerVersion: one line naming the broker, the same when asked again, without the URL\'s password',
    run: async ({ open, url }) => {
      const driver = await open();
      const version = await driver.brokerVersion();
      expect(typeof version, 'every driver here tells its broker and version').toBe('string');
      expect(version!.trim(), 'a version text').not.toBe('');
      expect(version, 'one line').not.toMatch(/[\r\n]/);
      const { password } = parseBrokerUrl(url);
      if (password !== undefined && password !== '') expect(version).not.toContain(password);
      expect(await driver.brokerVersion()).toBe(version);
    },
  },
];

export function defineDriverConformance(name: string, url: string, options: ConformanceOptions = {}): void {
  const flagsReturnedMessages = options.flagsReturnedMessages ?? true;
  const returnsUnsettled = options.returnsUnsettled ?? true;
  const descriptor = descriptorFor(parseBrokerUrl(url).scheme)!;

  describe.skipIf(options.skip ?? false)(`driver conformance: ${name}`, () => {
    let opened: Driver[] = [];
    const unhandled: unknown[] = [];
    const onUnhandled = (reason: unknown): void => {
      unhandled.push(reason);
    };
    const createdDestinations = new Set<string>();
    const createdGroups = new Set<string>();

    const suite: Suite = {
      name,
      url,
      options,
      flagsReturnedMessages,
      returnsUnsettled,
      // Replaced in beforeAll by what a connected driver says of itself.
      caps: { ...descriptor.capabilities, sharedAcrossProcesses: descriptor.url.sharedAcrossProcesses, flagsReturnedMessages, returnsUnsettled },
      tuning: descriptor.tuning,
      async open() {
        const driver = await createDriver(url);
        opened.push(driver);
        await driver.connect();
        return driver;
      },
      destinationName(prefix) {
        const destination = uniqueName(prefix);
        createdDestinations.add(destination);
        return destination;
      },
      groupName() {
        const group = uniqueName('group');
        createdGroups.add(group);
        return group;
      },
      subscribe(driver, destination, group, received, handle, prefetch = 100) {
        return driver.subscribe({ destinations: [destination], group, fromBeginning: true, prefetch }, async (batch) => {
          if (handle) return handle(batch);
          for (const d of batch) {
            received.add(d);
            d.ack();
          }
        });
      },
      async sendMarker(driver, destination, received, prefix) {
        const [marker] = makeMessages(`${prefix}-marker`, 1);
        await driver.send(destination, [marker!]);
        const id = marker!.headers['ce_id']!;
        await waitFor(() => received.has(id), 30_000, `marker ${id} on ${destination}`);
        return id;
      },
      batchSize: () => Math.min(100, suite.tuning.sendBatchSize),
      partitionsFor: (n) => (suite.caps.partitions ? n : undefined),
    };

    beforeAll(async () => {
      process.on('unhandledRejection', onUnhandled);
      const probe = await suite.open();
      suite.caps = { ...suite.caps, ...probe.capabilities };
      suite.tuning = probe.tuning;
    });

    afterEach(async () => {
      const drivers = opened;
      opened = [];
      const results = await Promise.allSettled(drivers.map((d) => withTimeout(d.close(), 15_000, `${name} driver close()`)));
      const failures = results.filter((r): r is PromiseRejectedResult => r.status === 'rejected');
      expect(failures.map((f) => describeError(f.reason)), 'driver close() failures').toEqual([]);
      expect(unhandled.splice(0).map(describeError), 'unhandled promise rejections').toEqual([]);
    });

    afterAll(async () => {
      process.off('unhandledRejection', onUnhandled);
      // After afterEach closed every driver: Kafka deletes a group only once its members left.
      await deleteDestinations(url, createdDestinations, { groups: createdGroups });
    });

    for (const [i, c] of CASES.entries()) {
      it(`${i + 1}. ${c.title}`, async ({ skip }) => {
        const unmet = c.needs?.find((need) => !need.has(suite.caps));
        if (unmet) skip(unmet.otherwise);
        await c.run(suite);
      });
    }
  });
}
