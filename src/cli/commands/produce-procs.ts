/**
 * `payq produce --procs N`: N worker threads (produce-thread.ts), each with its own driver and
 * client and shard k/N of the seeded stream, merged into one result: counts added, histograms
 * merged exactly, events/s over the whole wall time (README: "payq produce", --procs).
 *
 * Threads, not child processes: the resolved options (the broker URL with its password among
 * them) stay inside this process instead of travelling through argv or the environment, one
 * stdout and one Ctrl-C stay with the parent, and Node gives each thread its own event loop and
 * heap, which is what a client's hot loop needs to use a core of its own.
 */
import { Worker } from 'node:worker_threads';
import { produceResult, type ProduceOptions, type ProduceResult } from '../../core/produce.js';
import type { GeneratorOptions } from '../../events/generator.js';
import type { BrokerUrl } from '../../drivers/url.js';
import type { DriverOptions } from '../../drivers/types.js';
import {
  AuthError,
  BrokerUnavailableError,
  ConfigError,
  DataError,
  InternalError,
  InterruptedError,
  UsageError,
  type PayqError,
} from '../../errors.js';
import { createLatencyHistogram, decodeHistogram } from '../../metrics/histogram.js';

export interface ProduceThreadData {
  broker: BrokerUrl;
  driverOptions: DriverOptions;
  scenarioText: string;
  scenarioOrigin: string;
  generator: Omit<GeneratorOptions, 'scenario'>;
  produce: ProduceOptions;
}

type PlainResult = Omit<ProduceResult, 'histograms'>;

export type ProduceThreadMessage =
  | { progress: { sent: number; acked: number; failed: number } }
  | { result: PlainResult; histograms: { publish: string; publishDelay: string; intended: string } }
  | { error: { message: string; exitCode: number | undefined } };

export interface ProcsProgress {
  sent: number;
  acked: number;
  failed: number;
  elapsedMs: number;
}

function rebuild(message: string, exitCode: number | undefined): PayqError {
  switch (exitCode) {
    case 2:
      return new ConfigError(message);
    case 3:
      return /auth|password|credential|denied|SASL/i.test(message) ? new AuthError(message) : new BrokerUnavailableError(message);
    case 4:
      return new DataError(message);
    case 130:
      return new InterruptedError(message);
    default:
      return new InternalError(message);
  }
}

/** Runs `threads` shards (data for shard k built by `dataFor(k)`, k from 1) and merges them. */
export async function produceInThreads(
  threads: number,
  dataFor: (k: number) => ProduceThreadData,
  signal: AbortSignal | undefined,
  onProgress?: (p: ProcsProgress) => void,
): Promise<ProduceResult> {
  if (threads < 1) throw new UsageError('--procs must be 1 or more');
  const startMs = performance.now();
  const progress = Array.from({ length: threads }, () => ({ sent: 0, acked: 0, failed: 0 }));
  const workers: Worker[] = [];
  const onAbort = () => {
    for (const w of workers) w.postMessage('abort');
  };
  signal?.addEventListener('abort', onAbort, { once: true });
  const runs = Array.from({ length: threads }, (_, i) => {
    const worker = new Worker(new URL('./produce-thread.js', import.meta.url), { workerData: dataFor(i + 1) });
    workers.push(worker);
    return new Promise<Extract<ProduceThreadMessage, { result: PlainResult }>>((resolve, fail) => {
      let settled = false;
      // One thread failing stops the others (they finish what is in flight and report).
      const reject = (err: unknown) => {
        onAbort();
        fail(err);
      };
      worker.on('message', (m: ProduceThreadMessage) => {
        if ('progress' in m) {
          progress[i] = m.progress;
          const sum = progress.reduce((a, p) => ({ sent: a.sent + p.sent, acked: a.acked + p.acked, failed: a.failed + p.failed }));
          onProgress?.({ ...sum, elapsedMs: performance.now() - startMs });
        } else if ('result' in m) {
          settled = true;
          resolve(m);
        } else {
          settled = true;
          reject(rebuild(m.error.message, m.error.exitCode));
        }
      });
      worker.on('error', (err) => {
        settled = true;
        reject(new InternalError(`producer thread ${i + 1} failed: ${err.message}`, { cause: err }));
      });
      worker.on('exit', (code) => {
        if (!settled) reject(new InternalError(`producer thread ${i + 1} stopped unexpectedly (exit code ${code})`));
      });
    });
  });
  let parts: Extract<ProduceThreadMessage, { result: PlainResult }>[];
  try {
    const settled = await Promise.allSettled(runs);
    const failure = settled.find((s) => s.status === 'rejected');
    if (failure) throw (failure as PromiseRejectedResult).reason;
    parts = settled.map((s) => (s as PromiseFulfilledResult<(typeof parts)[number]>).value);
  } finally {
    signal?.removeEventListener('abort', onAbort);
    await Promise.all(workers.map((w) => w.terminate()));
  }
  const elapsedS = Math.max(1e-6, (performance.now() - startMs) / 1000);
  const publish = createLatencyHistogram();
  const publishDelay = createLatencyHistogram();
  const intended = createLatencyHistogram();
  for (const p of parts) {
    publish.add(decodeHistogram(p.histograms.publish));
    publishDelay.add(decodeHistogram(p.histograms.publishDelay));
    intended.add(decodeHistogram(p.histograms.intended));
  }
  const sum = (f: (r: PlainResult) => number) => parts.reduce((a, p) => a + f(p.result), 0);
  return produceResult({
    destination: parts[0]!.result.destination,
    payments: sum((r) => r.payments),
    sent: sum((r) => r.sent),
    acked: sum((r) => r.acked),
    failed: sum((r) => r.failed),
    unconfirmed: sum((r) => r.unconfirmed),
    bytesAcked: sum((r) => r.bytes_acked),
    elapsedS,
    paced: parts[0]!.result.publish_delay !== undefined,
    errors: [...new Set(parts.flatMap((p) => p.result.errors))].slice(0, 5),
    interrupted: parts.some((p) => p.result.interrupted),
    stoppedEarly: parts.some((p) => p.result.stopped_early),
    brokerGone: parts.some((p) => p.result.broker_gone),
    // Each thread has its own connection: reconnects add up, the longest outage is the run's.
    link: { reconnects: sum((r) => r.reconnects), downMs: Math.max(...parts.map((p) => p.result.unavailable_s * 1000)) },
    histograms: { publish, publishDelay, intended },
  });
}
