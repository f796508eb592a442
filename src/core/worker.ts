/**
 * `worker`: runs a scenario's handler stages against a broker (README "`payq worker`"). Each stage consumes
 * its destination in the group `payq-worker.<scenario>.<stage>`, spends the sampled processing
 * time, fails and retries as configured, emits its next events and dead-letters what it gives up
 * on. Runs until the abort signal (then `interrupted`), a duration, an idle timeout, or the broker
 * staying away past the reconnect timeout (the link is `gone`); then every handling under way
 * finishes (StageRunner.drain) and the subscriptions close. Returns a WorkerResult; never prints.
 */
import type { DestinationSpec, Driver, Subscription } from '../drivers/types.js';
import { ConfigError } from '../errors.js';
import type { Scenario, Stage } from '../events/scenario.js';
import { aptMs, handlerTMs } from '../metrics/apt.js';
import { createLatencyHistogram, summarize, type LatencyHistogram, type LatencySummary } from '../metrics/histogram.js';
import type { Clock } from './clock.js';
import { WORKER_DEFAULTS } from './defaults.js';
import { DEAD_LETTER_REASONS } from './worker-plan.js';
import { ErrorLog, StageRunner, zeroCounts, type StageCounters, type StageMeasures } from './worker-stage.js';
import { brokerAway } from '../drivers/common.js';

export { DeadLetterReason, DEAD_LETTER_REASONS, planHandling, childrenOf, type HandlingPlan } from './worker-plan.js';
export type { StageCounters, StageMeasures } from './worker-stage.js';

export interface WorkerOptions {
  scenario: Scenario;
  /** Names of the stages to run; default every stage of the scenario. */
  stages?: string[] | undefined;
  /** Unacknowledged deliveries per stage at once. Default 64. */
  prefetch?: number | undefined;
  /** Seed of the decisions (processing times, failures, outcomes). Default 0. */
  seed?: number | undefined;
  /** false turns every stage's failure rates to 0 (`--failures off`). Default true. */
  failures?: boolean | undefined;
  /** Multiplies the sampled processing times; 0 never waits. Default 1. */
  timeScale?: number | undefined;
  /** Kafka partitions of destinations this run creates. Default 6, as produce. */
  partitions?: number | undefined;
  /** Stop by itself after this long (ms), counted once every stage is subscribed. */
  durationMs?: number | undefined;
  /** Stop by itself once no delivery arrived for this long (ms) and nothing is in flight. */
  idleTimeoutMs?: number | undefined;
  /**
   * Count only events of this run (payq-run-id) in the statistics; events of other runs are
   * handled the same but not counted. bench's warm-up runs under another run id.
   */
  countRunId?: string | undefined;
}

export { WORKER_DEFAULTS };

export interface WorkerProgress {
  elapsedMs: number;
  handled: number;
  emitted: number;
  deadLettered: number;
  inFlight: number;
  /** Live counters per stage (copies). */
  stages: StageCounters[];
}

export interface WorkerDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  /** Called about every 100 ms while running, and once at the end. */
  onProgress?: ((progress: WorkerProgress) => void) | undefined;
  /** An existing destination that changes how payq behaves (Driver.declare's notices). */
  onNotice?: ((text: string) => void) | undefined;
  /** Every stage is subscribed: what is sent from now on is handled. */
  onReady?: ((stages: number) => void) | undefined;
}

export interface StageStats extends StageCounters {
  /** tᵢ of APT (ms): the mean processing time, as bench's report has it (`handlers.<stage>.t_ms`). */
  t_ms: number;
  /** Processing time the successful attempts drew (README "APT": tᵢ is its mean). */
  processing_time: LatencySummary;
  /** Wall time the successful attempts took: the processing time plus the timers' lateness. */
  wall_time: LatencySummary;
}

export type WorkerTotals = Omit<StageCounters, 'stage' | 'destination' | 'group'> & {
  processing_time: LatencySummary;
  wall_time: LatencySummary;
  /** APT = Σ tᵢ·cᵢ / Σ cᵢ over the stages run (ms), computed as bench's report does (metrics/apt.ts). */
  apt_ms: number;
  /** The same formula over the wall times (bench's `apt_wall_ms`). */
  apt_wall_ms: number;
  handled_per_s: number;
};

export interface WorkerResult {
  scenario: string;
  stages: StageStats[];
  totals: WorkerTotals;
  /** From every stage subscribed to the stop. */
  elapsed_s: number;
  /** The distinct errors seen (failed sends or dead letters; their inputs were redelivered), at most five. */
  errors: string[];
  error_count: number;
  /** Stopped by the abort signal (Ctrl-C). */
  interrupted: boolean;
  stopped_by: 'signal' | 'duration' | 'idle' | 'broker-gone';
  /** Stopped because the broker stayed away longer than the reconnect timeout. */
  broker_gone: boolean;
  /**
   * Deliveries acked or given back while the broker was away, so never settled with it: it
   * delivers them again (to this group), and their handling is done again with the same ids.
   */
  unsettled: number;
  /** Wall-time histograms (µs) of the successful attempts by stage name (bench's `wall`). */
  histograms: Record<string, LatencyHistogram>;
  /** Bytes, planned processing times and delivery latency by stage name (bench's report). */
  measures: Record<string, StageMeasures>;
}

/** The consumer group of a stage; every worker process running that stage shares it. */
export function workerGroup(scenario: Scenario, stage: Stage): string {
  return `payq-worker.${scenario.name}.${stage.name}`;
}

const PROGRESS_EVERY_MS = 100;

/** The stages to run (in the order named, each once); ConfigError for a name the scenario lacks. */
export function selectStages(scenario: Scenario, names: string[] | undefined): Stage[] {
  if (names === undefined || names.length === 0) return scenario.stages;
  const byName = new Map(scenario.stages.map((s) => [s.name, s]));
  const chosen: Stage[] = [];
  for (const name of names) {
    const stage = byName.get(name);
    if (!stage) {
      throw new ConfigError(`scenario ${scenario.name} has no stage '${name}' (its stages: ${scenario.stages.map((s) => s.name).join(', ')})`);
    }
    if (!chosen.includes(stage)) chosen.push(stage);
  }
  return chosen;
}

/** Each stage's input and every destination it may emit to, all with a DLQ. */
export function topologyOf(scenario: Scenario, stages: Stage[], partitions: number): DestinationSpec[] {
  const names = new Set<string>();
  for (const stage of stages) {
    names.add(stage.destination);
    for (const outcome of stage.outcomes) for (const type of outcome.events) names.add(scenario.destinationFor(type));
  }
  return [...names].map((name) => ({ name, partitions, deadLetter: true }));
}

function snapshot(runners: StageRunner[], elapsedMs: number): WorkerProgress {
  let handled = 0;
  let emitted = 0;
  let deadLettered = 0;
  let inFlight = 0;
  const stages = runners.map((r) => {
    handled += r.counters.handled;
    emitted += r.counters.emitted;
    deadLettered += r.counters.dead_lettered_total;
    inFlight += r.inFlight;
    return { ...r.counters, dead_lettered: { ...r.counters.dead_lettered }, emitted_by_type: { ...r.counters.emitted_by_type } };
  });
  return { elapsedMs, handled, emitted, deadLettered, inFlight, stages };
}

/**
 * What one stage did, as a result is built from it: a StageRunner's own, or the runners of the
 * same stage in several threads added up (worker --procs, mergeWorkerResults).
 */
export interface StageOutcome {
  counters: StageCounters;
  processing: LatencyHistogram;
  measures: StageMeasures;
}

function totalsOf(stages: StageOutcome[], elapsedS: number): WorkerTotals {
  const merged = createLatencyHistogram();
  const mergedWall = createLatencyHistogram();
  const t = zeroCounts();
  for (const { counters: c, processing, measures } of stages) {
    merged.add(measures.planned);
    mergedWall.add(processing);
    addCounts(t, c);
  }
  return {
    ...t,
    processing_time: summarize(merged),
    wall_time: summarize(mergedWall),
    apt_ms: aptMs(stages.map((r) => r.measures.planned)),
    apt_wall_ms: aptMs(stages.map((r) => r.processing)),
    handled_per_s: Math.round(t.handled / Math.max(elapsedS, 0.001)),
  };
}

/** Adds a stage's counters into `t`. */
function addCounts(t: ReturnType<typeof zeroCounts>, c: ReturnType<typeof zeroCounts>): void {
  t.received += c.received;
  t.redelivered += c.redelivered;
  t.handled += c.handled;
  t.attempts += c.attempts;
  t.transient_failures += c.transient_failures;
  t.retries += c.retries;
  for (const r of DEAD_LETTER_REASONS) t.dead_lettered[r] += c.dead_lettered[r];
  t.dead_lettered_total += c.dead_lettered_total;
  t.emitted += c.emitted;
  for (const [type, n] of Object.entries(c.emitted_by_type)) t.emitted_by_type[type] = (t.emitted_by_type[type] ?? 0) + n;
  t.undecodable += c.undecodable;
  t.nacked += c.nacked;
}

interface WorkerEnd {
  scenario: string;
  stages: StageOutcome[];
  elapsedS: number;
  errors: string[];
  errorCount: number;
  stoppedBy: WorkerResult['stopped_by'];
  unsettled: number;
}

/** The result of a run from what its stages did (every figure derived here). */
function workerResult(e: WorkerEnd): WorkerResult {
  return {
    scenario: e.scenario,
    stages: e.stages.map((r) => ({
      ...r.counters,
      t_ms: handlerTMs(r.measures.planned),
      processing_time: summarize(r.measures.planned),
      wall_time: summarize(r.processing),
    })),
    totals: totalsOf(e.stages, e.elapsedS),
    elapsed_s: Math.round(e.elapsedS * 1000) / 1000,
    errors: e.errors,
    error_count: e.errorCount,
    interrupted: e.stoppedBy === 'signal',
    stopped_by: e.stoppedBy,
    broker_gone: e.stoppedBy === 'broker-gone',
    unsettled: e.unsettled,
    histograms: Object.fromEntries(e.stages.map((r) => [r.counters.stage, r.processing])),
    measures: Object.fromEntries(e.stages.map((r) => [r.counters.stage, r.measures])),
  };
}

/**
 * Several runs of the same stages (worker --procs: one per thread, in the same groups) as one:
 * counts added, histograms merged exactly, the longest elapsed time; stopped as the first that
 * lost its broker or was interrupted, else as the first.
 */
export function mergeWorkerResults(parts: WorkerResult[]): WorkerResult {
  const first = parts[0]!;
  const stages: StageOutcome[] = first.stages.map((s) => {
    const counters: StageCounters = { stage: s.stage, destination: s.destination, group: s.group, ...zeroCounts() };
    const processing = createLatencyHistogram();
    const measures: StageMeasures = { bytes_received: 0, bytes_handled: 0, bytes_emitted: 0, planned: createLatencyHistogram(), delivery: createLatencyHistogram() };
    for (const p of parts) {
      const theirs = p.stages.find((x) => x.stage === s.stage)!;
      addCounts(counters, theirs);
      processing.add(p.histograms[s.stage]!);
      const m = p.measures[s.stage]!;
      measures.bytes_received += m.bytes_received;
      measures.bytes_handled += m.bytes_handled;
      measures.bytes_emitted += m.bytes_emitted;
      measures.planned.add(m.planned);
      measures.delivery.add(m.delivery);
    }
    return { counters, processing, measures };
  });
  const ended = parts.find((p) => p.broker_gone) ?? parts.find((p) => p.interrupted) ?? first;
  return workerResult({
    scenario: first.scenario,
    stages,
    elapsedS: Math.max(...parts.map((p) => p.elapsed_s)),
    errors: [...new Set(parts.flatMap((p) => p.errors))].slice(0, 5),
    errorCount: parts.reduce((n, p) => n + p.error_count, 0),
    stoppedBy: ended.stopped_by,
    unsettled: parts.reduce((n, p) => n + p.unsettled, 0),
  });
}

export async function runWorker(options: WorkerOptions, deps: WorkerDeps): Promise<WorkerResult> {
  const { driver, clock, signal } = deps;
  const { scenario } = options;
  const prefetch = options.prefetch ?? WORKER_DEFAULTS.prefetch;
  const timeScale = options.timeScale ?? WORKER_DEFAULTS.timeScale;
  if (!Number.isInteger(prefetch) || prefetch < 1) throw new ConfigError(`prefetch must be a whole number of at least 1, got ${prefetch}`);
  if (!(timeScale >= 0) || !Number.isFinite(timeScale)) throw new ConfigError(`the time scale must be a number of 0 or more, got ${timeScale}`);
  const stages = selectStages(scenario, options.stages);
  const policy = {
    seed: options.seed ?? WORKER_DEFAULTS.seed,
    failures: options.failures ?? WORKER_DEFAULTS.failures,
    timeScale,
  };
  const errors = new ErrorLog();

  for (const notice of await driver.declare(topologyOf(scenario, stages, options.partitions ?? WORKER_DEFAULTS.partitions))) deps.onNotice?.(notice);

  const runners = stages.map(
    (stage) =>
      new StageRunner({ scenario, stage, group: workerGroup(scenario, stage), driver, clock, policy, errors, signal, countRunId: options.countRunId, prefetch }),
  );
  // Concurrently: joining a Kafka group takes seconds each.
  const subscribed = await Promise.allSettled(
    runners.map((r) =>
      driver.subscribe(
        // fromBeginning: a new group takes what was produced before the worker started; an
        // existing one carries on from where the group left off.
        { destinations: [r.counters.destination], group: r.counters.group, fromBeginning: true, prefetch },
        r.handle,
      ),
    ),
  );
  const subscriptions = subscribed.flatMap((s) => (s.status === 'fulfilled' ? [s.value] : []));
  const failure = subscribed.find((s): s is PromiseRejectedResult => s.status === 'rejected');
  if (failure) {
    await Promise.allSettled(subscriptions.map((s) => s.close()));
    throw failure.reason;
  }
  deps.onReady?.(subscriptions.length);

  const startUs = clock.nowUs();
  const endUs = options.durationMs === undefined ? Infinity : startUs + options.durationMs * 1000;
  const idleUs = options.idleTimeoutMs === undefined ? undefined : options.idleTimeoutMs * 1000;
  for (const r of runners) r.lastActivityUs = startUs;
  const tickMs = Math.max(1, Math.min(PROGRESS_EVERY_MS, idleUs === undefined ? Infinity : idleUs / 4000));
  let stoppedBy: WorkerResult['stopped_by'];
  for (;;) {
    const nowUs = clock.nowUs();
    if (signal?.aborted) {
      stoppedBy = 'signal';
      break;
    }
    if (nowUs >= endUs) {
      stoppedBy = 'duration';
      break;
    }
    const link = driver.link();
    if (link.gone) {
      stoppedBy = 'broker-gone';
      break;
    }
    // A broker away is not idleness: the idle timeout counts from when it is back (README "Failure drills").
    if (brokerAway(link)) for (const r of runners) r.lastActivityUs = nowUs;
    if (idleUs !== undefined && runners.every((r) => r.inFlight === 0 && nowUs - r.lastActivityUs >= idleUs)) {
      stoppedBy = 'idle';
      break;
    }
    deps.onProgress?.(snapshot(runners, (nowUs - startUs) / 1000));
    await clock.sleep(Math.min(tickMs, Math.max(1, (endUs - nowUs) / 1000)), signal);
  }

  // The handlings under way finish (and are acked) before the subscriptions close.
  await Promise.all(runners.map((r) => r.drain()));
  await closeAll(subscriptions);
  const elapsedUs = Math.max(1, clock.nowUs() - startUs);
  deps.onProgress?.(snapshot(runners, elapsedUs / 1000));
  return workerResult({
    scenario: scenario.name,
    stages: runners,
    elapsedS: elapsedUs / 1e6,
    errors: [...errors.texts],
    errorCount: errors.count,
    stoppedBy,
    unsettled: runners.reduce((n, r) => n + r.unsettled, 0),
  });
}

/** Stops fetching on every stage and waits for the handlers in flight (they finish their work). */
async function closeAll(subscriptions: Subscription[]): Promise<void> {
  const results = await Promise.allSettled(subscriptions.map((s) => s.close()));
  const failed = results.find((r): r is PromiseRejectedResult => r.status === 'rejected');
  if (failed) throw failed.reason;
}
