#!/usr/bin/env node
/**
 * npm run bench:replay — how fast `payq replay-dlq` moves dead letters back, per broker.
 *
 * For each broker: a DLQ is filled with N dead letters as payq worker writes them (checkout entry
 * events with payq's provenance headers), then the real CLI replays them to their origin
 * (`payq replay-dlq --json`): each republish confirmed by the broker (acks=all / publisher
 * confirms) before the DLQ message is acked or its offset committed. The figure is replayed
 * messages per second from the first message received to the last one handled (the group join
 * before and the idle timeout after are not counted; the whole wall time is printed too).
 *
 *   PAYQ_BENCH_COUNT=20000 PAYQ_BENCH_BROKERS=kafka,amqp npm run bench:replay
 */
import { spawnSync } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import path from 'node:path';
import { fileURLToPath } from 'node:url';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { createDriver } from '../dist/drivers/registry.js';
import { toMessage } from '../dist/events/codec.js';
import { EventGenerator } from '../dist/events/generator.js';
import { PayqHeader } from '../dist/events/headers.js';
import { loadScenario } from '../dist/events/scenario.js';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const BIN = path.join(root, 'bin/payq.js');
const COUNT = Number(process.env.PAYQ_BENCH_COUNT ?? 20_000);
const BROKERS = (process.env.PAYQ_BENCH_BROKERS ?? 'kafka,amqp').split(',');
const URLS = {
  kafka: process.env.PAYQ_TEST_KAFKA ?? 'kafka://127.0.0.1:9092',
  amqp: process.env.PAYQ_TEST_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672',
};
const scenario = loadScenario('checkout');

/** N dead letters as `payq worker` writes them. */
function deadLetters(binding, origin) {
  const nowUs = String(Math.round(Date.now() * 1000));
  const failedAt = new Date().toISOString();
  const out = [];
  for (const e of new EventGenerator({ scenario, seed: 7, payments: COUNT, lifecycle: false })) {
    const m = toMessage(e, { binding, sourcePrefix: '/payq/checkout', runId: 'bench' }, { publishedUs: nowUs, startUs: nowUs });
    Object.assign(m.headers, {
      [PayqHeader.dlqReason]: 'permanent-failure',
      [PayqHeader.dlqError]: 'simulated permanent failure in stage payment-service at attempt 1',
      [PayqHeader.originalDestination]: origin,
      [PayqHeader.attempts]: '1',
      [PayqHeader.firstFailedAt]: failedAt,
      [PayqHeader.stage]: 'payment-service',
    });
    out.push(m);
  }
  return out;
}

async function cleanup(name, url, origin, group) {
  const names = [origin, `${origin}.dlq`, `${origin}.parked`];
  if (name === 'kafka') {
    const admin = new Kafka({ clientId: 'bench-clean', brokers: [url.replace('kafka://', '')], logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    await admin.deleteTopics({ topics: names.filter((t) => existing.has(t)) }).catch(() => undefined);
    await admin.deleteGroups([group]).catch(() => undefined);
    await admin.disconnect();
  } else {
    const conn = await amqplib.connect(url);
    const ch = await conn.createChannel();
    for (const q of names) await ch.deleteQueue(q);
    await conn.close();
  }
}

async function brokerRow(name) {
  const url = URLS[name];
  const driver = await createDriver(url);
  try {
    await driver.connect();
  } catch (err) {
    return { broker: name, error: `not reachable: ${err.message}` };
  }
  const id = randomBytes(3).toString('hex');
  const origin = `payq-bench.replay.${id}`;
  const group = `${origin}.replay`;
  try {
    await driver.declare([{ name: origin, partitions: 6, deadLetter: true }]);
    const letters = deadLetters(driver.capabilities.headerBinding, origin);
    const batch = driver.capabilities.sendBatchSize;
    const pending = new Set();
    for (let i = 0; i < letters.length; i += batch) {
      while (pending.size >= driver.capabilities.sendMaxInFlight) await Promise.race(pending);
      const p = driver.send(`${origin}.dlq`, letters.slice(i, i + batch)).finally(() => pending.delete(p));
      pending.add(p);
    }
    await Promise.all(pending);
    await driver.close();
    const r = spawnSync(process.execPath, [BIN, 'replay-dlq', '--broker', url, '--dlq', `${origin}.dlq`, '--group', group, '--idle-timeout', '2s', '--json', '-q'], {
      encoding: 'utf8',
      env: { ...process.env, CI: 'true' },
      maxBuffer: 1 << 24,
    });
    if (r.status !== 0) throw new Error(`payq replay-dlq on ${name} exited ${r.status}: ${r.stderr.trim()}`);
    const s = JSON.parse(r.stdout);
    if (s.replayed !== COUNT) throw new Error(`replayed ${s.replayed} of ${COUNT}`);
    return { broker: name, replayed: s.replayed, messages_per_s: s.messages_per_s, active_s: s.active_s, wall_s: s.elapsed_s };
  } finally {
    await driver.close();
    await cleanup(name, url, origin, group);
  }
}

console.log(`replay-dlq: ${COUNT.toLocaleString('en-US')} dead letters per broker (checkout entry events, payq provenance headers), confirmed before removed`);
const rows = [];
for (const b of BROKERS) {
  const row = await brokerRow(b).catch((err) => ({ broker: b, error: err.message }));
  rows.push(row);
  if (row.error) console.log(`${b.padEnd(7)} ${row.error}`);
  else
    console.log(
      `${b.padEnd(7)} ${row.messages_per_s.toLocaleString('en-US').padStart(8)} messages/s replayed   (${row.replayed.toLocaleString('en-US')} in ${row.active_s} s; whole run ${row.wall_s} s with group join and 2 s idle timeout)`,
    );
}
console.log(JSON.stringify({ count: COUNT, brokers: rows }));
process.exit(0);
