/**
 * `bench`: the whole pipeline in one process on one driver (README "`payq bench`"): producers (open loop
 * at a rate, or flat out with a bounded backlog), the scenario's workers and a tracer, plus a sink
 * consumer that takes the events no stage consumes. Returns the run's raw data (metrics/report.ts
 * derives every figure from it); never prints.
 *
 * Warm-up: the producers first run for `warmupMs` under the run id `<runId>-warmup`; only events
 * of `<runId>` count. Workers carry the run id to the events they emit, so everything a warm-up
 * payment causes — handling, emitted events, dead letters, its trace — stays out of the figures,
 * whenever it happens.
 *
 * The end: once the producers are done, bench drains: it waits until trace has seen every
 * measured payment finish and every acknowledged event of the run was consumed, or until the
 * pipeline has been quiet for `quietMs` (every consumer subscribed and idle, nothing sent,
 * delivered or in a handler: what the readers did not get by then the broker no longer holds, and
 * is lost; after an outage only once the tracer follows no payment any more, since the broker may
 * hand out again later what it had handed out at the loss), or `drainTimeoutMs`. Acknowledged
 * events not consumed when the drain timed out are `not_drained`, and when the signal interrupted
 * the run `in_flight`: their fate is unknown, so they are never counted as lost (README "Loss
 * probability").
 *
 * A broker that stays away past the reconnect timeout (its link `gone`) stops every part at once
 * (drain `broker-gone`): what was acknowledged and not consumed is `in_flight` too, and the
 * tracer leaves its payments in flight unjudged (README "Failure drills").
 *
 * With --procs N (README "payq bench") the producers and the workers run in N threads
 * (BenchThreads), thread k with shard k/N of the stream and every stage in the stages' groups,
 * while this process runs the tracer and the sink and drains as one process does, on the whole
 * run's counts (the threads' metered drivers share a LiveTally); then it tells the threads how
 * the run ended (BenchParent) and merges their data into its own, as `payq report --merge` merges
 * the parts of one run.
 */
import type { Driver, Subscription } from '../drivers/types.js';
import { InterruptedError } from '../errors.js';
import { DEFAULT_DECODE } from '../events/decode.js';
import { EventGenerator } from '../events/generator.js';
import { PayqHeader } from '../events/headers.js';
import type { Scenario } from '../events/scenario.js';
import { createLatencyHistogram, recordUs, type LatencyHistogram } from '../metrics/histogram.js';
import type { BenchRole, RunData } from '../metrics/report.js';
import { benchRunData } from './bench-data.js';
import { MeteredDriver, type LiveTally } from './bench-driver.js';
import { mergeData } from '../metrics/merge.js';
import { drain, type BenchLive, type BenchPhase, type DrainEnd } from './bench-drain.js';
import type { Clock } from './clock.js';
import { BENCH_DEFAULTS } from './defaults.js';
import { produce, type ProduceResult } from './produce.js';
import { generatedSource, type EventSource } from './sources.js';
import { trace, type TraceDeps, type TraceResult } from './trace.js';
import { runWorker, WORKER_DEFAULTS, type WorkerResult } from './worker.js';
import { TimeSeriesRecorder } from '../metrics/timeseries.js';

export interface BenchOptions {
  scenario: Scenario;
  /** Payments (entry events) per second over all producers, open loop; undefined: flat out. */
  rate?: number | undefined;
  /** Measured producing time (ms), after the warm-up. Exclusive with `count`. */
  durationMs?: number | undefined;
  /** Measured payments, after the warm-up. */
  count?: number | undefined;
  warmupMs?: number | undefined;
  /** Producer loops sharing the event stream (each at rate / producers). Default 1. */
  producers?: number | undefined;
  /** Deliveries each stage works on at once (its prefetch). Default 64. */
  consumers?: number | undefined;
  seed: number;
  timeScale?: number | undefined;
  failures?: boolean | undefined;
  /** Flat out: events sent and not yet consumed, at most (default: defaultMaxBacklog). Ignored with a rate. */
  maxBacklog?: number | undefined;
  drainTimeoutMs?: number | undefined;
  quietMs?: number | undefined;
  partitions?: number | undefined;
  /** Stamped on every measured event (payq-run-id); the warm-up's events get `<runId>-warmup`. */
  runId: string;
  size?: number | undefined;
  /**
   * Which part of the pipeline this process runs: `all` (default) runs everything; `producer`,
   * `worker` and `tracer` run one part each, on machines sharing a broker and a run id, and their
   * reports merge into the whole run's (payq report --merge).
   */
  role?: BenchRole | undefined;
  /** worker and tracer parts: end once the run's events stopped coming for this long. */
  idleTimeoutMs?: number | undefined;
  /** worker and tracer parts: give up when no event of the run arrived within this long. */
  startTimeoutMs?: number | undefined;
  /**
   * producer and tracer parts: shard `index` of `count`. A producer sends the payments of its
   * shard of the seeded stream (at rate / count), a tracer follows its shard of the payments
   * (core/trace.ts); N shards' reports merge into the report of one unsharded part.
   */
  shard?: { index: number; count: number } | undefined;
}

export { BENCH_ROLES, type BenchRole } from '../metrics/report.js';
export type { BenchPhase } from './bench-drain.js';
/** The warm-up's run id is the measured one with this suffix. */
export const WARMUP_SUFFIX = '-warmup';

export { BENCH_DEFAULTS };

/**
 * Flat out, the producers hold back while this many events wait in the pipeline: enough to keep
 * every stage's consumers busy, few enough that queueing does not dominate the latency.
 */
/** The consumer group of bench's reader at the end of the pipeline (its sink). */
export function benchSinkGroup(scenario: Scenario): string {
  return `payq-bench.${scenario.name}.sink`;
}

export function defaultMaxBacklog(consumers: number, stages: number): number {
  return Math.max(1000, 2 * consumers * stages);
}

export interface BenchProgress {
  phase: BenchPhase;
  elapsedMs: number;
  /** Measured payments acknowledged so far. */
  produced: number;
  /** Events of the measured run consumed so far. */
  consumed: number;
  finished: number;
  backlog: number;
  /** Deliveries the workers are handling now. */
  inFlight: number;
}

export interface BenchDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: BenchProgress) => void) | undefined;
  /** The tracer's live histograms, for --metrics-port. */
  onHistograms?: TraceDeps['onHistograms'];
  /** bench --procs N, in the process that decides the end: its producers and workers are these threads. */
  threads?: BenchThreads | undefined;
  /** bench --procs N, in one of those threads: its producers and workers, the end decided elsewhere. */
  parent?: BenchParent | undefined;
}

/** How the process that decides a run's end ended it (with --procs, told to its threads). */
export interface BenchEnd {
  drained: DrainEnd;
  measureEndUs: number;
}

/** bench --procs N, the side of the process that runs the tracer and decides the end. */
export interface BenchThreads {
  /** What the threads' metered drivers add their counts into. */
  tally: LiveTally;
  /** Starts the threads: each subscribes its workers, then waits for `produce`. */
  start(): BenchThreadsRun;
}

export interface BenchThreadsRun {
  /** Every thread's workers are subscribed. */
  ready: Promise<void>;
  /** Settles when the threads end; rejects with the first failure. */
  done: Promise<unknown>;
  /** Their producers run (warm-up, then measured); resolves when every thread's are done. */
  produce(onPhase: (phase: 'warmup' | 'measure', atUs: number) => void): Promise<{ acked: number; brokerGone: boolean }>;
  /** Their latest progress added up: measured payments acknowledged, deliveries being handled. */
  live(): { produced: number; inFlight: number };
  /** Ends their run as this process ended it, and gives each thread's run data. */
  finish(end: BenchEnd): Promise<RunData[]>;
  /** Stops them as Ctrl-C would (a failure here), and waits for them. */
  abort(): Promise<void>;
}

/** bench --procs N, the side of a thread: how it hears from the process that decides the end. */
export interface BenchParent {
  tally: LiveTally;
  /** This thread's workers are subscribed; resolves when its producers may start. */
  ready(): Promise<void>;
  onPhase(phase: 'warmup' | 'measure', atUs: number): void;
  produced(r: { acked: number; brokerGone: boolean }): void;
  /** How the run ended, as the parent tells it (also when it stops the threads after a failure). */
  end: Promise<BenchEnd>;
}

export interface BenchResult {
  data: RunData;
  role: BenchRole;
  brokerVersion: string | undefined;
  /** Interrupted by the signal: the figures cover what was done until then. */
  interrupted: boolean;
  /** How the run ended (bench-drain.ts). */
  drained: DrainEnd;
  startedAt: string;
  produce: ProduceResult[];
  /** Undefined for the parts that do not run them. */
  worker: WorkerResult | undefined;
  trace: TraceResult | undefined;
}

const PROGRESS_MS = 100;

/** Waits for the first call of a callback, or for the promise it races with to fail. */
function firstCall(): { promise: Promise<void>; call: () => void } {
  let call!: () => void;
  const promise = new Promise<void>((resolve) => (call = resolve));
  return { promise, call };
}

/** A source that holds back while the pipeline's backlog is at its bound (flat-out runs). */
function boundedSource(source: EventSource, driver: MeteredDriver, maxBacklog: number, signal: AbortSignal): EventSource {
  const resumeBelow = Math.max(1, Math.floor(maxBacklog * 0.75));
  return {
    async pull(max) {
      if (driver.backlog >= maxBacklog) await driver.backlogBelow(resumeBelow, signal);
      return source.pull(Math.min(max, Math.max(1, maxBacklog - driver.backlog)));
    },
    get payments() {
      return source.payments;
    },
  };
}

export async function runBench(options: BenchOptions, deps: BenchDeps): Promise<BenchResult> {
  const { scenario, runId } = options;
  const { clock, threads, parent } = deps;
  const role = options.role ?? 'all';
  const has = {
    producers: !threads && (role === 'all' || role === 'producer'),
    workers: !threads && (role === 'all' || role === 'worker'),
    tracer: !parent && (role === 'all' || role === 'tracer'),
  };
  /** Drains what was produced: one process, or the process that decides the end of threads'. */
  const drainsAll = role === 'all' && !parent;
  const producers = options.producers ?? BENCH_DEFAULTS.producers;
  const consumers = options.consumers ?? BENCH_DEFAULTS.consumers;
  const warmupMs = options.warmupMs ?? 0;
  const maxBacklog = options.maxBacklog ?? defaultMaxBacklog(consumers, scenario.stages.length);
  const drainTimeoutMs = options.drainTimeoutMs ?? BENCH_DEFAULTS.drainTimeoutMs;
  const quietMs = options.quietMs ?? BENCH_DEFAULTS.quietMs;
  const idleTimeoutMs = options.idleTimeoutMs ?? BENCH_DEFAULTS.idleTimeoutMs;
  const startTimeoutMs = options.startTimeoutMs ?? BENCH_DEFAULTS.startTimeoutMs;
  const durationMs = options.count === undefined ? (options.durationMs ?? BENCH_DEFAULTS.durationMs) : undefined;
  const startedAt = new Date(clock.nowUs() / 1000).toISOString();
  const driver = new MeteredDriver(deps.driver, clock, runId, threads?.tally ?? parent?.tally);
  const entry = scenario.destinationFor(scenario.entry);
  const partitions = options.partitions ?? WORKER_DEFAULTS.partitions;
  const encode = (id: string) => ({ binding: driver.headerBinding, sourcePrefix: `/payq/${scenario.name}`, runId: id });

  // Each part stops on its own controller; the caller's signal (Ctrl-C) stops them all.
  const producing = new AbortController();
  const tracing = new AbortController();
  const working = new AbortController();
  const stopAll = () => {
    producing.abort();
    tracing.abort();
    working.abort();
  };
  deps.signal?.addEventListener('abort', stopAll, { once: true });

  const live: BenchLive = { phase: 'starting', traceFinished: 0, traceEvents: 0, traceInFlight: 0, workerInFlight: 0, measuredAcked: 0 };
  let threadRun: BenchThreadsRun | undefined;
  const series = new TimeSeriesRecorder();
  let liveEndToEnd: LatencyHistogram | undefined;
  const startUs = clock.nowUs();
  /** Live counts of the measured producers, for progress. */
  const liveAcked: number[] = [];
  const report = () => {
    // The threads' workers, for the drain's quiet clock (refreshed with the progress).
    if (threadRun) live.workerInFlight = threadRun.live().inFlight;
    deps.onProgress?.({
      phase: live.phase,
      elapsedMs: (clock.nowUs() - startUs) / 1000,
      produced: live.phase === 'drain' ? live.measuredAcked : threadRun ? threadRun.live().produced : liveAcked.reduce((a, b) => a + b, 0),
      consumed: driver.whole.consumed,
      finished: live.traceFinished,
      backlog: driver.backlog,
      inFlight: live.workerInFlight,
    });
  };

  // The sink: events no stage consumes end there; bench (its tracer part) is their consumer.
  const sink = { consumed: 0, bytes: 0, delivery: createLatencyHistogram() };
  const started: Promise<unknown>[] = [];
  const ready: Promise<unknown>[] = [];

  let traceRun: Promise<TraceResult> | undefined;
  let sinkSubscription: Promise<Subscription> | undefined;
  if (has.tracer) {
    // bench creates its own layout before the tracer starts: a tap never creates (core/destinations.ts).
    await driver.declare(scenario.destinations.map((name) => ({ name, partitions, deadLetter: true })));
    const traceReady = firstCall();
    traceRun = trace(
      {
        scenario,
        destinations: scenario.destinations,
        decode: DEFAULT_DECODE,
        stuckAfterMs: Math.max(60_000, drainTimeoutMs, idleTimeoutMs),
        expect: undefined,
        withinMs: undefined,
        payment: undefined,
        runId,
        fromBeginning: false,
        idleTimeoutMs: undefined,
        durationMs: undefined,
        untilFinished: undefined,
        shard: options.shard,
      },
      {
        driver,
        clock,
        signal: tracing.signal,
        onReady: traceReady.call,
        onHistograms: (h) => {
          liveEndToEnd = h.endToEnd;
          deps.onHistograms?.(h);
        },
        onProgress: (p) => {
          live.traceFinished = p.finished;
          live.traceEvents = p.events;
          live.traceInFlight = p.inFlight;
        },
      },
    );
    started.push(traceRun);
    ready.push(traceReady.promise);
    sinkSubscription = driver.subscribe(
      { destinations: [scenario.sink], group: benchSinkGroup(scenario), fromBeginning: false, prefetch: 1000 },
      (deliveries) => {
        const nowUs = clock.nowUs();
        for (const d of deliveries) {
          if (d.headers[PayqHeader.runId] === runId) {
            sink.consumed++;
            sink.bytes += d.value.length;
            const sentUs = Number(d.headers[PayqHeader.intendedUs] ?? d.headers[PayqHeader.publishedUs]);
            if (sentUs > 0) recordUs(sink.delivery, nowUs - sentUs);
          }
          d.ack();
        }
      },
    );
    ready.push(sinkSubscription);
  }
  let workerRun: Promise<WorkerResult> | undefined;
  if (has.workers) {
    const workerReady = firstCall();
    workerRun = runWorker(
      {
        scenario,
        prefetch: consumers,
        seed: options.seed,
        failures: options.failures ?? WORKER_DEFAULTS.failures,
        timeScale: options.timeScale ?? WORKER_DEFAULTS.timeScale,
        partitions,
        countRunId: runId,
      },
      {
        driver,
        clock,
        signal: working.signal,
        onProgress: (p) => {
          live.workerInFlight = p.inFlight;
          workerReady.call();
        },
      },
    );
    started.push(workerRun);
    ready.push(workerReady.promise);
  }
  if (has.producers && !has.workers) await driver.declare([{ name: entry, partitions, deadLetter: true }]);
  if (threads) {
    // The tracer's tap is up or coming: the threads' workers subscribe meanwhile.
    threadRun = threads.start();
    started.push(threadRun.done);
    ready.push(threadRun.ready);
  }

  const cleanup = async () => {
    stopAll();
    await Promise.allSettled([...started, sinkSubscription?.then((s) => s.close()), threadRun?.abort()]);
  };
  try {
    // A failure to start (broker down, topology refused) must surface, not hang on "ready".
    const failedEarly = Promise.race(started).then(
      () => new Error('bench: a part of the pipeline ended before it started'),
      (err: unknown) => err,
    );
    const early = await Promise.race([Promise.all(ready).then(() => undefined), started.length > 0 ? failedEarly : new Promise<never>(() => {})]);
    if (early !== undefined) throw early;
    // A thread: its workers are up; its producers start when every thread's are (and the tracer).
    await parent?.ready();
  } catch (err) {
    await cleanup();
    if (deps.signal?.aborted) throw new InterruptedError('interrupted before the run started: nothing was measured');
    throw err;
  }

  // The time series: sampled with the progress, during the measured run and its drain only.
  let sampledUs = 0;
  const sampleSeries = (force = false) => {
    if (live.phase !== 'measure' && live.phase !== 'drain') return;
    // Four samples a second are plenty for per-second points (each copies a histogram).
    if (!force && clock.nowUs() - sampledUs < 250_000) return;
    sampledUs = clock.nowUs();
    const counts = { sent: driver.run.sent, acknowledged: driver.run.acknowledged, consumed: driver.run.consumed, completed: live.traceFinished, backlog: driver.ownBacklog };
    series.sample(clock.nowUs(), counts, liveEndToEnd);
  };
  const progressTimer = setInterval(() => {
    report();
    sampleSeries();
    // A producer held back by the backlog would wait for ever: every part stops now.
    if (driver.link().gone) stopAll();
  }, PROGRESS_MS);
  let brokerVersion: string | undefined;
  try {
    brokerVersion = await driver.brokerVersion();
  } catch {
    brokerVersion = undefined;
  }

  const runPhase = async (id: string, source: EventSource, phaseMs: number | undefined, measured: boolean): Promise<ProduceResult[]> => {
    // Flat out, a one-process run holds the producers back to a bounded backlog; a producer
    // part cannot see the consumers of other machines, so it is not bounded.
    const shared = options.rate === undefined && role === 'all' ? boundedSource(source, driver, maxBacklog, producing.signal) : source;
    parent?.onPhase(measured ? 'measure' : 'warmup', clock.nowUs());
    return Promise.all(
      Array.from({ length: producers }, (_, i) =>
        produce(
          {
            destination: entry,
            rate: options.rate === undefined ? undefined : options.rate / producers / (options.shard?.count ?? 1),
            durationMs: phaseMs,
            encode: encode(id),
            startAtIntended: true,
          },
          {
            driver,
            source: shared,
            clock,
            signal: producing.signal,
            onProgress: measured
              ? (p) => {
                  liveAcked[i] = p.acked;
                }
              : undefined,
          },
        ).then((r) => {
          if (measured) live.measuredAcked += r.acked;
          return r;
        }),
      ),
    );
  };

  let produced: ProduceResult[] = [];
  let measureStartUs = clock.nowUs();
  let measureEndUs: number | undefined;
  let drained: DrainEnd = 'complete';
  let producersGone = false;
  try {
    if (threadRun) {
      // The measured window starts with the first thread's measured sends.
      let measureFrom: number | undefined;
      const done = await threadRun.produce((phase, atUs) => {
        if (phase === 'measure') measureFrom = Math.min(measureFrom ?? atUs, atUs);
        if (live.phase !== 'measure') live.phase = phase;
      });
      measureStartUs = measureFrom ?? clock.nowUs();
      live.measuredAcked = done.acked;
      producersGone = done.brokerGone;
    } else if (has.producers) {
      if (warmupMs > 0) {
        live.phase = 'warmup';
        const warm = new EventGenerator({ scenario, seed: (options.seed + 0x5eed) % 2 ** 31, payments: Infinity, lifecycle: false, size: options.size, shard: options.shard });
        await runPhase(`${runId}${WARMUP_SUFFIX}`, generatedSource(warm), warmupMs, false);
      }
      live.phase = 'measure';
      measureStartUs = clock.nowUs();
      driver.availability.start(measureStartUs);
      const gen = new EventGenerator({ scenario, seed: options.seed, payments: options.count ?? Infinity, lifecycle: false, size: options.size, shard: options.shard });
      produced = await runPhase(runId, generatedSource(gen), durationMs, true);
      producersGone = produced.some((r) => r.broker_gone);
    }
    if (parent) {
      // A thread's producers are done: its workers go on until the parent has drained the run.
      parent.produced({ acked: live.measuredAcked, brokerGone: producersGone });
      live.phase = 'drain';
      ({ drained, measureEndUs } = await parent.end);
    } else if (role === 'producer' || producersGone) {
      // A producer part ends with its producers; so does a run whose producers' driver gave up
      // on the broker (nothing more comes through it: there is nothing to drain).
      measureEndUs = clock.nowUs();
    } else {
      // role all: drain what was produced; a worker or tracer part: wait for the run, then its end.
      const drainOptions = { oneProcess: role === 'all', quietMs, idleTimeoutMs, drainTimeoutMs, startTimeoutMs, measureStartUs };
      ({ drained, measureStartUs, measureEndUs } = await drain(drainOptions, live, { driver, clock, signal: deps.signal }));
    }
  } catch (err) {
    clearInterval(progressTimer);
    await cleanup();
    throw err;
  }
  measureEndUs ??= clock.nowUs();
  clearInterval(progressTimer);
  // Whatever part of the run it was in (a producer part has no drain).
  if (driver.link().gone || producersGone) drained = 'broker-gone';
  report();
  sampleSeries(true);

  stopAll();
  const [traced, worked] = await Promise.all([traceRun, workerRun]);
  if (sinkSubscription) await (await sinkSubscription).close();
  deps.signal?.removeEventListener('abort', stopAll);
  const threadData = threadRun ? await threadRun.finish({ drained, measureEndUs }) : [];
  if (threadData.some((d) => d.connection?.broker_gone)) drained = 'broker-gone';
  const whole = driver.whole;

  const data: RunData = benchRunData({
    role,
    drained,
    withRate: options.rate !== undefined && has.producers,
    measureStartUs,
    measureEndUs,
    produced,
    worked,
    traced,
    sink: { destination: scenario.sink, ...sink },
    run: driver.run,
    unconsumed: drainsAll ? Math.max(0, whole.acknowledged - whole.consumed) : 0,
    windows: driver.windows(measureEndUs),
    link: driver.link(),
    timeseries: series.finish((second) => driver.availability.availableAt(second * 1e6 + 500_000)),
  });
  return {
    data: threadData.length > 0 ? mergeData([data, ...threadData]) : data,
    role,
    brokerVersion,
    interrupted: deps.signal?.aborted ?? false,
    drained,
    startedAt,
    produce: produced,
    worker: worked,
    trace: traced,
  };
}
