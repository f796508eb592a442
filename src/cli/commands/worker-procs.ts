/**
 * `payq worker --procs N` (README "payq worker"): N threads (threads.ts), each running every
 * chosen stage with its own driver and client, in the stages' groups, so the threads share each
 * stage's messages as N worker processes would; their results merge into one (counts added,
 * histograms merged exactly: core/worker.ts mergeWorkerResults).
 */
import { systemClock } from '../../core/clock.js';
import { mergeWorkerResults, runWorker, type WorkerOptions, type WorkerResult } from '../../core/worker.js';
import { runInThreads, scenarioIn, type ThreadBroker, type ThreadContext, type ThreadScenario } from '../threads.js';

export interface WorkerThreadData extends ThreadBroker {
  scenario: ThreadScenario;
  worker: Omit<WorkerOptions, 'scenario'>;
}

/** The counts a thread posts while it runs; the parent adds them up. */
export interface WorkerCounts {
  handled: number;
  emitted: number;
  deadLettered: number;
  inFlight: number;
}

export async function threadBody(data: WorkerThreadData, thread: ThreadContext): Promise<WorkerResult> {
  const scenario = scenarioIn(data.scenario);
  const driver = await thread.openDriver(data);
  try {
    await driver.connect();
    return await runWorker(
      { ...data.worker, scenario },
      {
        driver,
        clock: systemClock,
        signal: thread.signal,
        onNotice: thread.warn,
        onReady: (subscriptions) => thread.tell({ subscriptions }),
        onProgress: (p) => thread.progress({ handled: p.handled, emitted: p.emitted, deadLettered: p.deadLettered, inFlight: p.inFlight }),
      },
    );
  } finally {
    await driver.close();
  }
}

export async function workerInThreads(
  threads: number,
  data: WorkerThreadData,
  signal: AbortSignal,
  hooks: {
    onWarn: (text: string) => void;
    onProgress: (p: WorkerCounts & { elapsedMs: number }) => void;
    /** Every thread's stages are subscribed (`subscriptions` in each). */
    onReady: (subscriptions: number) => void;
  },
): Promise<WorkerResult> {
  let ready = 0;
  const parts = (await runInThreads('worker', threads, () => data, {
    signal,
    onWarn: hooks.onWarn,
    onEvent: (_, e) => {
      if (++ready === threads) hooks.onReady((e as { subscriptions: number }).subscriptions);
    },
    onProgress: (p, elapsedMs) =>
      hooks.onProgress({ handled: p['handled'] ?? 0, emitted: p['emitted'] ?? 0, deadLettered: p['deadLettered'] ?? 0, inFlight: p['inFlight'] ?? 0, elapsedMs }),
  })) as WorkerResult[];
  return mergeWorkerResults(parts);
}
