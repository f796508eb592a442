/**
 * One thread of `payq produce --procs N` (started by produce-procs.ts only): its own driver and
 * client, its own generator thread, shard k/N of the seeded stream. Posts progress while it runs
 * and, at the end, its result with the histograms encoded (merged exactly by the parent).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { systemClock } from '../../core/clock.js';
import { produce } from '../../core/produce.js';
import { threadedSource } from '../../core/threaded-source.js';
import { createDriver } from '../../drivers/registry.js';
import { messageOf } from '../../errors.js';
import { parseScenario } from '../../events/scenario.js';
import { encodeHistogram } from '../../metrics/histogram.js';
import type { ProduceThreadData, ProduceThreadMessage } from './produce-procs.js';

const data = workerData as ProduceThreadData;
const port = parentPort!;
const abort = new AbortController();
port.on('message', (m: 'abort') => {
  if (m === 'abort') abort.abort();
});
const post = (m: ProduceThreadMessage) => port.postMessage(m);

try {
  const scenario = parseScenario(data.scenarioText, data.scenarioOrigin);
  const driver = await createDriver(data.broker, data.driverOptions);
  const source = threadedSource({ ...data.generator, scenario });
  try {
    await driver.connect();
    const result = await produce(data.produce, {
      driver,
      source,
      clock: systemClock,
      signal: abort.signal,
      onProgress: (p) => post({ progress: { sent: p.sent, acked: p.acked, failed: p.failed } }),
    });
    const { histograms, ...rest } = result;
    post({
      result: rest,
      histograms: {
        publish: encodeHistogram(histograms.publish),
        publishDelay: encodeHistogram(histograms.publishDelay),
        intended: encodeHistogram(histograms.intended),
      },
    });
  } finally {
    source.close?.();
    await driver.close();
  }
} catch (err) {
  // The error's class travels by name and exit code: the parent rebuilds a PayqError of the same exit code.
  const e = err as { exitCode?: number };
  post({ error: { message: messageOf(err), exitCode: typeof e.exitCode === 'number' ? e.exitCode : undefined } });
}
