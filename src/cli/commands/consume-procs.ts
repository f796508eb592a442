/**
 * `payq consume --group G --procs N` (README "payq consume"): N members of the group G in N
 * threads (threads.ts), each with its own driver and client. A thread decodes and formats its
 * deliveries; the lines go through this process's one stdout, a batch at a time (never a partial
 * line between two threads'), and a thread acks a batch only once this process wrote it. --limit
 * is the whole run's: this process writes up to it, tells a thread how many of its lines it
 * wrote (core/consume.ts gives the rest back), and then stops the others.
 */
import { Chalk } from 'chalk';
import { consume, mergeConsumeResults, type ConsumeEnd, type ConsumeOptions, type ConsumeResult } from '../../core/consume.js';
import type { Output } from '../output.js';
import { startThreads, type ThreadBroker, type ThreadContext } from '../threads.js';
import { formatLines, type LineOptions, type ProblemWarnings } from './consume.js';

export interface ConsumeThreadData extends ThreadBroker {
  consume: Omit<ConsumeOptions, 'types'> & { types: string[] | undefined };
  lines: LineOptions;
  /** The parent's chalk level, for pretty lines. */
  colorLevel: 0 | 1 | 2 | 3;
}

/** A thread's batch of lines, for the parent to write: UTF-8, moved (not copied) across. */
interface LinesRequest {
  bytes: Uint8Array;
  count: number;
  problems: string[];
}

const NEWLINE = 0x0a;
const utf8 = new TextEncoder();

type ThreadEvent = { ready: true };
/** Why the parent stopped every thread (ThreadContext.onEvent). */
type ParentEvent = { end: ConsumeEnd };

export async function threadBody(data: ConsumeThreadData, thread: ThreadContext): Promise<ConsumeResult> {
  const color = new Chalk({ level: data.colorLevel });
  const ended = new AbortController();
  thread.onEvent((e) => {
    if ((e as ParentEvent).end !== undefined) ended.abort();
  });
  const driver = await thread.openDriver(data);
  try {
    await driver.connect();
    return await consume(
      { ...data.consume, types: data.consume.types ? new Set(data.consume.types) : undefined },
      {
        driver,
        signal: AbortSignal.any([thread.signal, ended.signal]),
        onReady: () => thread.tell({ ready: true } satisfies ThreadEvent),
        onMessages: (messages) => {
          const { text, problems } = formatLines(messages, data.lines, color);
          const bytes = utf8.encode(text);
          return thread.ask({ bytes, count: messages.length, problems } satisfies LinesRequest, [bytes.buffer as ArrayBuffer]) as Promise<number>;
        },
        isOutputClosed: (err) => (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE',
      },
    );
  } finally {
    await driver.close();
  }
}

/** The first `n` lines of `bytes` (a newline byte is only ever a newline in UTF-8). */
function firstLines(bytes: Uint8Array, n: number): Uint8Array {
  let at = 0;
  for (let i = 0; i < n; i++) at = bytes.indexOf(NEWLINE, at) + 1;
  return bytes.subarray(0, at);
}

export async function consumeInThreads(
  threads: number,
  data: ConsumeThreadData,
  deps: { out: Output; warnings: ProblemWarnings; signal: AbortSignal; onReady: () => void },
): Promise<ConsumeResult> {
  const limit = data.consume.limit ?? Infinity;
  let printed = 0;
  let announced = false;
  // The first line comes before any output: with the first thread subscribed, or its first batch.
  const announce = () => {
    if (!announced) deps.onReady();
    announced = true;
  };
  let stoppedBy: ConsumeEnd | undefined;
  let writing = Promise.resolve();
  const run = startThreads('consume', threads, () => data, {
    signal: deps.signal,
    onEvent: announce,
    onAsk: (_, request) => {
      const { bytes, count, problems } = request as LinesRequest;
      // One batch at a time, in the order they came: a batch's lines stay together.
      const written = writing.then(async () => {
        if (stoppedBy !== undefined) return 0;
        announce();
        deps.warnings.say(problems);
        const n = Math.min(count, limit - printed);
        if (n > 0) {
          try {
            await deps.out.dataAsync(n === count ? bytes : firstLines(bytes, n));
          } catch (err) {
            stop((err as NodeJS.ErrnoException).code === 'EPIPE' ? 'output-closed' : 'failed');
            throw err;
          }
        }
        printed += n;
        if (printed >= limit) stop('limit');
        return n;
      });
      writing = written.then(
        () => undefined,
        () => undefined,
      );
      return written;
    },
  });
  const stop = (why: ConsumeEnd) => {
    if (stoppedBy !== undefined) return;
    stoppedBy = why;
    run.tell('all', { end: why } satisfies ParentEvent);
  };
  const parts = (await run.results) as ConsumeResult[];
  parts.forEach((p, i) => deps.out.verbose(`thread ${i + 1}: consumed ${p.consumed}, printed ${p.printed}`));
  const own = parts.map((p) => p.ended_by);
  // Ctrl-C ends every thread; so does this process (stoppedBy); a broker gone ends the run.
  const endedBy: ConsumeEnd = own.includes('broker-gone')
    ? 'broker-gone'
    : deps.signal.aborted
      ? 'interrupted'
      : (stoppedBy ?? own.find((e) => e !== 'interrupted') ?? 'interrupted');
  return mergeConsumeResults(parts, endedBy);
}
