/**
 * `payq produce --procs N` (README "payq produce"): N threads (threads.ts), each with its own
 * driver, client and generator thread and shard k/N of the seeded stream, merged into one result:
 * counts added, histograms merged exactly, events/s over the whole wall time.
 */
import { systemClock } from '../../core/clock.js';
import { produce, produceResult, type ProduceOptions, type ProduceResult } from '../../core/produce.js';
import { threadedSource } from '../../core/threaded-source.js';
import type { GeneratorOptions } from '../../events/generator.js';
import { mergeHistograms } from '../../metrics/merge.js';
import { runInThreads, scenarioIn, type ThreadBroker, type ThreadContext, type ThreadScenario } from '../threads.js';

export interface ProduceThreadData extends ThreadBroker {
  scenario: ThreadScenario;
  generator: Omit<GeneratorOptions, 'scenario'>;
  produce: ProduceOptions;
}

export interface ProcsProgress {
  sent: number;
  acked: number;
  failed: number;
  elapsedMs: number;
}

/** One thread: its own driver and generator thread, shard k/N. */
export async function threadBody(data: ProduceThreadData, thread: ThreadContext): Promise<ProduceResult> {
  const scenario = scenarioIn(data.scenario);
  const driver = await thread.openDriver(data);
  const source = threadedSource({ ...data.generator, scenario });
  try {
    await driver.connect();
    return await produce(data.produce, {
      driver,
      source,
      clock: systemClock,
      signal: thread.signal,
      onProgress: (p) => thread.progress({ sent: p.sent, acked: p.acked, failed: p.failed }),
    });
  } finally {
    source.close?.();
    await driver.close();
  }
}

/** Runs `threads` shards (data for shard k built by `dataFor(k)`, k from 1) and merges them. */
export async function produceInThreads(
  threads: number,
  dataFor: (k: number) => ProduceThreadData,
  signal: AbortSignal | undefined,
  onProgress?: (p: ProcsProgress) => void,
): Promise<ProduceResult> {
  const startMs = performance.now();
  const parts = (await runInThreads('produce', threads, dataFor, {
    signal,
    onProgress: (p, elapsedMs) => onProgress?.({ sent: p['sent'] ?? 0, acked: p['acked'] ?? 0, failed: p['failed'] ?? 0, elapsedMs }),
  })) as ProduceResult[];
  const elapsedS = Math.max(1e-6, (performance.now() - startMs) / 1000);
  const sum = (f: (r: ProduceResult) => number) => parts.reduce((a, p) => a + f(p), 0);
  return produceResult({
    destination: parts[0]!.destination,
    payments: sum((r) => r.payments),
    sent: sum((r) => r.sent),
    acked: sum((r) => r.acked),
    failed: sum((r) => r.failed),
    unconfirmed: sum((r) => r.unconfirmed),
    bytesAcked: sum((r) => r.bytes_acked),
    elapsedS,
    paced: parts[0]!.publish_delay !== undefined,
    errors: [...new Set(parts.flatMap((p) => p.errors))].slice(0, 5),
    interrupted: parts.some((p) => p.interrupted),
    stoppedEarly: parts.some((p) => p.stopped_early),
    brokerGone: parts.some((p) => p.broker_gone),
    // Each thread has its own connection: reconnects add up, the longest outage is the run's.
    link: { reconnects: sum((r) => r.reconnects), downMs: Math.max(...parts.map((p) => p.unavailable_s * 1000)) },
    histograms: {
      publish: mergeHistograms(parts.map((p) => p.histograms.publish)),
      publishDelay: mergeHistograms(parts.map((p) => p.histograms.publishDelay)),
      intended: mergeHistograms(parts.map((p) => p.histograms.intended)),
    },
  });
}
