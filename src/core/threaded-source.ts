/**
 * The seeded generator on a thread of its own (generator-worker.ts): the sending thread gets the
 * events in packed batches, bodies already encoded, and only unpacks them. Generation costs about
 * as much as an in-process broker's send, so a producer that also generates would run at half
 * speed; with the generator beside it, it runs at the speed of the send. Same seed and settings,
 * the same events in the same order as generatedSource (test/unit/threaded-source.test.ts).
 *
 * The thread works a few batches ahead of the sender (credit-based), never further, so a slow
 * broker or a rate limit holds generation back too.
 */
import { Worker } from 'node:worker_threads';
import { InternalError } from '../errors.js';
import type { GeneratedEvent, GeneratorOptions } from '../events/generator.js';
import type { EventSource } from './sources.js';

/** Separates the fields of the packed batches. */
export const SEP = '\u0001';
const FIELDS = 10;

export interface GeneratorThreadData {
  scenarioText: string;
  scenarioOrigin: string;
  generator: Omit<GeneratorOptions, 'scenario'>;
  batchSize: number;
}

export interface PackedBatch {
  count: number;
  /** The bodies, UTF-8, one after the other. */
  bodies: ArrayBuffer;
  /** End offset of each body in `bodies`. */
  ends: Uint32Array;
  /** FIELDS per event, separated by SEP (see generator-worker.ts). */
  text: string;
}

export type ThreadMessage = { batch: PackedBatch } | { done: true } | { error: string };

export interface ThreadedSourceOptions {
  /** Events per packed batch (default 256: its text stays out of the large-object space). */
  batchSize?: number;
  /** Batches generated ahead of the sender (default 16). */
  ahead?: number;
}

/** An event unpacked from a batch: the body stays bytes until someone asks for the text. */
class PackedEvent implements GeneratedEvent {
  constructor(
    readonly id: string,
    readonly type: string,
    readonly paymentId: string,
    readonly sequence: number | undefined,
    readonly source: string,
    readonly occurredAt: string,
    readonly traceId: string,
    readonly spanId: string,
    readonly parentId: string | undefined,
    readonly siblings: number | undefined,
    readonly value: Buffer,
  ) {}

  get body(): string {
    return this.value.toString('utf8');
  }
}

function optionalNumber(text: string): number | undefined {
  return text === '' ? undefined : Number(text);
}

/** A batch being handed out. */
class Unpacker {
  private fields: string[] | undefined;
  private readonly bodies: Buffer;
  next = 0;

  constructor(private readonly batch: PackedBatch) {
    this.bodies = Buffer.from(batch.bodies);
  }

  get left(): number {
    return this.batch.count - this.next;
  }

  /** Moves up to `max` events into `out`; returns how many of them start a payment. */
  takeInto(out: GeneratedEvent[], max: number): number {
    const f = (this.fields ??= this.batch.text.split(SEP));
    const ends = this.batch.ends;
    const stop = Math.min(this.batch.count, this.next + max);
    let starts = 0;
    for (let i = this.next; i < stop; i++) {
      const k = i * FIELDS;
      const sequence = optionalNumber(f[k + 3]!);
      if (sequence === 0) starts++;
      out.push(
        new PackedEvent(
          f[k]!,
          f[k + 1]!,
          // A copy: split() gives slices of the batch's text, and one slice kept (trace
          // remembers finished payment ids) would keep the whole text alive.
          (SEP + f[k + 2]!).slice(1),
          sequence,
          f[k + 4]!,
          f[k + 5]!,
          f[k + 6]!,
          f[k + 7]!,
          f[k + 8] === '' ? undefined : f[k + 8],
          optionalNumber(f[k + 9]!),
          this.bodies.subarray(i === 0 ? 0 : ends[i - 1]!, ends[i]!),
        ),
      );
    }
    this.next = stop;
    return starts;
  }
}

/**
 * Events of `options` generated on a thread. `payments` counts the payments whose first event
 * was handed out. close() ends the thread; call it (produce does) or the process stays up.
 */
export function threadedSource(options: GeneratorOptions, settings: ThreadedSourceOptions = {}): EventSource {
  const batchSize = settings.batchSize ?? 256;
  const ahead = settings.ahead ?? 16;
  const { scenario, ...generator } = options;
  const data: GeneratorThreadData = { scenarioText: scenario.text, scenarioOrigin: scenario.origin, generator, batchSize };
  const worker = new Worker(new URL('./generator-worker.js', import.meta.url), { workerData: data });

  const ready: Unpacker[] = [];
  let requested = 0;
  let done = false;
  let closed = false;
  let failure: Error | undefined;
  let payments = 0;
  let wake: (() => void) | undefined;
  const notify = () => {
    const w = wake;
    wake = undefined;
    w?.();
  };
  const fail = (err: Error) => {
    failure ??= err;
    notify();
  };

  worker.on('message', (m: ThreadMessage) => {
    if ('batch' in m) {
      requested--;
      ready.push(new Unpacker(m.batch));
    } else if ('done' in m) {
      // Messages arrive in order: every batch there is has arrived; no credit is outstanding.
      done = true;
      requested = 0;
    } else {
      fail(new InternalError(`the generator thread failed: ${m.error}`));
    }
    notify();
  });
  worker.on('error', (err) => fail(new InternalError(`the generator thread failed: ${err.message}`, { cause: err })));
  worker.on('exit', (code) => {
    if (!closed && !done) fail(new InternalError(`the generator thread stopped unexpectedly (exit code ${code})`));
  });

  const topUp = () => {
    if (done || closed) return;
    const want = ahead - requested - ready.length;
    if (want > 0) {
      requested += want;
      worker.postMessage(want);
    }
  };
  topUp();

  return {
    async pull(max) {
      const out: GeneratedEvent[] = [];
      while (out.length < max && !closed) {
        if (failure) throw failure;
        const head = ready[0];
        if (head) {
          payments += head.takeInto(out, max - out.length);
          if (head.left === 0) ready.shift();
          topUp();
          continue;
        }
        // Nothing unpacked is waiting: hand out what there is, or wait for the next batch.
        if (out.length > 0 || done) break;
        topUp();
        await new Promise<void>((resolve) => (wake = resolve));
      }
      return out;
    },
    get payments() {
      return payments;
    },
    close() {
      if (closed) return;
      closed = true;
      ready.length = 0;
      notify();
      void worker.terminate();
    },
  };
}
