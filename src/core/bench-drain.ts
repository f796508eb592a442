/**
 * How a bench run ends once its producers are done: one process (role `all`) drains what it
 * produced, as bench.ts describes ("The end"), on the whole run's counts (with --procs, its
 * threads' too: MeteredDriver.whole); a worker or tracer part waits for the run's events
 * (produced elsewhere) up to `startTimeoutMs`, then until they stopped coming for `idleTimeoutMs`.
 */
import { brokerAway } from '../drivers/common.js';
import type { MeteredDriver } from './bench-driver.js';
import type { Clock } from './clock.js';

/** `waiting`: a worker or tracer part waiting for the run's first event. */
export type BenchPhase = 'starting' | 'waiting' | 'warmup' | 'measure' | 'drain';

/**
 * How the run ended: all measured work seen through (a part: its events stopped coming), the
 * pipeline went quiet with work missing, a timeout, the signal, or the broker staying away past
 * the reconnect timeout (its link `gone`).
 */
export type DrainEnd = 'complete' | 'quiet' | 'timeout' | 'interrupted' | 'broker-gone';

/** What the parts of a bench run report as it goes, read by the drain and the progress. */
export interface BenchLive {
  phase: BenchPhase;
  /** Payments the tracer saw finish. */
  traceFinished: number;
  /** Events the tracer saw. */
  traceEvents: number;
  /** Payments the tracer follows that have not finished yet. */
  traceInFlight: number;
  /** Deliveries the workers are handling. */
  workerInFlight: number;
  /** Measured payments acknowledged: final once the measured phase ended. */
  measuredAcked: number;
}

export interface DrainOptions {
  /** Role `all`: drain what this process produced; otherwise a worker or tracer part. */
  oneProcess: boolean;
  quietMs: number;
  idleTimeoutMs: number;
  drainTimeoutMs: number;
  startTimeoutMs: number;
  /** The measured window's start so far: the measured producing's, in one process. */
  measureStartUs: number;
}

export interface DrainResult {
  drained: DrainEnd;
  measureStartUs: number;
  /** Set when the run ended quiet: the window ends with the last activity. */
  measureEndUs: number | undefined;
}

const POLL_MS = 20;

/** Waits for the run to end; sets `live.phase` as it goes. */
export async function drain(options: DrainOptions, live: BenchLive, deps: { driver: MeteredDriver; clock: Clock; signal?: AbortSignal | undefined }): Promise<DrainResult> {
  const { driver, clock, signal } = deps;
  const { oneProcess } = options;
  let { measureStartUs } = options;
  let seenRun = oneProcess;
  live.phase = oneProcess ? 'drain' : 'waiting';
  const waitStartUs = clock.nowUs();
  let lastActivity = -1;
  let lastActivityUs = waitStartUs;
  for (;;) {
    const nowUs = clock.nowUs();
    if (signal?.aborted) return { drained: 'interrupted', measureStartUs, measureEndUs: undefined };
    // Nothing more comes through a broker gone for good: quiet then would count it all as lost.
    const link = driver.link();
    if (link.gone) return { drained: 'broker-gone', measureStartUs, measureEndUs: undefined };
    const whole = driver.whole;
    if (!seenRun) {
      if (whole.consumed > 0 || live.traceEvents > 0) {
        seenRun = true;
        live.phase = 'measure';
        measureStartUs = nowUs;
        lastActivityUs = nowUs;
        driver.availability.start(nowUs);
      } else if (nowUs - waitStartUs >= options.startTimeoutMs * 1000) {
        return { drained: 'timeout', measureStartUs: nowUs, measureEndUs: undefined };
      }
    }
    if (oneProcess && live.traceFinished >= live.measuredAcked && whole.consumed >= whole.acknowledged) {
      return { drained: 'complete', measureStartUs, measureEndUs: undefined };
    }
    const activity = whole.activity + live.traceEvents;
    // After an outage the broker may still hold what it had handed out at the loss, and hand it
    // out again later (JetStream once its ack wait is over): quiet proves nothing lost while the
    // tracer still follows a payment; the drain timeout bounds that wait (README "Failure drills").
    const mayStillCome = oneProcess && link.reconnects > 0 && live.traceInFlight > 0;
    // A broker away is not quiet: the quiet and idle clocks count from when it is back (README "Failure drills").
    if (activity !== lastActivity || live.workerInFlight > 0 || brokerAway(link) || mayStillCome) {
      lastActivity = activity;
      lastActivityUs = nowUs;
    } else if (seenRun && nowUs - lastActivityUs >= (oneProcess ? options.quietMs : options.idleTimeoutMs) * 1000) {
      // Nothing happened since: the window ends with the last activity, not the idle wait.
      return { drained: oneProcess ? 'quiet' : 'complete', measureStartUs, measureEndUs: Math.max(measureStartUs, lastActivityUs) };
    }
    // Nor is it a backlog: while it is away, the reconnect timeout bounds the wait, not this one.
    if (oneProcess && !brokerAway(link) && nowUs - waitStartUs >= options.drainTimeoutMs * 1000) {
      return { drained: 'timeout', measureStartUs, measureEndUs: undefined };
    }
    await clock.sleep(POLL_MS, signal);
  }
}
