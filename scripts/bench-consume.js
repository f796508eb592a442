#!/usr/bin/env node
/**
 * npm run bench:consume — payq consume beside its peers, in one run, per broker: every side
 * PAYQ_BENCH_REPEAT times (default 3), alternating, with medians, ranges, payq/side ratios, each
 * side's CPU and the broker's (see scripts/bench-peers.js for how CPU is counted).
 *
 * What is read: PAYQ_BENCH_COUNT events written beforehand by `payq produce` (payq's own bodies,
 * keys and headers), untimed. Kafka: one topic, which every side reads from the beginning in a
 * consumer group of its own. RabbitMQ: a queue consumed empties it, so each side's run gets a
 * queue filled just before it.
 *
 *   payq:     `payq consume --group G --limit COUNT --json` (every body printed, to /dev/null);
 *             events/s = count / the elapsed time payq reports.
 *   bare:     Kafka: a kafkajs consumer with payq's consumer settings, counting in eachBatch;
 *             RabbitMQ: an amqplib consumer with payq consume's prefetch, acking each message.
 *   Kafka:    ConsumerPerformance (kafka-tools, the broker's version; its nMsg.sec, group join
 *             included) and kcat -C where installed (every body printed, count / wall time).
 *   RabbitMQ: PerfTest, one consumer, the same prefetch, manual acks.
 *
 *   PAYQ_BENCH_COUNT=200000 PAYQ_BENCH_REPEAT=3 PAYQ_BENCH_BROKERS=kafka,amqp npm run bench:consume
 */
import { randomBytes } from 'node:crypto';
import os from 'node:os';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { KAFKA_TUNING, kafkaConfigFromUrl } from '../dist/drivers/kafka/config.js';
import { parseBrokerUrl } from '../dist/drivers/url.js';
import { alternate, BIN, onInterrupt, COUNT, CPU_NOTE, deleteTopics, hasCommand, inProcess, kafkaHostPort, lastNumberAfter, peerClasspath, printTable, REPEAT, runChild, URLS } from './bench-peers.js';

const BROKERS = (process.env.PAYQ_BENCH_BROKERS ?? 'kafka,amqp').split(',');
const SEED = 99;
/** payq consume's default prefetch (DEFAULT_PREFETCH in src/core/consume.ts). */
const PREFETCH = 500;
const runId = randomBytes(3).toString('hex');

/** Writes COUNT of payq's events to `destination` (creating it), untimed. */
async function fill(url, destination) {
  const r = await runChild(process.execPath, [BIN, 'produce', '--broker', url, '--topic', destination, '--count', String(COUNT), '--seed', String(SEED), '--partitions', '6', '--json', '-q']);
  if (r.status !== 0) throw new Error(`payq produce (filling ${destination}) exited ${r.status}: ${r.stderr.trim().split('\n').slice(-1)[0]}`);
  if (JSON.parse(r.stdout).acked !== COUNT) throw new Error(`filling ${destination}: not every event was acknowledged`);
}

async function runPayq(broker, url, destination, group) {
  const r = await runChild(process.execPath, [BIN, 'consume', '--broker', url, '--topic', destination, '--group', group, '--from-beginning', '--limit', String(COUNT), '--json'], {
    broker,
    discard: true,
  });
  if (r.status !== 0) throw new Error(`payq consume exited ${r.status}: ${r.stderr.trim().split('\n').slice(-1)[0]}`);
  const consumed = /consumed\s*│\s*([0-9,]+)/.exec(r.stderr);
  const elapsed = /elapsed\s*│\s*([0-9.]+) s/.exec(r.stderr);
  if (!consumed || Number(consumed[1].replaceAll(',', '')) !== COUNT || !elapsed) throw new Error(`payq consume did not report ${COUNT} consumed: ${r.stderr.slice(-300)}`);
  return { ...r, eventsPerS: COUNT / Number(elapsed[1]) };
}

// --- Kafka -------------------------------------------------------------------------------------

async function kafkaSides(url) {
  const hostPort = kafkaHostPort(url);
  const kafka = new Kafka({ ...kafkaConfigFromUrl(parseBrokerUrl(url), logLevel.NOTHING), clientId: 'payq-bench-bare' });
  const admin = kafka.admin();
  await admin.connect();
  const topic = `payq-bench.consume.${runId}`;
  const groups = [];
  const group = (side, round) => {
    const g = `payq-bench.${side}.${runId}.${round}`;
    groups.push(g);
    return g;
  };
  const cleanup = async () => {
    onInterrupt(undefined);
    await admin.deleteGroups(groups).catch(() => undefined);
    await deleteTopics(admin, [topic, `${topic}.dlq`]);
    await admin.disconnect();
  };
  onInterrupt(cleanup);
  try {
    await fill(url, topic);
  } catch (err) {
    await cleanup();
    throw err;
  }

  const sides = [
    { name: 'payq consume', run: (round) => runPayq('kafka', url, topic, group('payq', round)) },
    {
      name: 'kafkajs bare loop',
      note: "payq's consumer settings (session, heartbeat, rebalance, maxWaitTimeInMs), counting in eachBatch, kafkajs' own commits",
      run: async (round) => {
        const t = KAFKA_TUNING.consumer;
        const consumer = kafka.consumer({ groupId: group('bare', round), sessionTimeout: t.sessionTimeout, heartbeatInterval: t.heartbeatInterval, rebalanceTimeout: t.rebalanceTimeout, maxWaitTimeInMs: t.maxWaitTimeInMs, retry: { ...KAFKA_TUNING.retry } });
        await consumer.connect();
        await consumer.subscribe({ topics: [topic], fromBeginning: true });
        const r = await inProcess('kafka', async () => {
          let n = 0;
          await new Promise((resolve, reject) => {
            consumer
              .run({
                eachBatch: async ({ batch }) => {
                  n += batch.messages.length;
                  if (n >= COUNT) resolve();
                },
              })
              .catch(reject);
          });
          return COUNT;
        });
        await consumer.disconnect();
        return r;
      },
    },
  ];
  const tools = peerClasspath('kafka-tools');
  sides.push({
    name: 'ConsumerPerformance',
    note: 'its nMsg.sec (group join included), the consumer defaults',
    skip: tools.missing && `ConsumerPerformance: ${tools.missing}`,
    run: async (round) => {
      const r = await runChild(
        'java',
        ['-cp', tools.classpath, 'org.apache.kafka.tools.ConsumerPerformance', '--bootstrap-server', hostPort, '--topic', topic, '--messages', String(COUNT), '--group', group('cp', round), '--timeout', '60000'],
        { broker: 'kafka' },
      );
      // start.time, end.time, data.consumed.in.MB, MB.sec, data.consumed.in.nMsg, nMsg.sec, ...
      const line = r.stdout.trim().split('\n').filter((l) => /^\d{4}-/.test(l)).pop();
      const cols = line?.split(',').map((c) => c.trim());
      if (r.status !== 0 || !cols || Number(cols[4]) < COUNT) throw new Error(`ConsumerPerformance exited ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-1)[0]}`);
      return { ...r, eventsPerS: Number(cols[5]) };
    },
  });
  sides.push({
    name: 'kcat -C',
    note: 'every partition from the beginning, every body printed (to a pipe), no group; count / wall time',
    skip: !hasCommand('kcat') && 'kcat: not installed',
    run: async () => {
      const r = await runChild('kcat', ['-C', '-b', hostPort, '-t', topic, '-o', 'beginning', '-c', String(COUNT), '-e', '-q'], { broker: 'kafka', countLines: true });
      if (r.status !== 0 || r.lines !== COUNT) throw new Error(`kcat exited ${r.status} after ${r.lines} of ${COUNT} records: ${r.stderr.trim().split('\n').slice(-1)[0]}`);
      return { ...r, eventsPerS: COUNT / r.wallS };
    },
  });
  return { sides, cleanup };
}

// --- RabbitMQ ----------------------------------------------------------------------------------

async function amqpSides(url) {
  const conn = await amqplib.connect(url);
  const admin = await conn.createChannel();
  const created = [];
  /** A queue of COUNT payq events, filled now (untimed). */
  const filled = async (side, round) => {
    const name = `payq-bench.${side}.${runId}.${round}`;
    created.push(name);
    await fill(url, name);
    return name;
  };
  const expectEmpty = async (name, side) => {
    const { messageCount } = await admin.checkQueue(name);
    if (messageCount !== 0) throw new Error(`${side} left ${messageCount} messages in ${name}`);
  };
  const sides = [
    {
      name: 'payq consume',
      run: async (round) => {
        const name = await filled('payq', round);
        const r = await runPayq('amqp', url, name, `payq-bench.${runId}`);
        await expectEmpty(name, 'payq consume');
        return r;
      },
    },
    {
      name: 'amqplib bare loop',
      note: `prefetch ${PREFETCH} (payq consume's), manual ack of each message`,
      run: async (round) => {
        const name = await filled('bare', round);
        const c = await amqplib.connect(url);
        const ch = await c.createChannel();
        await ch.prefetch(PREFETCH, false);
        const r = await inProcess('amqp', async () => {
          let n = 0;
          await new Promise((resolve) => {
            void ch.consume(name, (msg) => {
              if (!msg) return;
              ch.ack(msg);
              if (++n === COUNT) resolve();
            });
          });
          return COUNT;
        });
        // A round trip on the same channel: the broker has taken every ack before it answers.
        const { messageCount } = await ch.checkQueue(name);
        await c.close();
        if (messageCount !== 0) throw new Error(`the amqplib loop left ${messageCount} messages in ${name}`);
        return r;
      },
    },
  ];
  const tools = peerClasspath('perf-test');
  sides.push({
    name: 'PerfTest',
    note: `one consumer, prefetch ${PREFETCH}, manual acks, the queue predeclared`,
    skip: tools.missing && `PerfTest: ${tools.missing}`,
    run: async (round) => {
      const name = await filled('perftest', round);
      const r = await runChild('java', ['-cp', tools.classpath, 'com.rabbitmq.perf.PerfTest', '-h', url, '-x', '0', '-y', '1', '-p', '-u', name, '-D', String(COUNT), '-q', String(PREFETCH), '-i', '1000'], { broker: 'amqp' });
      const rate = lastNumberAfter(r.stdout, 'receiving rate avg');
      if (r.status !== 0 || rate === undefined) throw new Error(`PerfTest exited ${r.status}: ${(r.stderr || r.stdout).trim().split('\n').slice(-1)[0]}`);
      await expectEmpty(name, 'PerfTest');
      return { ...r, eventsPerS: rate };
    },
  });
  const cleanup = async () => {
    onInterrupt(undefined);
    for (const name of created) {
      await admin.deleteQueue(name).catch(() => undefined);
      await admin.deleteQueue(`${name}.dlq`).catch(() => undefined);
    }
    await conn.close().catch(() => undefined);
  };
  onInterrupt(cleanup);
  return { sides, cleanup };
}

async function brokerRows(name) {
  const url = URLS[name];
  if (!url) return { broker: name, error: 'no such broker here (kafka, amqp)' };
  let built;
  try {
    built = name === 'kafka' ? await kafkaSides(url) : await amqpSides(url);
  } catch (err) {
    return { broker: name, error: `not reachable or not filled: ${err.message}` };
  }
  console.error(`${name}: ${built.sides.length} sides × ${REPEAT} rounds of ${COUNT.toLocaleString('en-US')} events…`);
  try {
    return { broker: name, prefetch: PREFETCH, sides: await alternate(built.sides, COUNT) };
  } finally {
    await built.cleanup();
  }
}

console.log(`events: ${COUNT.toLocaleString('en-US')} of payq's (seed ${SEED}); ${REPEAT} rounds, sides alternating; load average ${os.loadavg().map((l) => l.toFixed(2)).join(' ')} on ${os.cpus().length} cores`);
const results = [];
for (const b of BROKERS) {
  const res = await brokerRows(b);
  results.push(res);
  if (res.error) console.log(`\n${b}: ${res.error}`);
  else printTable(`${b} consume, ${COUNT.toLocaleString('en-US')} events, median of ${REPEAT}`, res.sides);
}
console.log(CPU_NOTE);
console.log(JSON.stringify({ count: COUNT, repeat: REPEAT, load_average: os.loadavg().map((l) => Math.round(l * 100) / 100), brokers: results }));
process.exit(0);
