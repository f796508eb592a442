/**
 * bench on the real brokers: issue 5's APT check on RabbitMQ (in process, through the driver),
 * loss seen when a RabbitMQ queue is purged or a Kafka topic's records are deleted mid-run (the
 * CLI exits 4), and a clean Kafka run with CI assertions (exit 0, loss 0). Every run uses destinations and group names of its own.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { randomBytes } from 'node:crypto';
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { runBench } from '../../src/core/bench.js';
import { systemClock } from '../../src/core/clock.js';
import { createDriver } from '../../src/drivers/registry.js';
import { buildReport, reportSchema, type Report } from '../../src/metrics/report.js';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';
import { sleep, waitFor } from '../helpers/wait.js';
import { testReportSettings } from '../helpers/report.js';
import { scenarioCopy } from '../helpers/scenario-file.js';

const dir = mkdtempSync(path.join(tmpdir(), 'payq-bench-e2e-'));

/** A fixture scenario with destinations and a name (hence consumer groups) no other run uses. */
const unique = (fixture: string, edit?: (text: string) => string) => scenarioCopy(uniqueName('bench'), { from: fixture, ...(edit ? { edit } : {}) });

const settings = testReportSettings(AMQP_URL.replace(/:[^:@/]*@/, ':***@'));

const within = (actual: number, expected: number, pct: number) => Math.abs(actual - expected) <= (expected * pct) / 100;

/** Every line a table printed fits in 100 columns (issue 11, defect 13); colours are off here (NO_COLOR). */
function expectLinesFit(text: string, what: string): void {
  for (const line of text.split('\n')) if (/^[│┌├└]/.test(line)) expect([...line].length, `${what}: ${line}`).toBeLessThanOrEqual(100);
  expect(text, what).toMatch(/^┌/m);
}

/** The slow variant of bench-apt-equal: its second stage takes one message at a time, 20 ms each (50/s). */
const slow = (t: string) => t.replace('{ distribution: constant, ms: 8 }', '{ distribution: constant, ms: 20 }');

/**
 * Ctrl-C during a run with a backlog (issue 11, defect 3): exit 130, the partial report written,
 * the unconsumed events counted as in flight, nothing called lost.
 */
async function expectInterruptedNotLost(bench: ReturnType<typeof startCli>, json: string): Promise<void> {
  bench.child.kill('SIGINT');
  const code = await bench.exited;
  expect(code, bench.stderr()).toBe(130);
  expect(bench.stderr()).toMatch(/payq: error: interrupted: the report covers the first [\d.]+ s; [\d,]+ acknowledged events were in flight \(not counted as lost\)/);
  expect(bench.stderr()).toMatch(/│ in flight\s+│ [\d,]+ acknowledged events not yet consumed when interrupted/);
  expect(bench.stderr()).not.toMatch(/never consumed|not consumed\)|loss [1-9]|loss 0\.\d/);
  const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
  expect(reportSchema.safeParse(report).success).toBe(true);
  expect(report.loss).toBe(0);
  expect(report.events.lost).toBe(0);
  expect(report.events.in_flight).toBeGreaterThan(0);
  expect(report.events.consumed + report.events.in_flight).toBe(report.events.acknowledged);
}

// Each describe's cases side by side: each runs on a scenario copy (destinations, groups) and files of its own.
describe.concurrent('bench on memory:// through the CLI', () => {
  it('Ctrl-C after 1.5 s: exit 130, in flight counted, no loss', async () => {
    const { file } = unique('bench-apt-equal', slow);
    const json = path.join(dir, 'memory-sigint.json');
    const bench = startCli(['bench', '--scenario', file, '--rate', '200', '--duration', '20s', '--warmup', '0', '--consumers', '1', '--json', json]);
    try {
      await sleep(1500);
      await expectInterruptedNotLost(bench, json);
    } finally {
      bench.child.kill('SIGKILL');
    }
  });

  it.each(['300ms', '1s'])('a drain cut short by --drain-timeout %s: "not drained" with the backlog, exit 0, not loss', async (timeout) => {
    const { file } = unique('bench-apt-equal', slow);
    const json = path.join(dir, `drain-${timeout}.json`);
    const r = await runCli(['bench', '--scenario', file, '--count', '200', '--warmup', '0', '--consumers', '1', '--drain-timeout', timeout, '--json', json]);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr).toMatch(new RegExp(`the drain timed out after [\\d.]+ s: [\\d,]+ acknowledged events not drained`));
    expect(r.stderr).toMatch(/│ not drained\s+│ [\d,]+ acknowledged events still on the broker/);
    expect(r.stderr).not.toMatch(/never consumed|payq: error/);
    const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
    expect(report.loss).toBe(0);
    expect(report.events.not_drained).toBeGreaterThan(0);
    expect(report.events.consumed + report.events.not_drained).toBe(report.events.acknowledged);
    // A CI job that wants a complete drain says so, and fails when it was not.
    const strict = await runCli(['report', json, '--assert', 'events.not_drained==0']);
    expect(strict.code, strict.stderr).toBe(5);
  });

  it('the tables of bench, report, report --compare and produce fit in 100 columns; a report against itself is "same"', async () => {
    const { file } = unique('checkout');
    const json = path.join(dir, 'width.json');
    const b = await runCli(['bench', '--scenario', file, '--count', '100', '--warmup', '0', '--time-scale', '0.05', '--json', json]);
    expect(b.code, b.stderr).toBe(0);
    expectLinesFit(b.stderr, 'bench');
    const r = await runCli(['report', json, '--compare', json]);
    expect(r.code, r.stderr).toBe(0);
    expectLinesFit(r.stderr, 'report --compare');
    const comparison = r.stderr.slice(r.stderr.indexOf('compared with'));
    const rows = comparison.split('\n').filter((l) => /^│ /.test(l) && !/│ figure/.test(l));
    expect(rows.length).toBeGreaterThan(5);
    for (const row of rows) expect(row, row).toMatch(/│ 0%\s+│ same\s+│$/);
    const p = await runCli(['produce', '--broker', 'memory://', '--topic', `payments.${'order-placed-events-from-the-checkout-frontend.'.repeat(3)}v2`, '--count', '3']);
    expect(p.code, p.stderr).toBe(0);
    expectLinesFit(p.stderr, 'produce');
  });
});

describe.concurrent('bench on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);

  it.skipIf(!up)('APT: 2 ms and 8 ms with equal counts is 5 ms; with counts 3:1 it is 3.5 ms (each within 5%)', async () => {
    for (const [fixture, expected, counts] of [
      ['bench-apt-equal', 5, { fast: 200, slow: 200 }],
      ['bench-apt-3-to-1', 3.5, { slow: 150, fast: 450 }],
    ] as const) {
      const { scenario } = unique(fixture);
      const driver = await createDriver(AMQP_URL);
      await driver.connect();
      let report: Report;
      try {
        const result = await runBench(
          { scenario, seed: 1, runId: `apt-${randomBytes(3).toString('hex')}`, count: counts.slow === 200 ? 200 : 150, warmupMs: 200, quietMs: 5000 },
          { driver, clock: systemClock },
        );
        report = buildReport(result.data, { run_id: 'apt', role: 'all', settings });
      } finally {
        await driver.close();
        await deleteDestinations(AMQP_URL, scenario.destinations);
      }
      for (const [stage, c] of Object.entries(counts)) expect(report.handlers[stage]!.count, `${fixture} ${stage}`).toBe(c);
      expect(within(report.handlers['fast']!.t_ms, 2, 5), `${fixture} fast tᵢ ${report.handlers['fast']!.t_ms}`).toBe(true);
      expect(within(report.handlers['slow']!.t_ms, 8, 5), `${fixture} slow tᵢ ${report.handlers['slow']!.t_ms}`).toBe(true);
      expect(within(report.apt_ms, expected, 5), `${fixture} APT ${report.apt_ms}`).toBe(true);
      expect(report.loss).toBe(0);
      expect(report.payments.finished).toBe(report.payments.produced);
    }
  });

  it.skipIf(!up)('payq worker and payq bench give the same apt_ms (and apt_wall_ms beside it) for the same scenario, events and seed', async () => {
    const { scenario, file } = unique('bench-apt-3-to-1');
    try {
      const p = await runCli(['produce', '--broker', AMQP_URL, '--scenario', file, '--count', '80', '--seed', '9', '--json']);
      expect(p.code, p.stderr).toBe(0);
      const w = await runCli(['worker', '--broker', AMQP_URL, '--scenario', file, '--seed', '9', '--failures', 'off', '--idle-timeout', '2s', '--json']);
      expect(w.code, w.stderr).toBe(0);
      const worker = JSON.parse(w.stdout) as { totals: { apt_ms: number; apt_wall_ms: number; handled: number }; stages: { stage: string; t_ms: number }[] };
      const b = await runCli(['bench', '--broker', 'memory://', '--scenario', file, '--count', '80', '--seed', '9', '--failures', 'off', '--warmup', '0', '--json']);
      expect(b.code, b.stderr).toBe(0);
      const report = JSON.parse(b.stdout) as Report;
      expect(worker.totals.handled).toBe(80 + 240);
      // Constant drawn times: one definition gives one figure, to the digit; the wall time differs.
      expect(worker.totals.apt_ms).toBe(report.apt_ms);
      for (const s of worker.stages) expect(s.t_ms, s.stage).toBe(report.handlers[s.stage]!.t_ms);
      expect(within(report.apt_ms, 3.5, 1)).toBe(true);
      expect(worker.totals.apt_wall_ms).toBeGreaterThan(0);
      expect(report.apt_wall_ms).toBeGreaterThan(0);
    } finally {
      await deleteDestinations(AMQP_URL, scenario.destinations);
    }
  });

  it.skipIf(!up)('a queue purged mid-run shows as loss > 0 and the CLI exits 4', async () => {
    // The slow stage takes one message at a time, 20 ms each (50/s): its queue fills at 100 payments/s.
    const { scenario, file } = unique('bench-apt-equal', (t) => t.replace('{ distribution: constant, ms: 8 }', '{ distribution: constant, ms: 20 }'));
    const queue = scenario.stages[1]!.destination;
    const bench = startCli(['bench', '--broker', AMQP_URL, '--scenario', file, '--rate', '100', '--duration', '2s', '--warmup', '0', '--consumers', '1', '--json', path.join(dir, 'purged.json')]);
    const conn = await amqplib.connect(AMQP_URL);
    conn.on('error', () => undefined);
    try {
      // A check on a queue not declared yet closes the channel: a fresh one each time.
      const backlog = async (): Promise<number> => {
        const ch = await conn.createChannel();
        ch.on('error', () => undefined);
        try {
          return (await ch.checkQueue(queue)).messageCount;
        } catch {
          return 0;
        } finally {
          await ch.close().catch(() => undefined);
        }
      };
      await waitFor(async () => (await backlog()) >= 30, 30_000, `a backlog in ${queue}`);
      const ch = await conn.createChannel();
      // The slow stage may take a few more between the look and the purge: what counts is what went.
      const purged = (await ch.purgeQueue(queue)).messageCount;
      expect(purged).toBeGreaterThan(0);
      const code = await bench.exited;
      expect(code, bench.stderr()).toBe(4);
      expect(bench.stderr()).toMatch(/payq: error: \d[\d,]* of [\d,]+ acknowledged events were never consumed \(loss 0\.\d+/);
      const report = JSON.parse(readFileSync(path.join(dir, 'purged.json'), 'utf8')) as Report;
      expect(reportSchema.safeParse(report).success).toBe(true);
      expect(report.loss).toBeGreaterThan(0);
      // Everything purged had been acknowledged and was never consumed (the in-flight one was).
      expect(report.events.lost).toBeGreaterThanOrEqual(purged);
      expect(report.events).toMatchObject({ in_flight: 0, not_drained: 0 });
      expect(report.payments.finished).toBeLessThan(report.payments.produced);
    } finally {
      bench.child.kill('SIGKILL');
      await conn.close().catch(() => undefined);
      await deleteDestinations(AMQP_URL, scenario.destinations);
    }
  });
});

describe.concurrent('bench interrupted on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);

  it.skipIf(!up)('Ctrl-C with a backlog in a queue: exit 130, in flight counted, no loss', async () => {
    const { scenario, file } = unique('bench-apt-equal', slow);
    const queue = scenario.stages[1]!.destination;
    const json = path.join(dir, 'rabbit-sigint.json');
    const bench = startCli(['bench', '--broker', AMQP_URL, '--scenario', file, '--rate', '100', '--duration', '30s', '--warmup', '0', '--consumers', '1', '--json', json]);
    const conn = await amqplib.connect(AMQP_URL);
    conn.on('error', () => undefined);
    try {
      const backlog = async (): Promise<number> => {
        const ch = await conn.createChannel();
        ch.on('error', () => undefined);
        try {
          return (await ch.checkQueue(queue)).messageCount;
        } catch {
          return 0;
        } finally {
          await ch.close().catch(() => undefined);
        }
      };
      await waitFor(async () => (await backlog()) >= 30, 30_000, `a backlog in ${queue}`);
      await expectInterruptedNotLost(bench, json);
    } finally {
      bench.child.kill('SIGKILL');
      await conn.close().catch(() => undefined);
      await deleteDestinations(AMQP_URL, scenario.destinations);
    }
  });
});

describe.concurrent('bench parts on RabbitMQ (--role)', async () => {
  const up = await brokerAvailable(AMQP_URL);

  it.skipIf(!up)('a tracer, a worker and a producer in three processes; report --merge gives the whole run', async () => {
    const { scenario, file } = unique('checkout');
    const runId = `parts-${randomBytes(4).toString('hex')}`;
    const out = (role: string) => path.join(dir, `${runId}-${role}.json`);
    const common = ['--broker', AMQP_URL, '--scenario', file, '--run-id', runId, '--time-scale', '0.1'];
    const tracer = startCli(['bench', ...common, '--role', 'tracer', '--idle-timeout', '2s', '--json', out('tracer')]);
    const worker = startCli(['bench', ...common, '--role', 'worker', '--idle-timeout', '2s', '--json', out('worker')]);
    try {
      await tracer.waitForStderr('tracer: subscribed, waiting for the events of run');
      await worker.waitForStderr('worker: subscribed, waiting for the events of run');
      const producer = await runCli(['bench', ...common, '--role', 'producer', '--count', '500', '--rate', '500', '--warmup', '500ms', '--json', out('producer')]);
      expect(producer.code, producer.stderr).toBe(0);
      expect(await worker.exited, worker.stderr()).toBe(0);
      expect(await tracer.exited, tracer.stderr()).toBe(0);
      const parts = ['producer', 'worker', 'tracer'].map((role) => JSON.parse(readFileSync(out(role), 'utf8')) as Report);
      expect(parts.map((p) => [p.role, p.loss])).toEqual([['producer', null], ['worker', null], ['tracer', null]]);

      const merged = await runCli(['report', '--merge', out('producer'), out('worker'), out('tracer'), '--json', '--assert', 'loss==0']);
      expect(merged.code, merged.stderr).toBe(0);
      const m = JSON.parse(merged.stdout) as Report;
      expect(reportSchema.safeParse(m).success).toBe(true);
      expect(m).toMatchObject({ role: 'merged', merged_from: 3, run_id: runId, loss: 0 });
      expect(m.payments.produced).toBe(500);
      // Failures are on in checkout: dead-lettered payments finish too (class dead-lettered).
      expect(m.payments.finished).toBe(500);
      expect(m.handlers['payment-service']!.count + m.dlq.total).toBeGreaterThanOrEqual(500);
      expect(m.events.lost).toBe(0);
      expect(m.events.acknowledged).toBe(m.events.consumed);
      expect(m.latency.end_to_end.count).toBe(500);
    } finally {
      tracer.child.kill('SIGKILL');
      worker.child.kill('SIGKILL');
      await deleteDestinations(AMQP_URL, scenario.destinations);
    }
  });
});

describe.concurrent('bench on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);

  it.skipIf(!up)('a clean run at a rate passes CI assertions: loss 0, availability 1, every payment finished', async () => {
    const { scenario, file, groups } = unique('checkout');
    const json = path.join(dir, 'kafka.json');
    try {
      const r = await runCli(
        ['bench', '--broker', KAFKA_URL, '--scenario', file, '--rate', '300', '--duration', '3s', '--warmup', '1s', '--time-scale', '0.2', '--partitions', '2',
          '--json', json, '--assert', 'loss==0', '--assert', 'availability==1', '--assert', 'unfinished==0', '--assert', 'p99_ms<30000'],
        { timeoutMs: 110_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      // The broker's API-version text wraps inside its row: the table still fits.
      expectLinesFit(r.stderr, 'bench on Kafka');
      expect(r.stderr).toMatch(/│ broker version +│ Kafka protocol/);
      const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
      expect(reportSchema.safeParse(report).success).toBe(true);
      expect(report.settings).toMatchObject({ broker: KAFKA_URL, rate_per_s: 300 });
      expect(report.settings.broker_version).toBeTruthy();
      expect(report.events).toMatchObject({ lost: 0, unacknowledged: 0 });
      expect(report.events.acknowledged).toBeGreaterThan(report.producers.acked);
      expect(report.payments.finished).toBe(report.payments.produced);
      // About 3 s at 300/s, all measured (the warm-up's payments are not among them).
      expect(report.payments.produced).toBeGreaterThan(600);
      expect(report.payments.produced).toBeLessThanOrEqual(901);
      // With a rate, latency counts from the intended send times too.
      expect(report.latency.publish_delay?.count).toBe(report.payments.produced);
      expect(report.latency.publish_from_intended?.count).toBe(report.payments.produced);
      expect(Object.keys(report.latency.hops)).toEqual([...scenario.stages.map((s) => s.name), 'sink']);
    } finally {
      await sleep(200);
      await deleteDestinations(KAFKA_URL, scenario.destinations, { groups });
    }
  });

  it.skipIf(!up)('Ctrl-C with a backlog in a topic: exit 130, in flight counted, no loss', async () => {
    const { scenario, file, groups } = unique('bench-apt-equal', slow);
    const topic = scenario.stages[1]!.destination;
    const json = path.join(dir, 'kafka-sigint.json');
    const bench = startCli(['bench', '--broker', KAFKA_URL, '--scenario', file, '--rate', '100', '--duration', '60s', '--warmup', '0', '--consumers', '1', '--partitions', '1', '--json', json]);
    const kafka = new Kafka({ clientId: 'payq-test-sigint', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const written = async (): Promise<number> => {
        try {
          return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
        } catch {
          return 0;
        }
      };
      await waitFor(async () => (await written()) >= 80, 60_000, `messages in ${topic}`);
      await expectInterruptedNotLost(bench, json);
    } finally {
      bench.child.kill('SIGKILL');
      await admin.disconnect().catch(() => undefined);
      await sleep(200);
      await deleteDestinations(KAFKA_URL, scenario.destinations, { groups });
    }
  });

  it.skipIf(!up)('a drain cut short with a backlog on the broker: "not drained", exit 0 (not 4), loss 0', async () => {
    const { scenario, file, groups } = unique('bench-apt-equal', slow);
    const json = path.join(dir, 'kafka-not-drained.json');
    try {
      const r = await runCli(
        ['bench', '--broker', KAFKA_URL, '--scenario', file, '--rate', '100', '--duration', '3s', '--warmup', '0', '--consumers', '1', '--partitions', '1', '--drain-timeout', '1s', '--json', json],
        { timeoutMs: 110_000 },
      );
      expect(r.code, r.stderr).toBe(0);
      expect(r.stderr).toMatch(/the drain timed out after 1 s: [1-9][\d,]* acknowledged events not drained/);
      expect(r.stderr).not.toMatch(/never consumed|payq: error/);
      const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
      expect(report.loss).toBe(0);
      expect(report.events).toMatchObject({ lost: 0, in_flight: 0 });
      expect(report.events.not_drained).toBeGreaterThan(0);
      expect(report.events.consumed + report.events.not_drained).toBe(report.events.acknowledged);
    } finally {
      await sleep(200);
      await deleteDestinations(KAFKA_URL, scenario.destinations, { groups });
    }
  });

  it.skipIf(!up)("a topic's records deleted mid-run show as loss > 0 and the CLI exits 4", async () => {
    // The slow stage takes one message at a time, 20 ms each (50/s): its topic fills at 100 payments/s.
    const { scenario, file, groups } = unique('bench-apt-equal', (t) => t.replace('{ distribution: constant, ms: 8 }', '{ distribution: constant, ms: 20 }'));
    const topic = scenario.stages[1]!.destination;
    const json = path.join(dir, 'deleted.json');
    const bench = startCli(['bench', '--broker', KAFKA_URL, '--scenario', file, '--rate', '100', '--duration', '3s', '--warmup', '0', '--consumers', '1', '--partitions', '1', '--json', json]);
    const kafka = new Kafka({ clientId: 'payq-test-delete-records', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      const written = async (): Promise<number> => {
        try {
          return (await admin.fetchTopicOffsets(topic)).reduce((n, p) => n + Number(p.high), 0);
        } catch {
          return 0; // not created yet
        }
      };
      // The slow stage falls behind by ~50 messages a second: delete what it has not read yet.
      await waitFor(async () => (await written()) >= 80, 30_000, `messages in ${topic}`);
      const offsets = await admin.fetchTopicOffsets(topic);
      await admin.deleteTopicRecords({ topic, partitions: offsets.map((p) => ({ partition: p.partition, offset: p.high })) });
      const code = await bench.exited;
      expect(code, bench.stderr()).toBe(4);
      expect(bench.stderr()).toMatch(/payq: error: \d[\d,]* of [\d,]+ acknowledged events were never consumed \(loss 0\.\d+/);
      const report = JSON.parse(readFileSync(json, 'utf8')) as Report;
      expect(reportSchema.safeParse(report).success).toBe(true);
      expect(report.loss).toBeGreaterThan(0);
      expect(report.events.lost).toBeGreaterThan(0);
      expect(report.events).toMatchObject({ in_flight: 0, not_drained: 0 });
      expect(report.payments.finished).toBeLessThan(report.payments.produced);
    } finally {
      bench.child.kill('SIGKILL');
      await admin.disconnect().catch(() => undefined);
      await sleep(200);
      await deleteDestinations(KAFKA_URL, scenario.destinations, { groups });
    }
  });
});
