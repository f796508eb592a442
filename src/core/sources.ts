/**
 * Where `produce` gets its events: the seeded generator, or users' own NDJSON (a file or stdin).
 * A source hands out events in chunks so the hot loop stays synchronous for generated events.
 */
import { createReadStream } from 'node:fs';
import { createInterface } from 'node:readline';
import type { Readable } from 'node:stream';
import { ConfigError } from '../errors.js';
import type { EventGenerator, GeneratedEvent } from '../events/generator.js';
import { Prng } from '../events/prng.js';
import { getPath } from '../events/decode.js';

export interface EventSource {
  /** Up to `max` events; an empty array means the source is exhausted. */
  pull(max: number): GeneratedEvent[] | Promise<GeneratedEvent[]>;
  /** Payments started so far (generated sources), or events read (files). */
  readonly payments: number;
  close?(): void;
}

export function generatedSource(generator: EventGenerator): EventSource {
  return {
    pull(max) {
      const out: GeneratedEvent[] = [];
      for (let i = 0; i < max; i++) {
        const e = generator.next();
        if (e === undefined) break;
        out.push(e);
      }
      return out;
    },
    get payments() {
      return generator.paymentsStarted;
    },
  };
}

/** Largest event accepted from a file: Kafka's default message.max.bytes is about 1 MB. */
export const MAX_FILE_EVENT_BYTES = 1024 * 1024;

export interface NdjsonSourceOptions {
  /** File path, or '-' for stdin. */
  file: string;
  stdin?: Readable;
  /** Body field holding the event type (dot path). */
  typeField: string;
  seed: number;
}

function scalar(v: unknown): string | undefined {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

/**
 * Reads one JSON event per line. The body is sent as written; type, id and key are read from it
 * (`id`, then a generated one; key: `payment_id`, `data.payment_id`, `data.order_id`, the id).
 */
export function ndjsonSource(options: NdjsonSourceOptions): EventSource {
  const name = options.file === '-' ? 'stdin' : options.file;
  const input: Readable = options.file === '-' ? (options.stdin ?? process.stdin) : createReadStream(options.file);
  const opened = new Promise<void>((resolve, reject) => {
    if (options.file === '-') return resolve();
    input.once('open', () => resolve());
    input.once('error', (err: NodeJS.ErrnoException) =>
      reject(new ConfigError(`cannot read ${name}: ${err.code === 'ENOENT' ? 'no such file' : err.message}`, { cause: err })),
    );
  });
  // Surfaced by the first pull(); until then a rejection must not count as unhandled.
  opened.catch(() => undefined);
  const lines = createInterface({ input, crlfDelay: Infinity })[Symbol.asyncIterator]();
  const prng = new Prng(options.seed);
  let lineNo = 0;
  let count = 0;
  let done = false;
  // A bad line ends the stream, but the good events read before it in the same chunk still go.
  let pendingError: unknown;

  const parse = (line: string): GeneratedEvent | undefined => {
    const text = line.trim();
    if (text === '') return undefined;
    const where = `${name}:${lineNo}`;
    if (Buffer.byteLength(text) > MAX_FILE_EVENT_BYTES) {
      const mb = (Buffer.byteLength(text) / 1e6).toFixed(1);
      throw new ConfigError(`${where}: the event is ${mb} MB; payq sends events of at most 1 MiB`);
    }
    let body: unknown;
    try {
      body = JSON.parse(text);
    } catch {
      throw new ConfigError(`${where}: not JSON (each line must be one JSON object)`);
    }
    if (body === null || typeof body !== 'object' || Array.isArray(body)) throw new ConfigError(`${where}: not a JSON object`);
    const type = scalar(getPath(body, options.typeField));
    if (type === undefined) throw new ConfigError(`${where}: no event type in field '${options.typeField}' (set --type-field)`);
    const id = scalar(getPath(body, 'id')) ?? prng.uuid();
    const key =
      scalar(getPath(body, 'payment_id')) ?? scalar(getPath(body, 'data.payment_id')) ?? scalar(getPath(body, 'data.order_id')) ?? id;
    const occurred = scalar(getPath(body, 'occurred_at'));
    const traceId = prng.hex(16);
    const sequence = getPath(body, 'sequence');
    return {
      id,
      type,
      paymentId: key,
      // The body's own position of the event in its payment, if it says (not the line number).
      sequence: Number.isSafeInteger(sequence) && (sequence as number) >= 0 ? (sequence as number) : undefined,
      source: 'file',
      occurredAt: occurred ?? new Date().toISOString(),
      traceId,
      spanId: traceId.slice(0, 16),
      body: text,
    };
  };

  return {
    async pull(max) {
      await opened;
      if (pendingError !== undefined) throw pendingError;
      const out: GeneratedEvent[] = [];
      while (!done && out.length < max) {
        const next = await lines.next();
        if (next.done) {
          done = true;
          break;
        }
        lineNo++;
        let event: GeneratedEvent | undefined;
        try {
          event = parse(next.value);
        } catch (err) {
          done = true;
          if (out.length === 0) throw err;
          pendingError = err;
          break;
        }
        if (event) {
          count++;
          out.push(event);
        }
      }
      return out;
    },
    get payments() {
      return count;
    },
    close() {
      if (options.file !== '-') input.destroy();
    },
  };
}
