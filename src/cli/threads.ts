/**
 * `--procs N` (README "Every core"): a command's body run in N worker threads of this process,
 * each with its own driver and client, and their results handed back to the command, which merges
 * them into one summary or report. Written once for produce, consume, worker and bench: the
 * threads start with plain data, post progress, warnings, events and requests, and end with a
 * result (histograms packed: metrics/histogram.ts) or an error, rebuilt here as the PayqError of
 * the same class; Ctrl-C is forwarded, and one thread failing stops the others.
 *
 * Threads, not child processes: the resolved options (the broker URL with its password among
 * them) stay inside this process instead of travelling through argv or the environment, one
 * stdout and one Ctrl-C stay with the parent, and Node gives each thread its own event loop and
 * heap, which is what a client's hot loop needs to use a core of its own.
 */
import { Worker } from 'node:worker_threads';
import type { Driver } from '../drivers/types.js';
import { parseScenario, type Scenario } from '../events/scenario.js';
import * as errors from '../errors.js';
import { InternalError, UsageError, type PayqError } from '../errors.js';
import { sharedAcrossProcesses, type BrokerUrl } from '../drivers/url.js';
import { unpackHistograms, type Packed } from '../metrics/histogram.js';

/** memory:// lives in one thread: a second thread would use a broker of its own (exit 2). */
export function refuseProcsOnMemory(procs: number, broker: BrokerUrl): void {
  if (procs > 1 && !sharedAcrossProcesses(broker)) throw new UsageError('--procs above 1 needs a networked broker (memory:// lives in one thread)');
}

/** Each command's thread body, loaded in the thread by thread-entry.ts. */
export const THREAD_BODIES = {
  produce: () => import('./commands/produce-procs.js'),
  consume: () => import('./commands/consume-procs.js'),
  worker: () => import('./commands/worker-procs.js'),
  bench: () => import('./commands/bench-procs.js'),
};
export type ThreadCommand = keyof typeof THREAD_BODIES;

/** What every thread's data holds for its own driver. */
export interface ThreadBroker {
  broker: BrokerUrl;
  reconnectTimeout: number;
}

/** A scenario as it crosses to a thread: its text, parsed there again (scenarioIn). */
export interface ThreadScenario {
  text: string;
  origin: string;
}

export function scenarioOut(s: Scenario): ThreadScenario {
  return { text: s.text, origin: s.origin };
}

export function scenarioIn(s: ThreadScenario): Scenario {
  return parseScenario(s.text, s.origin);
}

/** What a thread body is handed besides its data. */
export interface ThreadContext {
  /** The parent's Ctrl-C, forwarded: the body's stop and its driver's (DriverOptions.signal). */
  signal: AbortSignal;
  /** The body's own driver, its link watched (connect.ts); TLS warnings were the parent's to say. */
  openDriver(data: ThreadBroker): Promise<Driver>;
  /** Its latest counts (flat numbers); the parent sees every thread's added up. */
  progress(counts: Record<string, number>): void;
  /** A line for stderr; the parent says each distinct one once. */
  warn(text: string): void;
  /** Something for the parent's command (its onEvent). */
  tell(event: unknown): void;
  /** A request to the parent's command (its onAsk), answered by its reply; `transfer` moves buffers instead of copying them. */
  ask(request: unknown, transfer?: ArrayBuffer[]): Promise<unknown>;
  /** Events from the parent's command (Threads.tell). */
  onEvent(listener: (event: unknown) => void): void;
}

/** A thread body: what THREAD_BODIES' modules export as `threadBody`. */
export type ThreadBody<D> = (data: D, ctx: ThreadContext) => Promise<unknown>;

/** How a thread's error crosses: its class by name, so the parent throws the same one. */
export interface ThreadError {
  name: string;
  message: string;
  hint: string | undefined;
  exitCode: number | undefined;
  /** Set on an error that carries an errno code (EPIPE: stdout closed by its reader). */
  code: string | undefined;
}

export type FromThread =
  | { progress: Record<string, number> }
  | { warn: string }
  | { event: unknown }
  | { ask: { id: number; request: unknown } }
  | { result: unknown }
  | { error: ThreadError };

export type ToThread = { abort: true } | { event: unknown } | { reply: { id: number; value?: unknown; error?: ThreadError } };

export function threadError(err: unknown): ThreadError {
  const e = err as { name?: unknown; hint?: unknown; exitCode?: unknown; code?: unknown };
  return {
    name: typeof e?.name === 'string' ? e.name : 'Error',
    message: errors.messageOf(err),
    hint: typeof e?.hint === 'string' ? e.hint : undefined,
    exitCode: typeof e?.exitCode === 'number' ? e.exitCode : undefined,
    code: typeof e?.code === 'string' ? e.code : undefined,
  };
}

const ERROR_CLASSES: Record<string, new (message: string, options?: errors.PayqErrorOptions) => PayqError> = {
  UsageError: errors.UsageError,
  ConfigError: errors.ConfigError,
  BrokerUnavailableError: errors.BrokerUnavailableError,
  AuthError: errors.AuthError,
  TopologyError: errors.TopologyError,
  DeliveryError: errors.DeliveryError,
  DataError: errors.DataError,
  ThresholdError: errors.ThresholdError,
  InterruptedError: errors.InterruptedError,
  InternalError: errors.InternalError,
};

/** The error a thread posted, as the PayqError it was (or one of the same exit code). */
export function rebuildError(e: ThreadError): Error {
  const Class = ERROR_CLASSES[e.name];
  if (Class) return new Class(e.message, { hint: e.hint });
  if (e.code !== undefined) return Object.assign(new Error(e.message), { code: e.code });
  const byExit = Object.values(ERROR_CLASSES).find((C) => new C('').exitCode === e.exitCode);
  return new (byExit ?? errors.InternalError)(e.message, { hint: e.hint });
}

export interface ThreadHooks {
  signal?: AbortSignal | undefined;
  /** Every thread's latest counts added up, whenever one posts. */
  onProgress?: ((sum: Record<string, number>, elapsedMs: number) => void) | undefined;
  onWarn?: ((text: string) => void) | undefined;
  onEvent?: ((index: number, event: unknown) => void) | undefined;
  onAsk?: ((index: number, request: unknown) => Promise<unknown>) | undefined;
}

export interface Threads {
  /** Each thread's result, in thread order; rejects with the first failure (the others stopped). */
  results: Promise<unknown[]>;
  /** Sends an event to thread `index` (from 0), or to every thread. */
  tell(index: number | 'all', event: unknown): void;
  /** Stops every thread as Ctrl-C does (each finishes what is in flight and reports). */
  abort(): void;
}

/** Starts `count` threads running `command`'s body, thread k (from 1) with `dataFor(k)`. */
export function startThreads(command: ThreadCommand, count: number, dataFor: (k: number) => unknown, hooks: ThreadHooks = {}): Threads {
  const startMs = performance.now();
  const progress: Record<string, number>[] = Array.from({ length: count }, () => ({}));
  const warned = new Set<string>();
  const workers: Worker[] = [];
  const post = (w: Worker, m: ToThread) => w.postMessage(m);
  const abort = () => {
    for (const w of workers) post(w, { abort: true });
  };
  hooks.signal?.addEventListener('abort', abort, { once: true });
  /** The first failure in time: the others may only be the stop it caused. */
  let failure: { error: unknown } | undefined;
  const runs = Array.from({ length: count }, (_, i) => {
    const worker = new Worker(new URL('./thread-entry.js', import.meta.url), { workerData: { command, data: dataFor(i + 1) } });
    workers.push(worker);
    return new Promise<unknown>((resolve, fail) => {
      let settled = false;
      const reject = (err: unknown) => {
        settled = true;
        failure ??= { error: err };
        abort();
        fail(err);
      };
      worker.on('message', (m: FromThread) => {
        if ('progress' in m) {
          progress[i] = m.progress;
          const sum: Record<string, number> = {};
          for (const p of progress) for (const [k, v] of Object.entries(p)) sum[k] = (sum[k] ?? 0) + v;
          hooks.onProgress?.(sum, performance.now() - startMs);
        } else if ('warn' in m) {
          if (!warned.has(m.warn)) {
            warned.add(m.warn);
            hooks.onWarn?.(m.warn);
          }
        } else if ('event' in m) {
          hooks.onEvent?.(i, m.event);
        } else if ('ask' in m) {
          const { id, request } = m.ask;
          const answer = hooks.onAsk ? hooks.onAsk(i, request) : Promise.reject(new InternalError('no answer for a thread'));
          answer.then(
            (value) => post(worker, { reply: { id, value } }),
            (err: unknown) => post(worker, { reply: { id, error: threadError(err) } }),
          );
        } else if ('result' in m) {
          settled = true;
          resolve(unpackHistograms(m.result as Packed<unknown>));
        } else {
          reject(rebuildError(m.error));
        }
      });
      worker.on('error', (err) => reject(new InternalError(`${command} thread ${i + 1} failed: ${err.message}`, { cause: err })));
      worker.on('exit', (code) => {
        if (!settled) reject(new InternalError(`${command} thread ${i + 1} stopped unexpectedly (exit code ${code})`));
      });
    });
  });
  const results = (async () => {
    try {
      const settled = await Promise.allSettled(runs);
      if (failure) throw failure.error;
      return settled.map((s) => (s as PromiseFulfilledResult<unknown>).value);
    } finally {
      hooks.signal?.removeEventListener('abort', abort);
      await Promise.all(workers.map((w) => w.terminate()));
    }
  })();
  return {
    results,
    tell: (index, event) => {
      for (const [k, w] of workers.entries()) if (index === 'all' || index === k) post(w, { event });
    },
    abort,
  };
}

/** Runs `count` threads to their end (startThreads without talking to them). */
export function runInThreads(command: ThreadCommand, count: number, dataFor: (k: number) => unknown, hooks: ThreadHooks = {}): Promise<unknown[]> {
  return startThreads(command, count, dataFor, hooks).results;
}
