/**
 * The fleet of deploy/kubernetes/ on real Kafka, without Kubernetes: the exact commands of the
 * manifests' pods (JOB_COMPLETION_INDEX set per pod, the broker URL, scenario, run id and the
 * report folder replaced by the test's own) run as local processes, in the order the README's
 * Kubernetes steps give, then the merge Job's command. Its merged report must be the report of
 * one process running the same seed: the same payments, the same classes, loss 0.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { Kafka, logLevel } from 'kafkajs';
import { parse, stringify } from 'yaml';
import { afterAll, describe, expect, it } from 'vitest';
import { benchSinkGroup } from '../../src/core/bench.js';
import { workerGroup } from '../../src/core/worker.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { parseReport, type Report } from '../../src/metrics/report.js';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { BIN, expectOneErrorLine, runCli } from '../helpers/cli.js';
import { createTopicsAndWait } from '../helpers/kafka.js';
import { jobOf, jobSpec, loadManifests, podCommand, type Manifest } from '../helpers/manifests.js';

const available = await brokerAvailable(KAFKA_URL);
const SEED = '4242';
const COUNT = 240;
const RATE = 120;

const work = mkdtempSync(path.join(tmpdir(), 'payq-fleet-'));
const cleanups: Array<() => Promise<void>> = [];
afterAll(async () => {
  for (const c of cleanups.splice(0).reverse()) await c();
  rmSync(work, { recursive: true, force: true });
});

/** checkout with destinations, groups and a name of its own, written to a file for --scenario. */
function scenarioCopy(prefix: string): { file: string; scenario: Scenario } {
  const config = parse(readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replaceAll('checkout.', `${prefix}.`)) as { name: string };
  config.name = `fleet-${prefix.slice(-12).replace(/[^a-z0-9]/g, '')}`;
  const text = stringify(config);
  const file = path.join(work, `${config.name}.yaml`);
  writeFileSync(file, text);
  return { file, scenario: parseScenario(text, file) };
}

/** Deletes the scenario's topics (with .dlq) and the consumer groups bench's parts use. */
function cleanupScenario(scenario: Scenario): void {
  cleanups.push(() =>
    deleteDestinations(KAFKA_URL, [...scenario.destinations, scenario.sink], {
      groups: [...scenario.stages.map((s) => workerGroup(scenario, s)), benchSinkGroup(scenario)],
    }),
  );
}

interface Pod {
  name: string;
  child: ChildProcess;
  stderr: () => string;
  stdout: () => string;
  exit: Promise<number | null>;
}

// Side by side: each case has topics, groups and a scenario of its own.
describe.skipIf(!available)('the Kubernetes fleet, run as local processes on Kafka', { concurrent: true }, () => {
  it('producer shards, workers and tracer shards merge into the report of one process with the same seed', async () => {
    const manifests = loadManifests();
    const fleet = scenarioCopy(uniqueName('fleet'));
    const single = scenarioCopy(uniqueName('fleet-single'));
    cleanupScenario(fleet.scenario);
    cleanupScenario(single.scenario);
    const reports = path.join(work, 'reports');
    mkdirSync(reports, { recursive: true });
    // The image has payq on its PATH (/usr/local/bin/payq): here, the repository's bin/payq.js.
    mkdirSync(path.join(work, 'bin'), { recursive: true });
    const shim = path.join(work, 'bin', 'payq');
    writeFileSync(shim, `#!/bin/sh\nexec "${process.execPath}" "${BIN}" "$@"\n`);
    chmodSync(shim, 0o755);
    const runId = `fleet-${Date.now().toString(36)}`;
    const overrides = { PAYQ_BROKER: KAFKA_URL, PAYQ_SCENARIO: fleet.file, PAYQ_RUN_ID: runId, PAYQ_SEED: SEED };

    const pods: Pod[] = [];
    cleanups.push(async () => {
      for (const p of pods) if (p.child.exitCode === null && p.child.signalCode === null) p.child.kill('SIGINT');
      await Promise.all(pods.map((p) => p.exit));
    });
    /** Starts pod `index` of the Job as a local process. */
    const start = (job: Manifest, index: number | undefined, replaced: Record<string, string>): Pod => {
      const { argv, env } = podCommand(manifests, job, index, replaced);
      // The pods' shared volume is mounted at /reports: here, the test's folder.
      const local = argv.map((a) => a.replaceAll('/reports/', `${reports}/`));
      const child = spawn(local[0]!, local.slice(1), {
        env: { ...process.env, ...env, PATH: `${path.join(work, 'bin')}:${process.env['PATH']}`, CI: 'true', NO_COLOR: '1' },
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let stdout = '';
      let stderr = '';
      child.stdout!.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr!.setEncoding('utf8').on('data', (d: string) => (stderr += d));
      const exit = new Promise<number | null>((resolve) => child.on('close', (code) => resolve(code)));
      const pod = { name: `${job.metadata.name}-${index ?? 0}`, child, stdout: () => stdout, stderr: () => stderr, exit };
      pods.push(pod);
      return pod;
    };
    const startJob = (component: string, replaced: Record<string, string> = overrides): Pod[] => {
      const job = jobOf(manifests, component);
      const spec = jobSpec(job);
      return Array.from({ length: spec.completions ?? 1 }, (_, k) => start(job, spec.completionMode === 'Indexed' ? k : undefined, replaced));
    };
    const waitFor = async (pod: Pod, pattern: RegExp) => {
      const deadline = Date.now() + 120_000;
      while (!pattern.test(pod.stderr())) {
        if (pod.child.exitCode !== null) throw new Error(`${pod.name} ended (${pod.child.exitCode}) before ${pattern}: ${pod.stderr()}`);
        if (Date.now() > deadline) throw new Error(`${pod.name}: no ${pattern} within 120 s: ${pod.stderr()}`);
        await new Promise((r) => setTimeout(r, 200));
      }
    };
    const succeeded = async (group: Pod[]) => {
      for (const p of group) expect(await p.exit, `${p.name}: ${p.stderr()}`).toBe(0);
    };

    // The README's steps: tracers and workers first, until each says it is subscribed; then the producers.
    const tracers = startJob('tracer');
    const workers = startJob('worker');
    for (const p of [...tracers, ...workers]) await waitFor(p, new RegExp(`subscribed, waiting for the events of run ${runId}`));
    const producers = startJob('producer', { ...overrides, PAYQ_COUNT: String(COUNT), PAYQ_RATE: String(RATE) });
    await succeeded(producers);
    await succeeded(workers);
    await succeeded(tracers);
    // The merge reads only the shared folder: nothing of the broker's to replace.
    const [merge] = startJob('merge', {});
    await succeeded([merge!]);
    const merged = parseReport(readFileSync(path.join(reports, 'merged.json'), 'utf8'), 'the merge Job');
    // Its log is the verdict: the merged report as a table, the assertion passed.
    expect(merge!.stderr()).toMatch(/merged \d+ parts from \d+ reports: run /);
    expect(merge!.stderr()).toMatch(/✓ loss==0 \(0\)/);

    // The same seed in one process, on topics of its own.
    const one = await runCli(['bench', '--broker', KAFKA_URL, '--scenario', single.file, '--seed', SEED, '--count', String(COUNT), '--rate', String(RATE), '--json'], {
      timeoutMs: 180_000,
    });
    expect(one.code, one.stderr).toBe(0);
    const alone = parseReport(one.stdout, 'the single-process run');

    const tracerShards = jobSpec(jobOf(manifests, 'tracer')).completions!;
    const producerShards = jobSpec(jobOf(manifests, 'producer')).completions!;
    expect(tracerShards).toBeGreaterThan(1);
    expect(producerShards).toBeGreaterThan(1);
    expect(merged.role).toBe('merged');
    expect(merged.run_id).toBe(runId);
    expect(merged.parts).toHaveLength(producers.length + workers.length + tracers.length);
    // Same payments, same classes, nothing lost.
    expect(alone.payments.produced).toBe(COUNT);
    expect(merged.payments.produced).toBe(alone.payments.produced);
    expect(merged.payments.finished).toBe(alone.payments.finished);
    expect(merged.payments.by_class).toEqual(alone.payments.by_class);
    expect(merged.payments.stuck).toBe(0);
    expect(merged.payments.in_flight).toBe(0);
    expect(merged.loss).toBe(0);
    expect(merged.events.lost).toBe(0);
    expect(alone.loss).toBe(0);
    expect(merged.events.duplicates).toBe(alone.events.duplicates);
    expect(merged.dlq.by_reason).toEqual(alone.dlq.by_reason);
    // Every shard did its part: each producer sent its share, each tracer followed some payments.
    const partReports = (prefix: string): Report[] =>
      Array.from({ length: prefix === 'tracer' ? tracerShards : producerShards }, (_, k) => parseReport(readFileSync(path.join(reports, `${prefix}-${k + 1}.json`), 'utf8'), `${prefix}-${k + 1}`));
    const sentByShard = partReports('producer').map((r) => r.payments.produced);
    expect(sentByShard.reduce((a, b) => a + b, 0)).toBe(COUNT);
    for (const n of sentByShard) expect(n).toBe(COUNT / producerShards);
    const tracedByShard = partReports('tracer').map((r) => r.payments.finished);
    for (const n of tracedByShard) expect(n).toBeGreaterThan(0);
    expect(tracedByShard.reduce((a, b) => a + b, 0)).toBe(COUNT);
  }, 420_000);

  it('payq trace --shard i/N on Kafka: the shards see disjoint payments that add up to one tracer', async () => {
    const topic = uniqueName('fleet-trace');
    cleanups.push(() => deleteDestinations(KAFKA_URL, [topic]));
    const produced = await runCli(['produce', '--broker', KAFKA_URL, '--topic', topic, '--partitions', '4', '--count', '60', '--lifecycle', '--seed', '5', '--json']);
    expect(produced.code, produced.stderr).toBe(0);
    const traceShard = async (shard: string[]) => {
      const r = await runCli(['trace', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--idle-timeout', '3s', '--stuck-after', '2s', '--json', ...shard]);
      expect(r.code, r.stderr).toBe(0);
      return JSON.parse(r.stdout) as { shard: string | null; payments: { seen: number }; events: { seen: number; other_shards: number } };
    };
    const whole = await traceShard([]);
    expect(whole.payments.seen).toBe(60);
    const shards = [await traceShard(['--shard', '1/2']), await traceShard(['--shard', '2/2'])];
    expect(shards.map((s) => s.shard)).toEqual(['1/2', '2/2']);
    // Split by partition: each shard reads only its partitions, so it skips nothing itself.
    for (const s of shards) {
      expect(s.payments.seen).toBeGreaterThan(0);
      expect(s.events.other_shards).toBe(0);
    }
    expect(shards[0]!.payments.seen + shards[1]!.payments.seen).toBe(whole.payments.seen);
    expect(shards[0]!.events.seen + shards[1]!.events.seen).toBe(whole.events.seen);
  }, 180_000);

  it('refuses a shard where it cannot split: a group member, a worker part, a one-process bench (exit 2)', async () => {
    const group = await runCli(['trace', '--broker', KAFKA_URL, '--group', uniqueName('g'), '--shard', '1/2', '--start-timeout', '5s']);
    expect(group.code, group.stderr).toBe(2);
    expect(group.stderr).toMatch(/--shard goes with a tap \(no --group\)/);
    for (const args of [['--role', 'worker', '--run-id', 'x'], []]) {
      const r = await runCli(['bench', '--broker', KAFKA_URL, ...args, '--shard', '1/2']);
      expect(r.code, r.stderr).toBe(2);
      expectOneErrorLine(r.stderr, /--shard splits a producer or tracer part \(--role producer or --role tracer\)/);
    }
  }, 60_000);

  it('refuses to shard by partition over topics whose partition counts differ (exit 2, one line)', async () => {
    const a = uniqueName('fleet-p2');
    const b = uniqueName('fleet-p3');
    cleanups.push(() => deleteDestinations(KAFKA_URL, [a, b]));
    const kafka = new Kafka({ brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
    const admin = kafka.admin();
    await admin.connect();
    try {
      await createTopicsAndWait(admin, [
        { topic: a, numPartitions: 2 },
        { topic: b, numPartitions: 3 },
      ]);
    } finally {
      await admin.disconnect();
    }
    const r = await runCli(['trace', '--broker', KAFKA_URL, '--topic', a, '--topic', b, '--shard', '1/2', '--idle-timeout', '1s', '--start-timeout', '5s']);
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr.split('\n').filter((l) => !l.startsWith('trace: ')).join('\n'), new RegExp(`--shard 1/2 splits by partition.*differ \\(${a.replaceAll('.', '\\.')} 2, ${b.replaceAll('.', '\\.')} 3\\)`));
    // A shard past the partition count would read nothing: refused too.
    const none = await runCli(['trace', '--broker', KAFKA_URL, '--topic', a, '--shard', '3/3', '--idle-timeout', '1s', '--start-timeout', '5s']);
    expect(none.code, none.stderr).toBe(2);
    expect(none.stderr).toMatch(/--shard 3\/3: the topics have 2 partitions, so shard 3 would read none; use at most 2 shards/);
  }, 120_000);
});
