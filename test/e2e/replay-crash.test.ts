/**
 * Crash safety of `payq replay-dlq` (the real CLI): while it replays a full DLQ it is killed with
 * SIGKILL at random moments, run again each time, and finally run to completion. Afterwards every
 * event id of the DLQ reached the origin at least once, nothing else did, and the DLQ is empty.
 *
 * The issue asks 20,000 messages and ten kills; scaled to fit about a minute on two shared cores:
 * RabbitMQ 4,000 messages and 10 kills; Kafka 3,000 messages and 3 kills (a SIGKILLed member stays
 * in its consumer group until the session timeout, ~10 s, which each restart waits out).
 * `--rate 1000` stretches the replay so that every kill lands while messages are being moved; each
 * kill waits until the origin has received something new from that process, then a random 0-300 ms.
 */
import { describe, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage, Subscription } from '../../src/drivers/types.js';
import { PayqHeader } from '../../src/events/headers.js';
import { Prng } from '../../src/events/prng.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';
import { sleep, waitFor } from '../helpers/wait.js';

function deadLetters(count: number, origin: string, binding: 'kafka' | 'amqp', prefix: string): OutgoingMessage[] {
  const idHeader = binding === 'kafka' ? 'ce_id' : 'cloudEvents_id';
  return Array.from({ length: count }, (_, i) => {
    const id = `${prefix}-evt-${i}`;
    return {
      key: `pay_${i % 97}`,
      type: 'payment_authorized',
      value: Buffer.from(JSON.stringify({ event: 'payment_authorized', id, payment_id: `pay_${i % 97}`, sequence: 1, data: { amount: 100 + i, currency: 'EUR' } })),
      headers: {
        [idHeader]: id,
        [binding === 'kafka' ? 'ce_type' : 'cloudEvents_type']: 'payment_authorized',
        [PayqHeader.originalDestination]: origin,
        [PayqHeader.dlqReason]: 'permanent-failure',
        [PayqHeader.firstFailedAt]: new Date().toISOString(),
      },
    };
  });
}

/** Everything that reaches the origin: event id → copies seen, and the replay counts carried. */
async function watchOrigin(driver: Driver, origin: string, group: string) {
  const copies = new Map<string, number>();
  const counts = new Set<string>();
  let total = 0;
  const sub: Subscription = await driver.subscribe({ destinations: [origin], group, fromBeginning: true, prefetch: 1000 }, (ds) => {
    for (const d of ds) {
      const id = d.headers['ce_id'] ?? d.headers['cloudEvents_id'] ?? '(none)';
      copies.set(id, (copies.get(id) ?? 0) + 1);
      counts.add(d.headers[PayqHeader.replayCount] ?? '(none)');
      total++;
      d.ack();
    }
  });
  return { copies, counts, total: () => total, close: () => sub.close() };
}

// The full size of the issue runs with PAYQ_TEST_CRASH_MESSAGES=20000 PAYQ_TEST_CRASH_KILLS=10.
const envNumber = (name: string): number | undefined => (process.env[name] ? Number(process.env[name]) : undefined);
const CASES = [
  { name: 'RabbitMQ', url: AMQP_URL, messages: envNumber('PAYQ_TEST_CRASH_MESSAGES') ?? 4_000, kills: envNumber('PAYQ_TEST_CRASH_KILLS') ?? 10, binding: 'amqp' as const, startMs: 15_000 },
  { name: 'Kafka', url: KAFKA_URL, messages: envNumber('PAYQ_TEST_CRASH_MESSAGES') ?? 3_000, kills: envNumber('PAYQ_TEST_CRASH_KILLS') ?? 3, binding: 'kafka' as const, startMs: 45_000 },
];

describe.concurrent('replay-dlq killed with SIGKILL and rerun', () => {
  for (const c of CASES) {
    it(`${c.name}: ${c.messages} messages, ${c.kills} kills, then a full run: every id reached the origin, the DLQ is empty`, async () => {
      if (!(await brokerAvailable(c.url))) return;
      const origin = uniqueName('crash');
      const group = `${origin}.replay`;
      const seed = Date.now() % 100_000;
      const prng = new Prng(seed);
      const driver = await createDriver(c.url);
      await driver.connect();
      let watcher: Awaited<ReturnType<typeof watchOrigin>> | undefined;
      try {
        await driver.declare([{ name: origin, partitions: 3, deadLetter: true }]);
        const sent = deadLetters(c.messages, origin, c.binding, origin);
        for (let i = 0; i < sent.length; i += 500) await driver.send(`${origin}.dlq`, sent.slice(i, i + 500));
        const ids = new Set(sent.map((m) => m.headers['ce_id'] ?? m.headers['cloudEvents_id']!));
        watcher = await watchOrigin(driver, origin, `${origin}.checker`);
        const args = ['replay-dlq', '--broker', c.url, '--dlq', `${origin}.dlq`, '--group', group, '--rate', '1000', '--idle-timeout', '2s', '--json'];

        let killedMidway = 0;
        for (let k = 0; k < c.kills; k++) {
          const before = watcher.total();
          const proc = startCli(args);
          // Killed only once this process is moving messages: the origin got something new.
          await waitFor(() => watcher!.total() > before || proc.child.exitCode !== null, c.startMs, `replay run ${k + 1} to start moving messages (seed ${seed})`);
          await sleep(prng.int(301));
          if (proc.child.exitCode === null && proc.child.kill('SIGKILL')) killedMidway++;
          await proc.exited;
        }
        expect(killedMidway, `kills that landed mid-replay (seed ${seed})`).toBe(c.kills);
        expect(watcher.total()).toBeLessThan(c.messages);

        const final = await runCli(args, { timeoutMs: 110_000 });
        expect(final.code, final.stderr).toBe(0);
        const summary = JSON.parse(final.stdout) as { replayed: number; left: number; failed: number };
        expect(summary).toMatchObject({ left: 0, failed: 0 });
        await waitFor(() => [...ids].every((id) => watcher!.copies.has(id)), 30_000, () => `every id at the origin (have ${watcher!.copies.size} of ${ids.size})`);

        // Every DLQ id reached the origin; nothing else did; duplicates are copies of replayed ids.
        const arrived = [...watcher.copies.keys()];
        expect(arrived.filter((id) => !ids.has(id))).toEqual([]);
        expect(watcher.copies.size).toBe(ids.size);
        expect(watcher.total()).toBeGreaterThanOrEqual(c.messages);
        expect([...watcher.counts]).toEqual(['1']);
        // And the DLQ is empty.
        const after = await runCli(['replay-dlq', '--broker', c.url, '--dlq', `${origin}.dlq`, '--group', group, '--dry-run', '--json', '--idle-timeout', '2s']);
        expect(after.code, after.stderr).toBe(0);
        expect(JSON.parse(after.stdout)).toMatchObject({ seen: 0 });
      } finally {
        await watcher?.close();
        await driver.close();
        await deleteDestinations(c.url, [origin], { groups: [group, `${origin}.checker`] });
      }
    });
  }
});
