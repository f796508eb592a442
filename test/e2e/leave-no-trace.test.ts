/**
 * Leave no trace (issue 12 item 5): what payq creates only for itself while it reads — a
 * RabbitMQ tap's queue, a Kafka tap's consumer group, NATS ephemeral consumers — is gone once
 * consume or trace exits, whether it ended by itself (idle timeout) or by Ctrl-C (SIGINT).
 *
 * Each run lists the broker's queues / groups / consumers while payq runs, through the brokers'
 * own tools and clients (rabbitmqctl, kafkajs admin, the NATS client), finds the ones that are
 * payq's (the RabbitMQ queues its connections own, the Kafka groups assigned the test's topic, the
 * consumers on the test's stream), and checks that none of them is left afterwards.
 */
import { execFile } from 'node:child_process';
import { promisify } from 'node:util';
import { jetstreamManager, type JetStreamManager } from '@nats-io/jetstream';
import { connect, type NatsConnection } from '@nats-io/transport-node';
import { AssignerProtocol, Kafka, logLevel, type Admin } from 'kafkajs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AMQP_URL, KAFKA_URL, NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { declareLayout } from '../helpers/layout.js';
import { startCli, type Background } from '../helpers/spawn.js';

const run = promisify(execFile);
const rabbitmqctl = await run('rabbitmqctl', ['--version']).then(
  () => true,
  () => false,
);

interface Lister {
  /** What is payq's, for this run, on the broker now. */
  ours(child: Background, destination: string): Promise<string[]>;
}

async function rabbitQueuesOf(child: Background): Promise<string[]> {
  const pid = child.child.pid!;
  const queues = JSON.parse((await run('rabbitmqctl', ['-q', 'list_queues', 'name', 'owner_pid', '--formatter', 'json'])).stdout) as Array<{ name: string; owner_pid: string }>;
  // A tap's queue is durable (it outlives a broker restart), so no connection owns it: its name says whose it is.
  const named = queues.filter((q) => q.name.startsWith(`payq.tap.${pid}.`)).map((q) => q.name);
  if (named.length > 0) return named;
  const connections = JSON.parse((await run('rabbitmqctl', ['-q', 'list_connections', 'pid', 'client_properties', '--formatter', 'json'])).stdout) as Array<{ pid: string }>;
  const mine = new Set(connections.filter((c) => JSON.stringify(c).includes(`(pid ${pid})`)).map((c) => c.pid));
  return queues.filter((q) => mine.has(q.owner_pid)).map((q) => q.name);
}

let admin: Admin | undefined;
async function kafkaGroupsOn(topic: string): Promise<string[]> {
  const { groups } = await admin!.listGroups();
  const candidates = groups.map((g) => g.groupId).filter((g) => g.startsWith('payq-tap.'));
  if (candidates.length === 0) return [];
  const described = await admin!.describeGroups(candidates);
  return described.groups
    .filter((g) =>
      g.members.some((m) => {
        const assignment = AssignerProtocol.MemberAssignment.decode(m.memberAssignment);
        return assignment !== null && Object.keys(assignment.assignment).some((t) => t === topic || t === `${topic}.dlq`);
      }),
    )
    .map((g) => g.groupId);
}
async function kafkaGroupsLeft(ids: string[]): Promise<string[]> {
  const { groups } = await admin!.listGroups();
  const all = new Set(groups.map((g) => g.groupId));
  return ids.filter((id) => all.has(id));
}

let nc: NatsConnection | undefined;
let jsm: JetStreamManager | undefined;
async function natsConsumersOn(destination: string): Promise<string[]> {
  const names: string[] = [];
  for (const d of [destination, `${destination}.dlq`]) {
    const stream = await jsm!.streams.find(`payq.${d}._`);
    for (const c of await jsm!.consumers.list(stream).next()) names.push(`${stream}/${c.name}`);
  }
  return names;
}

const BROKERS = [
  {
    name: 'RabbitMQ',
    url: AMQP_URL,
    available: (await brokerAvailable(AMQP_URL)) && rabbitmqctl,
    lister: { ours: (child: Background) => rabbitQueuesOf(child) } satisfies Lister,
    left: async (queues: string[]) => {
      const now = JSON.parse((await run('rabbitmqctl', ['-q', 'list_queues', 'name', '--formatter', 'json'])).stdout) as Array<{ name: string }>;
      const names = new Set(now.map((q) => q.name));
      return queues.filter((q) => names.has(q));
    },
  },
  {
    name: 'Kafka',
    url: KAFKA_URL,
    available: await brokerAvailable(KAFKA_URL),
    lister: { ours: (_child: Background, destination: string) => kafkaGroupsOn(destination) } satisfies Lister,
    left: kafkaGroupsLeft,
  },
  {
    name: 'NATS',
    url: NATS_URL,
    available: await brokerAvailable(NATS_URL),
    lister: { ours: (_child: Background, destination: string) => natsConsumersOn(destination) } satisfies Lister,
    left: async (consumers: string[]) => {
      const now: string[] = [];
      for (const entry of consumers) {
        const [stream, name] = entry.split('/') as [string, string];
        const found = await jsm!.consumers.info(stream, name).then(() => true, () => false);
        if (found) now.push(entry);
      }
      return now;
    },
  },
];

const created = new Map<string, string[]>();

beforeAll(async () => {
  if (BROKERS[1]!.available) {
    admin = new Kafka({ clientId: 'payq-test-no-trace', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
  }
  if (BROKERS[2]!.available) {
    nc = await connect({ servers: NATS_URL.replace('nats://', '') });
    jsm = await jetstreamManager(nc);
  }
});

afterAll(async () => {
  await admin?.disconnect();
  await nc?.close();
  for (const { url } of BROKERS) {
    const names = created.get(url);
    if (names) await deleteDestinations(url, names);
  }
});

/** Polls `find` until it names something (payq's reader is set up), for at most 20 s. */
async function whileRunning(find: () => Promise<string[]>): Promise<string[]> {
  const deadline = Date.now() + 20_000;
  for (;;) {
    const found = await find();
    if (found.length > 0 || Date.now() > deadline) return found;
    await new Promise((r) => setTimeout(r, 250));
  }
}

/**
 * Runs `work` after the work queued before it in the same lane: the brokers side by side, each
 * broker's cases one after another (a case ending by itself has 8 s for the listing to find payq's
 * reader, and rabbitmqctl is slow when several run at once).
 */
const lanes = new Map<string, Promise<unknown>>();
async function inLane<T>(lane: string, work: () => Promise<T>): Promise<T> {
  const before = lanes.get(lane) ?? Promise.resolve();
  const mine = before.then(work, work);
  lanes.set(lane, mine.catch(() => undefined));
  return mine;
}

// Declared broker by broker in turn, so that the first cases to start are one on each broker.
describe.concurrent('leave no trace', () => {
  for (const command of ['consume', 'trace'] as const) {
    for (const ending of ['itself', 'SIGINT'] as const) {
      for (const broker of BROKERS) {
        const what = broker.name === 'RabbitMQ' ? 'tap queue' : broker.name === 'Kafka' ? 'tap group' : 'ephemeral consumers';
        it.skipIf(!broker.available)(`${broker.name}: ${command} ended by ${ending} removes its own ${what}`, () =>
          inLane(broker.name, async () => {
            const destination = uniqueName('no-trace');
            created.set(broker.url, [...(created.get(broker.url) ?? []), destination]);
            await declareLayout(broker.url, [destination]);
            // Ending by itself: consume when idle, trace after its duration (with no events it would wait for the first).
            const end = ending === 'SIGINT' ? [] : command === 'consume' ? ['--idle-timeout', '8s'] : ['--duration', '8s'];
            const child = startCli([command, '--broker', broker.url, '--topic', destination, ...end]);
            await child.waitForStderr(command === 'consume' ? 'consuming ' : 'trace: watching ');
            const ours = await whileRunning(() => broker.lister.ours(child, destination));
            expect(ours.length, `payq's own reader objects while it runs: ${child.stderr()}`).toBeGreaterThan(0);
            if (ending === 'SIGINT') child.child.kill('SIGINT');
            const code = await child.exited;
            expect(code, child.stderr()).toBe(ending === 'SIGINT' ? 130 : 0);
            expect(await broker.left(ours)).toEqual([]);
          }),
        );
      }
    }
  }
});
