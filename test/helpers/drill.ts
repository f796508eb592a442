/** What the failure drills check the same way on every broker, and the parts they share. */
import { existsSync, mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, expect, it } from 'vitest';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, DriverOptions } from '../../src/drivers/types.js';
import { reportSchema } from '../../src/metrics/report.js';
import { uniqueName } from './brokers.js';
import { runCli } from './cli.js';
import { scenarioCopy } from './scenario-file.js';
import { startCli, type Background } from './spawn.js';
import { waitFor, withTimeout } from './wait.js';

/**
 * The payments that entered and did not end: an independent reader's verdict, from the entry
 * events and the sink's events (each a payment id and an event type).
 */
export function unfinishedPayments(entered: ReadonlyArray<{ payment: string }>, ended: ReadonlyArray<{ payment: string; event: string }>): {
  unfinished: string[];
  refundsOpen: string[];
} {
  const finishedBy = new Map<string, Set<string>>();
  for (const e of ended) (finishedBy.get(e.payment) ?? finishedBy.set(e.payment, new Set()).get(e.payment)!).add(e.event);
  const unfinished = entered
    .filter((e) => {
      const events = finishedBy.get(e.payment);
      return !events || !(events.has('payment_declined') || events.has('order_completed'));
    })
    .map((e) => e.payment);
  // Refunds requested are completed too.
  const refundsAsked = new Set(ended.filter((e) => e.event === 'refund_requested').map((e) => e.payment));
  const refundsOpen = [...refundsAsked].filter((pay) => !finishedBy.get(pay)!.has('refund_completed'));
  return { unfinished, refundsOpen };
}

/** What a drill is handed to take part in the one outage its file's drills share. */
export interface OutageHooks {
  /**
   * The drill is set up and its runs are under way: the broker may be killed now. `duringOutage`
   * is called once the broker process is gone (from the restart's own callback); what it throws
   * fails this drill. Resolves with the outage in ms (kill → broker answering) once the broker
   * answers again; rejects if the restart failed.
   */
  midFlight(duringOutage?: () => void): Promise<number>;
  /**
   * Resolves once every other drill is mid-flight (or failed, or waits here too): for a drill
   * whose run is bounded in time (bench's --duration), so that it starts just before the kill.
   */
  othersMidFlight(): Promise<void>;
}

/** One drill: its set-up, `midFlight`, then its checks after the restart; resolves with its figures. */
export type OutageDrill<T> = (hooks: OutageHooks) => Promise<T>;

/**
 * Runs every drill at once and restarts the broker once for all of them: each drill prepares in
 * parallel and says when it is mid-flight; once every drill is (or has already failed), `restart`
 * kills the broker, calls `onKilled` (which runs the drills' during-outage steps) and resolves
 * with the outage; then every drill goes on with its checks, concurrently.
 *
 * `outcomes` holds each drill's promise, for its own test to await (a failure is that test's
 * error; the promises never count as unhandled rejections). `restarted` resolves with the outage
 * once the restart is over, or rejects with the restart's error: a hook awaits it.
 */
export function acrossOneRestart<K extends string, T>(
  drills: Record<K, OutageDrill<T>>,
  restart: (onKilled: () => void) => Promise<number>,
): { outcomes: Record<K, Promise<T>>; restarted: Promise<number> } {
  let resolveOver!: (ms: number) => void;
  let rejectOver!: (err: unknown) => void;
  const over = new Promise<number>((resolve, reject) => {
    resolveOver = resolve;
    rejectOver = reject;
  });
  over.catch(() => undefined);
  const duringOutage: (() => void)[] = [];
  const ready: Promise<void>[] = [];
  const outcomes = {} as Record<K, Promise<T>>;
  const names = Object.keys(drills) as K[];
  // Drills mid-flight, failed or waiting for the others; and who waits for the others.
  const settled = new Set<K>();
  const waiting = new Map<K, () => void>();
  const recheck = () => {
    for (const [name, go] of waiting) {
      if (names.every((other) => other === name || settled.has(other) || waiting.has(other))) {
        waiting.delete(name);
        go();
      }
    }
  };
  for (const name of names) {
    let markReady!: () => void;
    const isReady = new Promise<void>((resolve) => (markReady = resolve));
    void isReady.then(() => {
      settled.add(name);
      recheck();
    });
    let midFlightCalled = false;
    let duringError: { error: unknown } | undefined;
    const hooks: OutageHooks = {
      midFlight(during) {
        if (midFlightCalled) throw new Error(`drill ${name}: midFlight called twice`);
        midFlightCalled = true;
        if (during) {
          duringOutage.push(() => {
            try {
              during();
            } catch (error) {
              duringError = { error };
            }
          });
        }
        markReady();
        return over.then((ms) => {
          if (duringError) throw duringError.error;
          return ms;
        });
      },
      othersMidFlight() {
        return new Promise<void>((resolve) => {
          waiting.set(name, resolve);
          recheck();
        });
      },
    };
    const outcome = Promise.resolve().then(() => drills[name](hooks));
    // A copy with a no-op catch: a drill that fails before its test awaits it is not unhandled.
    outcome.catch(() => undefined);
    outcomes[name] = outcome;
    // A drill that ended (failed) before it was mid-flight is not waited for.
    const ended = () => {
      settled.add(name);
      recheck();
    };
    void outcome.then(ended, ended);
    ready.push(Promise.race([isReady, outcome.then(noop, noop)]));
  }
  const restarted = (async () => {
    await Promise.all(ready);
    try {
      const ms = await restart(() => {
        for (const step of duringOutage) step();
      });
      resolveOver(ms);
      return ms;
    } catch (err) {
      rejectOver(err);
      throw err;
    }
  })();
  restarted.catch(() => undefined);
  return { outcomes, restarted };
}

function noop(): void {}

/** No stage ever fails: a pipeline drill's payments all complete. */
export const NO_FAILURES: Record<string, { transient: number; permanent: number }> = Object.fromEntries(
  ['payment-service', 'capture-service', 'fulfilment-service', 'refund-service'].map((stage) => [stage, { transient: 0, permanent: 0 }]),
);

/** The destination of a drill's scenario with this suffix (`.orders`, `.authorizations`, `.events`). */
export function destinationEnding(destinations: readonly string[], suffix: string): string {
  const found = destinations.find((d) => d.endsWith(suffix));
  if (found === undefined) throw new Error(`no destination ending in ${suffix} in ${destinations.join(', ')}`);
  return found;
}

/**
 * The replay drills' start: a scenario whose capture-service dead-letters every event it gets,
 * `payments` produced into it, and a worker on its first two stages until it is idle, so every
 * authorised payment waits in capture's DLQ. `on`: the flags that name the broker.
 */
export async function filledDlq(
  on: string[],
  options: { prefix: string; payments: number; seed: number; idle: string; timeoutMs: number },
): Promise<{ file: string; destinations: string[]; origin: string; dlq: string }> {
  const { file, destinations } = scenarioCopy(options.prefix, { failures: { ...NO_FAILURES, 'capture-service': { transient: 0, permanent: 1 } } });
  const origin = destinationEnding(destinations, '.authorizations');
  const filled = await runCli(['produce', ...on, '--scenario', file, '--count', String(options.payments), '--seed', String(options.seed), '--json'], { timeoutMs: options.timeoutMs });
  expect(filled.code, filled.stderr).toBe(0);
  const worker = await runCli(['worker', ...on, '--scenario', file, '--stage', 'payment-service,capture-service', '--time-scale', '0', '--idle-timeout', options.idle], {
    timeoutMs: options.timeoutMs,
  });
  expect(worker.code, worker.stderr).toBe(0);
  return { file, destinations, origin, dlq: `${origin}.dlq` };
}

/** A payment count no drill run reaches: such runs end on Ctrl-C. */
export const ENDLESS = 10_000_000;

/** `payq produce --json`'s summary, as the drills read it. */
export interface ProduceSummary {
  sent: number;
  acked: number;
  failed: number;
  unconfirmed: number;
  reconnects: number;
  unavailable_s: number;
  not_sent: number | null;
  errors: string[];
  interrupted: boolean;
  elapsed_s: number;
}

/**
 * The payq processes and drivers a drill file starts: each drill stops and closes its own,
 * afterAll whatever is left.
 */
export class DrillRuns {
  private readonly live = new Set<Background>();
  private readonly drivers = new Set<Driver>();

  start(args: string[]): Background {
    const run = startCli(args);
    this.live.add(run);
    void run.exited.then(() => this.live.delete(run));
    return run;
  }

  /** SIGKILL to those still running. */
  stop(...runs: Background[]): void {
    for (const run of runs) if (run.child.exitCode === null && run.child.signalCode === null) run.child.kill('SIGKILL');
  }

  /** A payq driver on `url`, connected. */
  async driver(url: string, options?: DriverOptions): Promise<Driver> {
    const driver = await createDriver(url, options);
    this.drivers.add(driver);
    await driver.connect();
    return driver;
  }

  async close(...drivers: Driver[]): Promise<void> {
    for (const d of drivers) {
      this.drivers.delete(d);
      await d.close().catch(() => undefined);
    }
  }

  /** Every process stopped, every driver closed. */
  async stopAll(): Promise<void> {
    this.stop(...this.live);
    await this.close(...this.drivers);
  }
}

/** A drill file's broker: started by beforeAll, restarted once for every drill, stopped by afterAll. */
export interface DrillBroker {
  start(): Promise<void>;
  /** The restart; `onKilled` once the broker is gone; resolves with the outage in ms. */
  restart(onKilled: () => void): Promise<number>;
  stop(): Promise<void>;
}

/**
 * The tests of a drill file, inside its describe: beforeAll starts the broker and every drill,
 * and restarts the broker once every drill is mid-flight (acrossOneRestart); each drill's test
 * awaits its outcome and prints its `drill figures:` line; afterAll stops what is left. Returns
 * the outcomes, for a test that comes after them all.
 */
export function drillTests<K extends string>(
  runs: DrillRuns,
  broker: DrillBroker,
  drills: Record<K, { title: string; drill: OutageDrill<string> }>,
  timeouts: { startMs: number; drillMs: number },
): () => Record<K, Promise<string>> {
  let outcomes: Record<K, Promise<string>> | undefined;
  beforeAll(async () => {
    await broker.start();
    const plan = acrossOneRestart(
      Object.fromEntries(Object.entries<{ drill: OutageDrill<string> }>(drills).map(([name, d]) => [name, d.drill])) as Record<K, OutageDrill<string>>,
      (onKilled) => broker.restart(onKilled),
    );
    outcomes = plan.outcomes;
    await plan.restarted;
  }, timeouts.startMs);
  afterAll(async () => {
    await runs.stopAll();
    await broker.stop();
  }, 60_000);
  for (const [name, { title }] of Object.entries<{ title: string }>(drills)) {
    it(title, async () => {
      console.log(await outcomes![name as K]);
    }, timeouts.drillMs);
  }
  return () => outcomes!;
}

/**
 * Once the broker is back, a run goes on until `more` further messages reached what `count`
 * counts (it resumed, and the outage is behind it), then Ctrl-C ends it: its summary still comes,
 * exit 130. `count` throws (or says undefined) while the broker does not answer.
 */
export async function interruptOnceResumed(run: Background, count: () => Promise<number | undefined>, more: number): Promise<number | null> {
  const now = () => count().catch(() => undefined);
  let back: number | undefined;
  await waitFor(async () => (back = await now()) !== undefined, 120_000, 'the broker answering a plain client after the restart');
  await waitFor(async () => ((await now()) ?? 0) >= back! + more || run.child.exitCode !== null, 180_000, `${more} more messages after the restart`);
  run.child.kill('SIGINT');
  return withTimeout(run.exited, 120_000, `${run.child.spawnargs.slice(2, 3).join(' ')} after Ctrl-C`);
}

/**
 * A pipeline drill's end: the produce feeding it goes on until `more` further messages reached
 * what `count` counts (the pipeline's end) after the restart, then Ctrl-C ends it (exit 130, every
 * send acknowledged or failed, the broker lost and found again); worker and trace then end on
 * their idle timeouts, exit 0. Returns produce's summary.
 */
export async function endPipeline(
  runs: { producing: Background; worker: Background; tracer: Background },
  count: () => Promise<number | undefined>,
  more: number,
  timeoutMs: number,
): Promise<ProduceSummary> {
  const { producing, worker, tracer } = runs;
  const code = await interruptOnceResumed(producing, count, more);
  expect(code, `${producing.stderr()}\n${producing.stdout()}`).toBe(130);
  const produced = JSON.parse(producing.stdout()) as ProduceSummary;
  expect(produced.acked + produced.failed).toBe(produced.sent);
  expect(produced.reconnects).toBeGreaterThanOrEqual(1);
  expect(await withTimeout(worker.exited, timeoutMs, 'worker'), worker.stderr()).toBe(0);
  expect(await withTimeout(tracer.exited, timeoutMs, 'trace'), tracer.stderr()).toBe(0);
  return produced;
}

export const duplicates = (values: readonly string[]) => values.length - new Set(values).size;
export const seconds = (ms: number) => (ms / 1000).toFixed(1);

/** How far the link's time down (and the seconds without sends taken) may exceed the outage: reconnect backoff, rejoins. */
export const OUTAGE_MARGIN_S = 15;

/**
 * The bench drill: `payq bench` at 20 payments/s for `durationS` (default 30 s: a restart of a
 * few seconds, and a while after it), started just before the kill (once every other drill is
 * mid-flight: its --duration is bounded), with the kill once `reachedEnd(sink)` saw its first
 * events at the pipeline's end; then its report is checked (expectBenchRodeOut). `on`: the flags
 * that name the broker.
 */
export async function benchDrill(
  outage: OutageHooks,
  runs: DrillRuns,
  options: { on: string[]; durationS?: number; timeoutMs: number; broker: string; unconfirmed: boolean; reachedEnd: (sink: string, bench: Background) => Promise<void> },
): Promise<string> {
  await outage.othersMidFlight();
  const { file, destinations } = scenarioCopy(uniqueName('drill-bench'));
  const reportFile = path.join(mkdtempSync(path.join(tmpdir(), 'payq-drill-bench-')), 'report.json');
  const args = ['--scenario', file, '--rate', '20', '--duration', `${options.durationS ?? 30}s`, '--warmup', '0s', '--time-scale', '0', '--seed', '18', '--drain-timeout', '120s', '--json', reportFile];
  const benching = runs.start(['bench', ...options.on, ...args]);
  try {
    await options.reachedEnd(destinationEnding(destinations, '.events'), benching);
    expect(benching.child.exitCode, benching.stderr()).toBeNull();
    const outageMs = await outage.midFlight();
    const code = await withTimeout(benching.exited, options.timeoutMs, 'bench');
    return expectBenchRodeOut({ code, stderr: benching.stderr(), reportFile }, outageMs, options.broker, { unconfirmed: options.unconfirmed });
  } finally {
    runs.stop(benching);
  }
}

/**
 * `payq bench` after a run across the restart (README "Failure drills"): nothing acknowledged was
 * lost and the drain saw every event through; the link was lost and found again, down for about
 * the outage; availability drops by the seconds sends waited on the broker. `unconfirmed`: on
 * this broker a send whose confirm was pending at the loss fails, unconfirmed (RabbitMQ's
 * publisher confirms, JetStream's PubAcks; Kafka's idempotent producer waits for its acks across
 * the outage): such sends are counted apart (exit 4 when there are any), and may have been stored,
 * so consumed besides the acknowledged. Returns the figures line; `broker` names it there.
 */
export function expectBenchRodeOut(
  run: { code: number | null; stderr: string; reportFile: string },
  outageMs: number,
  broker: string,
  options: { unconfirmed: boolean },
): string {
  const text = existsSync(run.reportFile) ? readFileSync(run.reportFile, 'utf8') : '(no report)';
  const report = reportSchema.parse(JSON.parse(text));
  const { acknowledged, consumed, unacknowledged } = report.events;
  expect(run.code, `${run.stderr}\n${text.slice(0, 3000)}`).toBe(unacknowledged > 0 ? 4 : 0);
  // Nothing acknowledged was lost, and the drain saw every event through.
  expect(report.loss).toBe(0);
  expect(report.events).toMatchObject({ lost: 0, in_flight: 0, not_drained: 0 });
  expect(report.payments.in_flight).toBe(0);
  if (options.unconfirmed) {
    expect(report.errors.filter((e) => !/may have stored them/.test(e))).toEqual([]);
    expect(consumed).toBeGreaterThanOrEqual(acknowledged);
    expect(consumed).toBeLessThanOrEqual(acknowledged + unacknowledged);
  } else {
    expect(unacknowledged).toBe(0);
    expect(consumed).toBe(acknowledged);
  }
  // The broker link: lost and found again, down for about the outage.
  const connection = report.connection!;
  expect(connection.reconnects).toBeGreaterThanOrEqual(1);
  expect(connection.unavailable_s).toBeGreaterThan(0);
  expect(connection.unavailable_s).toBeLessThanOrEqual(outageMs / 1000 + OUTAGE_MARGIN_S);
  // Availability (README "Metrics"): the run's one-second windows in which the broker took sends.
  const { total, available: up } = report.windows;
  // One window per second of the measured run (elapsed_s is rounded to the millisecond).
  expect(total).toBeGreaterThanOrEqual(report.elapsed_s - 0.001);
  expect(total).toBeLessThan(report.elapsed_s + 1.001);
  expect(report.availability).toBe(Math.round((up / total) * 10_000) / 10_000);
  expect(report.availability).toBeLessThan(1);
  // Sends waited on the broker through every whole second the link was down: none of them is available.
  const down = total - up;
  expect(down).toBeGreaterThanOrEqual(Math.floor(connection.unavailable_s) - 1);
  expect(down).toBeLessThanOrEqual(Math.ceil(outageMs / 1000) + OUTAGE_MARGIN_S);
  return `drill figures: ${broker} payq bench: payments ${report.payments.produced} (finished ${report.payments.finished}), events acknowledged ${acknowledged} (consumed ${consumed}, unacknowledged ${unacknowledged}), loss ${report.loss}, availability ${report.availability} (${up} of ${total} s), unavailable_s ${connection.unavailable_s}, reconnects ${connection.reconnects}; outage ${seconds(outageMs)} s`;
}
