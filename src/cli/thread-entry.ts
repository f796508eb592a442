/**
 * The one entry of every `--procs N` thread (started by threads.ts only): runs the body of the
 * command it was started for with the data it was given, and posts what the body says, then its
 * result or its error.
 */
import { parentPort, workerData } from 'node:worker_threads';
import { watchLink } from './connect.js';
import { createDriver } from '../drivers/registry.js';
import { packHistograms } from '../metrics/histogram.js';
import { rebuildError, threadError, THREAD_BODIES, type FromThread, type ThreadCommand, type ThreadContext, type ToThread } from './threads.js';

const { command, data } = workerData as { command: ThreadCommand; data: unknown };
const port = parentPort!;
const abort = new AbortController();
const post = (m: FromThread) => port.postMessage(m);
const listeners: ((event: unknown) => void)[] = [];
const asked = new Map<number, { resolve: (v: unknown) => void; reject: (e: unknown) => void }>();
let nextAsk = 0;

port.on('message', (m: ToThread) => {
  if ('abort' in m) abort.abort();
  else if ('event' in m) for (const l of listeners) l(m.event);
  else {
    const waiting = asked.get(m.reply.id);
    asked.delete(m.reply.id);
    if (m.reply.error) waiting?.reject(rebuildError(m.reply.error));
    else waiting?.resolve(m.reply.value);
  }
});

const ctx: ThreadContext = {
  signal: abort.signal,
  async openDriver({ broker, reconnectTimeout }) {
    const driver = await createDriver(broker, { reconnectTimeoutMs: reconnectTimeout, signal: abort.signal });
    watchLink(driver, ctx.warn, reconnectTimeout);
    return driver;
  },
  progress: (counts) => post({ progress: counts }),
  warn: (text) => post({ warn: text }),
  tell: (event) => post({ event }),
  ask: (request, transfer) =>
    new Promise((resolve, reject) => {
      const id = nextAsk++;
      asked.set(id, { resolve, reject });
      port.postMessage({ ask: { id, request } } satisfies FromThread, transfer);
    }),
  onEvent: (listener) => listeners.push(listener),
};

try {
  const { threadBody } = await THREAD_BODIES[command]();
  const result = await (threadBody as (d: unknown, c: ThreadContext) => Promise<unknown>)(data, ctx);
  post({ result: packHistograms(result) });
} catch (err) {
  post({ error: threadError(err) });
}
