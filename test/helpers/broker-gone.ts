/**
 * Issue #15: a broker that goes away for good ends every command that subscribes, written once
 * for every broker's drill (test/e2e/broker-gone.test.ts: NATS and RabbitMQ; the Kafka drill can
 * call it with its own broker, last, since the broker does not come back). `consume`, `worker`,
 * `trace`, `replay-dlq` and `bench` run at once with `--reconnect-timeout 3s` and idle timeouts of
 * 10 minutes; once each is under way the broker is stopped for good. Each must exit 3 with one
 * line saying the broker stayed away past --reconnect-timeout and what was done (no stack trace),
 * its JSON saying `broker_gone`, and nothing counted as lost: trace leaves the payments in flight
 * unjudged (no --expect verdict), bench writes its partial report with the unconsumed events in
 * flight, loss 0. Without the watch on the link (LinkStatus `gone`) the commands would wait for
 * their idle timeouts, and the caller's test would time out.
 */
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { expect } from 'vitest';
import { parseScenario } from '../../src/events/scenario.js';
import { uniqueName } from './brokers.js';
import { runCli } from './cli.js';
import { declareLayout } from './layout.js';
import { startCli, type Background } from './spawn.js';
import { waitFor } from './wait.js';

const RECONNECT = ['--reconnect-timeout', '3s'];
const PAYMENTS = 20;

/** A broker the test can stop for good, and a plain client's count of the messages it holds. */
export interface GoneBroker {
  url: string;
  /** Messages now held in each of `destinations`, added up. */
  held(destinations: string[]): Promise<number>;
  stopForGood(): Promise<void>;
}

/** The checkout scenario under a name and destinations of its own. */
function scenarioFile(tmp: string, prefix: string): { file: string; destinations: string[] } {
  const text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')
    .replaceAll('checkout.', `${prefix}.`)
    .replace(/^name: checkout$/m, `name: gone-${prefix.slice(-8).replace(/[^a-z0-9]/g, '')}`);
  const file = path.join(tmp, `${prefix}.yaml`);
  writeFileSync(file, text);
  return { file, destinations: parseScenario(text, file).destinations };
}

const goneLine = /the broker stayed away longer than --reconnect-timeout \(3 s\)/;

/** Exit 3, one line saying the broker stayed away and how `what` ended, no stack trace. */
async function expectGone(run: Background, what: RegExp): Promise<void> {
  const code = await run.exited;
  const stderr = run.stderr();
  expect(code, stderr).toBe(3);
  const lines = stderr.split('\n').filter((l) => goneLine.test(l));
  expect(lines, stderr).toHaveLength(1);
  expect(lines[0]).toMatch(/^payq: error: /);
  expect(lines[0]).toMatch(what);
  expect(stderr).not.toMatch(/\n\s+at /);
  process.stderr.write(`broker-gone: ${lines[0]}\n`);
}

export interface RideOutOptions {
  /** How long each command may take to be subscribed (a Kafka group join under load: longer). */
  readyMs?: number;
}

/** Runs the five against `broker`, stops it for good, and checks how each ended (see the header). */
export async function rideOutBrokerGone(broker: GoneBroker, name: string, options: RideOutOptions = {}): Promise<void> {
  const readyMs = options.readyMs ?? 60_000;
  const tmp = mkdtempSync(path.join(tmpdir(), 'payq-broker-gone-'));
  const started: Background[] = [];
  const start = (args: string[]) => {
    const run = startCli([...args, ...RECONNECT]);
    started.push(run);
    return run;
  };
  try {
    const prefix = uniqueName(`gone-${name}`);
    const pipeline = scenarioFile(tmp, prefix);
    const benched = scenarioFile(tmp, `${prefix}-bench`);
    const [orders, authorizations, , , sink] = pipeline.destinations as [string, string, string, string, string];
    // Readers never create: the layout exists before they start (as worker would declare it).
    // bench's too: on Kafka a topic just created has no leader for a moment, longer than the
    // commands' short --reconnect-timeout would wait for it.
    await declareLayout(broker.url, [...pipeline.destinations, ...benched.destinations]);
    const reportFile = path.join(tmp, `${prefix}-bench.json`);
    const url = broker.url;

    // A tap on the entry: prints what is produced.
    const consume = start(['consume', '--broker', url, '--topic', orders, '--idle-timeout', '10m', '--json']);
    // Only the first stage: its payments stay in flight at payment_authorized (or end declined).
    const worker = start(['worker', '--broker', url, '--scenario', pipeline.file, '--stage', 'payment-service', '--time-scale', '0', '--failures', 'off', '--idle-timeout', '10m', '--json', '-v']);
    // At its end --expect would fail every payment in flight: cut off by the broker, none may be judged.
    const trace = start(['trace', '--broker', url, '--scenario', pipeline.file, '--expect', 'order_completed|payment_declined', '--stuck-after', '10m', '--idle-timeout', '10m', '--json']);
    // An empty DLQ: the run waits for dead letters.
    const replay = start(['replay-dlq', '--broker', url, '--dlq', `${orders}.dlq`, '--idle-timeout', '10m', '--json', '-v']);
    // A whole pipeline of its own, for 10 minutes.
    const bench = start(['bench', '--broker', url, '--scenario', benched.file, '--rate', '20', '--duration', '10m', '--warmup', '0s', '--time-scale', '0', '--json', reportFile, '-v']);
    await Promise.all([
      consume.waitForStderr('consuming ', readyMs),
      worker.waitForStderr('worker: subscribed', readyMs),
      trace.waitForStderr('trace: watching', readyMs),
      replay.waitForStderr('replay-dlq: subscribed', readyMs),
      bench.waitForStderr('bench: measure', readyMs),
    ]);

    const produced = await runCli(['produce', '--broker', url, '--scenario', pipeline.file, '--count', String(PAYMENTS), '--seed', '15', '--json']);
    expect(produced.code, produced.stderr).toBe(0);
    // Under way: consume printed every entry event, the worker handled every one of them.
    await waitFor(() => consume.stdout().trim().split('\n').filter(Boolean).length >= PAYMENTS, 30_000, () => `consume to print ${PAYMENTS} events: ${consume.stdout()}`);
    await waitFor(async () => (await broker.held([authorizations, sink])) >= PAYMENTS, 30_000, `the worker to handle ${PAYMENTS} payments`);

    await broker.stopForGood();

    await expectGone(consume, new RegExp(`consume stopped: consumed ${PAYMENTS}, printed ${PAYMENTS} so far \\(a tap takes nothing away\\)`));

    await expectGone(worker, new RegExp(`worker stopped: ${PAYMENTS} events handled; .*nothing is lost`));
    expect(JSON.parse(worker.stdout())).toMatchObject({ broker_gone: true, stopped_by: 'broker-gone', totals: { handled: PAYMENTS } });

    await expectGone(trace, /trace stopped without a verdict: \d+ payments? finished, [1-9]\d* in flight when it went away/);
    const traced = JSON.parse(trace.stdout()) as {
      broker_gone: boolean;
      payments: { seen: number; finished: number; in_flight: number; stuck: number };
      expectation: { passed: number; failed: number };
    };
    expect(traced.broker_gone).toBe(true);
    // Every payment seen; the declined ones finished (and passed), the others in flight: none failed, none stuck.
    expect(traced.payments.seen).toBe(PAYMENTS);
    expect(traced.payments.in_flight).toBeGreaterThan(0);
    expect(traced.payments.finished + traced.payments.in_flight).toBe(PAYMENTS);
    expect(traced.payments.stuck).toBe(0);
    expect(traced.expectation).toMatchObject({ passed: traced.payments.finished, failed: 0 });

    await expectGone(replay, /replay-dlq stopped: 0 replayed and 0 parked; every other message is still in the DLQ/);
    expect(JSON.parse(replay.stdout())).toMatchObject({ broker_gone: true, stopped_by: 'broker-gone', replayed: 0, failed: 0 });

    await expectGone(bench, /bench stopped: the report covers the first [\d.]+ s, [\d,]+ acknowledged events? and [\d,]+ payments? in flight \(not counted as lost\)/);
    const report = JSON.parse(readFileSync(reportFile, 'utf8')) as {
      loss: number;
      connection: { broker_gone: boolean };
      producers: { acked: number };
      events: { lost: number; acknowledged: number; consumed: number; in_flight: number };
    };
    expect(report.connection.broker_gone).toBe(true);
    expect(report.producers.acked).toBeGreaterThan(0);
    expect(report.events.lost).toBe(0);
    expect(report.loss).toBe(0);
    // Every acknowledged event not consumed is in flight (a send whose confirm was lost with the
    // broker may have been stored and consumed all the same: consumed can exceed acknowledged).
    expect(report.events.in_flight).toBe(Math.max(0, report.events.acknowledged - report.events.consumed));
    process.stderr.write(
      `broker-gone ${name}: trace ${traced.payments.finished} finished, ${traced.payments.in_flight} in flight; bench acknowledged ${report.events.acknowledged}, consumed ${report.events.consumed}, in flight ${report.events.in_flight}\n`,
    );
  } finally {
    for (const run of started) if (run.child.exitCode === null) run.child.kill('SIGKILL');
    rmSync(tmp, { recursive: true, force: true });
  }
}
