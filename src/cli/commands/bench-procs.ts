/**
 * `payq bench --procs N` (README "payq bench"): core/bench.ts runs the tracer and the sink here
 * and decides the end; this module runs its producers and workers in N threads (threads.ts),
 * thread k with shard k/N of the seeded stream and every stage, each with its own driver, and
 * carries what the two sides tell each other: the threads' readiness, phases and end of
 * producing one way; the start, and how the run ended, the other; then each thread's run data.
 */
import { runBench, type BenchEnd, type BenchOptions, type BenchThreads, type BenchThreadsRun } from '../../core/bench.js';
import { LiveTally } from '../../core/bench-driver.js';
import { systemClock } from '../../core/clock.js';
import { InternalError } from '../../errors.js';
import type { RunData } from '../../metrics/report.js';
import { startThreads, scenarioIn, type ThreadBroker, type ThreadContext, type ThreadScenario } from '../threads.js';

export interface BenchThreadData extends ThreadBroker {
  scenario: ThreadScenario;
  bench: Omit<BenchOptions, 'scenario' | 'shard' | 'role'>;
  shard: { index: number; count: number };
  /** LiveTally's memory, shared with the parent and the other threads. */
  tally: SharedArrayBuffer;
}

type Phase = 'warmup' | 'measure';
type ThreadEvent = { ready: true } | { phase: Phase; atUs: number } | { produced: { acked: number; brokerGone: boolean } };
type ParentEvent = { go: true } | { end: BenchEnd };

function deferred<T = void>(): { promise: Promise<T>; resolve: (v: T) => void } {
  let resolve!: (v: T) => void;
  const promise = new Promise<T>((r) => (resolve = r));
  return { promise, resolve };
}

export async function threadBody(data: BenchThreadData, thread: ThreadContext): Promise<RunData> {
  const scenario = scenarioIn(data.scenario);
  const go = deferred();
  const end = deferred<BenchEnd>();
  thread.onEvent((e) => {
    const m = e as ParentEvent;
    if ('go' in m) go.resolve();
    else end.resolve(m.end);
  });
  // Stopped before the start: the producers start (and end at once) instead of waiting.
  thread.signal.addEventListener('abort', () => go.resolve(), { once: true });
  const tell = (e: ThreadEvent) => thread.tell(e);
  const driver = await thread.openDriver(data);
  try {
    await driver.connect();
    const result = await runBench(
      { ...data.bench, scenario, shard: data.shard },
      {
        driver,
        clock: systemClock,
        signal: thread.signal,
        onProgress: (p) => thread.progress({ produced: p.produced, inFlight: p.inFlight }),
        parent: {
          tally: new LiveTally(data.tally),
          ready: async () => {
            tell({ ready: true });
            await go.promise;
          },
          onPhase: (phase, atUs) => tell({ phase, atUs }),
          produced: (r) => tell({ produced: r }),
          end: end.promise,
        },
      },
    );
    return result.data;
  } finally {
    await driver.close();
  }
}

/** The threads of one bench run, as core/bench.ts drives them (BenchThreads). */
export function benchThreads(
  count: number,
  dataFor: (shard: { index: number; count: number }, tally: SharedArrayBuffer) => BenchThreadData,
  hooks: { signal: AbortSignal; onWarn: (text: string) => void },
): BenchThreads {
  const tally = new LiveTally();
  return {
    tally,
    start(): BenchThreadsRun {
      const live = { produced: 0, inFlight: 0 };
      const ready = deferred();
      const produced = deferred<{ acked: number; brokerGone: boolean }>();
      const total = { acked: 0, brokerGone: false };
      let readyCount = 0;
      let producedCount = 0;
      let onPhase: ((phase: Phase, atUs: number) => void) | undefined;
      const run = startThreads('bench', count, (k) => dataFor({ index: k, count }, tally.buffer), {
        signal: hooks.signal,
        onWarn: hooks.onWarn,
        onProgress: (sum) => {
          live.produced = sum['produced'] ?? 0;
          live.inFlight = sum['inFlight'] ?? 0;
        },
        onEvent: (_, e) => {
          const m = e as ThreadEvent;
          if ('ready' in m) {
            if (++readyCount === count) ready.resolve();
          } else if ('phase' in m) {
            onPhase?.(m.phase, m.atUs);
          } else {
            total.acked += m.produced.acked;
            total.brokerGone ||= m.produced.brokerGone;
            if (++producedCount === count) produced.resolve(total);
          }
        },
      });
      const done = run.results;
      const ended = done.then(() => {
        throw new InternalError('bench: the threads ended before the run did');
      });
      // Waiting on the threads ends with the first one that fails.
      const orFailed = <T>(p: Promise<T>) => Promise.race([p, ended]);
      const tell = (e: ParentEvent) => run.tell('all', e);
      return {
        ready: orFailed(ready.promise),
        done,
        produce(callback) {
          onPhase = callback;
          tell({ go: true });
          return orFailed(produced.promise);
        },
        live: () => live,
        async finish(end) {
          tell({ end });
          return (await done) as RunData[];
        },
        async abort() {
          tell({ end: { drained: 'interrupted', measureEndUs: systemClock.nowUs() } });
          run.abort();
          await done.catch(() => undefined);
        },
      };
    },
  };
}
