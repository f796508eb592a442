import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';

const lines = (text: string) => text.split('\n').filter(Boolean);
/** payment id → its events' ids, in the order they came. */
function byPayment(bodies: string[]): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const b of bodies) {
    const e = JSON.parse(b) as { id: string; payment_id: string };
    const list = out.get(e.payment_id) ?? out.set(e.payment_id, []).get(e.payment_id)!;
    list.push(e.id);
  }
  return out;
}

describe('payq produce --shard i/N --dry-run', () => {
  const settings: string[][] = [
    ['--count', '200', '--seed', '7'],
    ['--count', '150', '--seed', '11', '--lifecycle'],
    ['--count', '101', '--seed', '3', '--lifecycle', '--size', '600'],
  ];
  for (const args of settings) {
    it(`the union of 1/3..3/3 is the unsharded stream, event for event (${args.join(' ')})`, async () => {
      const whole = await runCli(['produce', '--dry-run', ...args]);
      expect(whole.code).toBe(0);
      const parts = await Promise.all([1, 2, 3].map((i) => runCli(['produce', '--dry-run', ...args, '--shard', `${i}/3`])));
      const union: string[] = [];
      for (const p of parts) {
        expect(p.code, p.stderr).toBe(0);
        union.push(...lines(p.stdout));
        // No payment is in two shards.
        for (const q of parts) if (q !== p) for (const id of byPayment(lines(p.stdout)).keys()) expect(q.stdout).not.toContain(id);
      }
      expect([...union].sort()).toEqual(lines(whole.stdout).sort());
      // Each payment's events keep their order.
      expect(byPayment(union)).toEqual(byPayment(lines(whole.stdout)));
    });
  }

  it('--procs 3 --dry-run prints the same lines as one process', async () => {
    const args = ['produce', '--dry-run', '--count', '120', '--seed', '5', '--lifecycle'];
    const whole = await runCli(args);
    const procs = await runCli([...args, '--procs', '3']);
    expect(procs.code, procs.stderr).toBe(0);
    expect(lines(procs.stdout).sort()).toEqual(lines(whole.stdout).sort());
    expect(byPayment(lines(procs.stdout))).toEqual(byPayment(lines(whole.stdout)));
  });

  for (const bad of ['0/3', '4/3', '1/0', 'x', '-1/2', '1/2/3']) {
    it(`--shard ${bad} is a usage error before anything runs`, async () => {
      const r = await runCli(['produce', '--dry-run', '--count', '5', '--shard', bad]);
      expect(r.code).toBe(2);
      expect(r.stdout).toBe('');
      expectOneErrorLine(r.stderr, /--shard: must be i\/N/);
    });
  }
});

describe('payq produce --shard: --count and --rate are the whole stream\'s', () => {
  for (const [shard, count, rate] of [['1/2', 600, 600], ['3/3', 301, 300]] as const) {
    it(`--shard ${shard} --count ${count} --rate ${rate}: the shard's payments, at rate/N`, async () => {
      const [i, n] = shard.split('/').map(Number) as [number, number];
      const r = await runCli(['produce', '--broker', 'memory://', '--count', String(count), '--rate', String(rate), '--shard', shard, '--seed', '1', '--json']);
      expect(r.code, r.stderr).toBe(0);
      const s = JSON.parse(r.stdout) as { acked: number; payments: number; not_sent: number; shard: string; elapsed_s: number; rate_per_s: number };
      const mine = Math.ceil((count - (i - 1)) / n);
      expect(s.payments).toBe(mine);
      expect(s.acked).toBe(mine);
      expect(s.not_sent).toBe(0);
      expect(s.shard).toBe(shard);
      expect(s.rate_per_s).toBe(rate);
      // Open loop at rate/N: the last event is not due before (mine − 1) / (rate / N) seconds
      // (a lower bound only, which no load can break; at the whole rate it would take 1/N of it).
      expect(s.elapsed_s).toBeGreaterThanOrEqual(((mine - 1) / (rate / n)) * 0.99);
    });
  }
});

describe('payq produce --procs 2 on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);
  it.skipIf(!up)('two threads send exactly the events of one process with the same seed', async () => {
    const topic = uniqueName('shard-procs');
    const args = ['--count', '600', '--seed', '21', '--lifecycle'];
    const dry = await runCli(['produce', '--dry-run', ...args]);
    expect(dry.code).toBe(0);
    const expected = lines(dry.stdout);
    const r = await runCli(['produce', '--broker', KAFKA_URL, '--topic', topic, '--partitions', '3', '--procs', '2', '--json', ...args]);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout) as { acked: number; sent: number; failed: number; payments: number; procs: number; publish_latency: { count: number } };
    expect(summary.procs).toBe(2);
    expect(summary.acked).toBe(expected.length);
    expect(summary.sent).toBe(expected.length);
    expect(summary.failed).toBe(0);
    expect(summary.payments).toBe(600);
    expect(summary.publish_latency.count).toBe(expected.length);

    // An independent reader: every record of the topic, from the beginning.
    const kafka = new Kafka({ clientId: 'payq-test-shard', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const consumer = kafka.consumer({ groupId: `${topic}.reader` });
    const got: string[] = [];
    await consumer.connect();
    try {
      await consumer.subscribe({ topic, fromBeginning: true });
      await new Promise<void>((resolve) => {
        void consumer.run({
          eachMessage: async ({ message }) => {
            got.push(message.value!.toString('utf8'));
            if (got.length >= expected.length) resolve();
          },
        });
      });
    } finally {
      await consumer.disconnect();
    }
    expect(got.length).toBe(expected.length);
    expect([...got].sort()).toEqual([...expected].sort());
    // The payment id is the key: each payment's events sit in one partition, in order.
    expect(byPayment(got)).toEqual(byPayment(expected));
  }, 120_000);
});
