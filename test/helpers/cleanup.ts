/**
 * Removes what broker tests created, through the broker's own client library (not payq's driver,
 * whose bugs must not decide whether a test cleans up). Each destination goes with its payq
 * companions `<name>.dlq` and `<name>.parked`; names that do not exist are fine.
 *
 * Call it from afterAll / finally after the test's own clients are closed: RabbitMQ deletes a
 * queue even with consumers, but Kafka refuses to delete a group that still has members.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { DRIVERS } from '../../src/drivers/registry.js';

export interface CleanupOptions {
  /** Kafka consumer groups to delete too (RabbitMQ and memory have nothing to delete). */
  groups?: Iterable<string>;
}

/** The destination itself and the queues/topics payq may derive from it. */
function withCompanions(names: Iterable<string>): string[] {
  return [...new Set([...names].flatMap((n) => [n, `${n}.dlq`, `${n}.parked`]))];
}

/**
 * Deletes the destinations (and `.dlq` / `.parked`) and the given Kafka groups. Throws one error
 * listing what could not be deleted, so a leak shows up as a failed hook instead of going unseen.
 */
export async function deleteDestinations(url: string, names: Iterable<string>, options: CleanupOptions = {}): Promise<void> {
  const all = withCompanions(names);
  const scheme = /^([a-z]+):/.exec(url)?.[1];
  const driver = DRIVERS.find((d) => d.url.schemes.some((s) => s.name === scheme));
  // In process (gone with it), or nothing stored at all (ZeroMQ): nothing to delete.
  if (driver && (!driver.url.sharedAcrossProcesses || !driver.capabilities.storedDestinations)) return;
  if (scheme === 'amqp' || scheme === 'amqps') return deleteQueues(url, all);
  if (scheme === 'kafka') return deleteTopicsAndGroups(url, all, [...(options.groups ?? [])]);
  if (scheme === 'nats') return deleteStreams(url, all);
  throw new Error(`deleteDestinations: no cleanup for ${url.replace(/:[^:@/]*@/, ':***@')}`);
}

async function deleteQueues(url: string, queues: string[]): Promise<void> {
  if (queues.length === 0) return;
  const conn = await amqplib.connect(url);
  // An unhandled 'error' event would crash the test process; closes are handled per call below.
  conn.on('error', () => {});
  const failed: string[] = [];
  try {
    let ch: amqplib.Channel | undefined;
    for (const queue of queues) {
      try {
        if (!ch) {
          ch = await conn.createChannel();
          ch.on('error', () => {});
          ch.on('close', () => (ch = undefined));
        }
        // A missing queue deletes fine (RabbitMQ 3.x); an error closes the channel: a new one next.
        await ch.deleteQueue(queue);
      } catch (err) {
        failed.push(`${queue} (${err instanceof Error ? err.message : String(err)})`);
      }
    }
  } finally {
    await conn.close().catch(() => undefined);
  }
  if (failed.length > 0) throw new Error(`could not delete RabbitMQ queues: ${failed.join('; ')}`);
}

async function deleteTopicsAndGroups(url: string, topics: string[], groups: string[]): Promise<void> {
  const brokers = url.replace(/^kafka:\/\//, '').replace(/^[^@/]*@/, '').replace(/[/?].*$/, '').split(',');
  const admin = new Kafka({ clientId: 'payq-test-cleanup', brokers, logLevel: logLevel.NOTHING }).admin();
  await admin.connect();
  const failed: string[] = [];
  try {
    // deleteTopics rejects the whole call for one unknown topic: ask which exist first.
    const existing = new Set(await admin.listTopics());
    const doomed = topics.filter((t) => existing.has(t));
    if (doomed.length > 0) {
      await admin.deleteTopics({ topics: doomed, timeout: 15_000 }).catch((err: unknown) => {
        failed.push(`topics ${doomed.join(', ')} (${err instanceof Error ? err.message : String(err)})`);
      });
    }
    if (groups.length > 0) {
      const known = new Set((await admin.listGroups()).groups.map((g) => g.groupId));
      const doomedGroups = groups.filter((g) => known.has(g));
      if (doomedGroups.length > 0) {
        await admin.deleteGroups(doomedGroups).catch((err: unknown) => {
          // A group already dropped by the coordinator (empty, no offsets left) is not a leak.
          const errors = (err as { groups?: Array<{ groupId: string; error?: { type?: string } }> }).groups ?? [];
          const left = errors.filter((g) => g.error?.type !== 'GROUP_ID_NOT_FOUND');
          if (errors.length === 0 || left.length > 0) {
            failed.push(`groups ${(left.length > 0 ? left.map((g) => g.groupId) : doomedGroups).join(', ')} (${err instanceof Error ? err.message : String(err)})`);
          }
        });
      }
    }
  } finally {
    await admin.disconnect().catch(() => undefined);
  }
  if (failed.length > 0) throw new Error(`could not delete Kafka ${failed.join('; ')}`);
}

/**
 * NATS: the stream holding each destination's subjects (`payq.<name>.*`, payq's layout), found
 * by subject; its consumers (groups, taps) go with it.
 */
async function deleteStreams(url: string, destinations: string[]): Promise<void> {
  if (destinations.length === 0) return;
  const m = /^nats:\/\/(?:([^:@/]*)(?::([^@/]*))?@)?([^/?]+)/.exec(url);
  if (!m) throw new Error('deleteDestinations: cannot read the NATS URL');
  const [, user, pass, hosts] = m;
  const nc = await natsConnect({
    servers: hosts!.split(','),
    ...(user ? { user: decodeURIComponent(user), pass: decodeURIComponent(pass ?? '') } : {}),
    ...(user === '' && pass ? { token: decodeURIComponent(pass) } : {}),
  });
  const failed: string[] = [];
  try {
    const jsm = await jetstreamManager(nc);
    for (const name of destinations) {
      let stream: string;
      try {
        stream = await jsm.streams.find(`payq.${name}._`);
      } catch (err) {
        // No stream holds it (10059): nothing to delete.
        if ((err as { code?: unknown }).code !== 10059) failed.push(`${name} (${err instanceof Error ? err.message : String(err)})`);
        continue;
      }
      await jsm.streams.delete(stream).catch((err: unknown) => {
        failed.push(`${stream} (${err instanceof Error ? err.message : String(err)})`);
      });
    }
  } finally {
    await nc.close().catch(() => undefined);
  }
  if (failed.length > 0) throw new Error(`could not delete NATS streams: ${failed.join('; ')}`);
}
