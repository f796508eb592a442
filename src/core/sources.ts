/**
 * Where `produce` gets its events: the seeded generator, or users' own NDJSON (a file or stdin).
 * A source hands out events in chunks so the hot loop stays synchronous for generated events.
 */
import { isUtf8 } from 'node:buffer';
import { createReadStream, statSync } from 'node:fs';
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
  /** Lines skipped unread first (sent by an earlier run: `--skip-lines`). */
  skipLines?: number | undefined;
  /** At most this many events (`--count`); the lines after the last one are not read. */
  maxEvents?: number | undefined;
}

/** An NDJSON source that ends at a bad line instead of throwing, and says where it stopped. */
export interface NdjsonSource extends EventSource {
  /** Number of the input line of the last event handed out (0 before any). */
  readonly lastLine: number;
  /** The bad line that ended the source; every event before it was handed out. */
  readonly failure: BadLineError | undefined;
}

/**
 * How an NDJSON input can be read: a regular file twice (validated, then sent), anything else
 * (stdin, a pipe, a device) once, as it streams. Refuses what cannot be read (exit 2).
 */
export function ndjsonInputKind(file: string): 'file' | 'stream' {
  if (file === '-') return 'stream';
  let stat;
  try {
    stat = statSync(file);
  } catch (err) {
    throw new ConfigError(`--from-file: cannot read ${file}: ${readError(err)}`, { cause: err });
  }
  if (stat.isDirectory()) throw new ConfigError(`--from-file: cannot read ${file}: it is a directory, not an NDJSON file`);
  return stat.isFile() ? 'file' : 'stream';
}

function readError(err: unknown): string {
  const code = (err as NodeJS.ErrnoException).code;
  if (code === 'ENOENT') return 'no such file';
  if (code === 'EACCES' || code === 'EPERM') return 'permission denied';
  if (code === 'EISDIR') return 'it is a directory, not an NDJSON file';
  return (err as Error).message;
}

/** A line of the input that cannot be sent; `line` is its number in the input. */
export class BadLineError extends ConfigError {
  constructor(
    message: string,
    readonly line: number,
  ) {
    super(message);
  }
}

function scalar(v: unknown): string | undefined {
  return typeof v === 'string' || typeof v === 'number' ? String(v) : undefined;
}

/** A line longer than this is not kept in memory: its length alone makes it an error. */
const MAX_LINE_BYTES = MAX_FILE_EVENT_BYTES + 4096;
const TOO_LONG = Symbol('line too long');

/**
 * The input's lines as bytes (so invalid UTF-8 is seen, not replaced), without the line break.
 * A line over MAX_LINE_BYTES comes as TOO_LONG as soon as it is that long, and the rest of it is
 * skipped: memory stays bounded by one line, and an endless line (`/dev/zero`) ends at once.
 */
async function* rawLines(input: AsyncIterable<Buffer | string>, name: string): AsyncGenerator<Array<Buffer | typeof TOO_LONG>> {
  let parts: Buffer[] = [];
  let length = 0;
  let skipping = false;
  try {
    for await (const data of input) {
      const chunk = typeof data === 'string' ? Buffer.from(data, 'utf8') : data;
      // The lines completed by this chunk, handed out together: one await per chunk, not per line.
      const lines: Array<Buffer | typeof TOO_LONG> = [];
      let start = 0;
      while (start <= chunk.length) {
        const nl = chunk.indexOf(10, start);
        const end = nl === -1 ? chunk.length : nl;
        if (!skipping) {
          length += end - start;
          if (length > MAX_LINE_BYTES) {
            parts = [];
            skipping = true;
            lines.push(TOO_LONG);
          } else if (end > start) parts.push(chunk.subarray(start, end));
        }
        if (nl === -1) break;
        if (!skipping) lines.push(Buffer.concat(parts, length));
        parts = [];
        length = 0;
        skipping = false;
        start = nl + 1;
      }
      if (lines.length > 0) yield lines;
    }
  } catch (err) {
    throw new ConfigError(`cannot read ${name}: ${readError(err)}`, { cause: err });
  }
  if (length > 0 && !skipping) yield [Buffer.concat(parts, length)];
}

const BOM = Buffer.from([0xef, 0xbb, 0xbf]);

function kindOf(v: unknown): string {
  if (Array.isArray(v)) return 'an array';
  if (v === null) return 'null';
  return typeof v === 'string' ? 'a string' : typeof v === 'number' ? 'a number' : typeof v === 'boolean' ? 'a boolean' : typeof v;
}

interface CheckedLine {
  text: string;
  body: object;
  type: string;
}

/** One line checked: undefined for a blank line; a ConfigError naming `where` when it is bad. */
function checkLine(raw: Buffer | typeof TOO_LONG, lineNo: number, where: string, typeField: string): CheckedLine | undefined {
  const bad = (problem: string) => new BadLineError(`${where}: ${problem}`, lineNo);
  if (raw === TOO_LONG) throw bad('the line is longer than 1 MiB; payq sends events of at most 1 MiB');
  if (raw.length > MAX_FILE_EVENT_BYTES) throw bad(`the line is ${(raw.length / 1e6).toFixed(1)} MB; payq sends events of at most 1 MiB`);
  // A UTF-8 byte order mark (Windows editors) is not part of the first event.
  const bytes = lineNo === 1 && raw.subarray(0, 3).equals(BOM) ? raw.subarray(3) : raw;
  if (!isUtf8(bytes)) throw bad(`not valid UTF-8 (NDJSON is UTF-8 text)`);
  const text = bytes.toString('utf8').trim();
  if (text === '') return undefined;
  let body: unknown;
  try {
    body = JSON.parse(text);
  } catch {
    throw bad(`not JSON (each line must be one JSON object)`);
  }
  if (body === null || typeof body !== 'object' || Array.isArray(body)) throw bad(`not a JSON object (got ${kindOf(body)})`);
  const type = scalar(getPath(body, typeField));
  if (type === undefined) throw bad(`no event type in field '${typeField}' (set --type-field)`);
  return { text, body, type };
}

interface NumberedEvent {
  lineNo: number;
  checked: CheckedLine;
}

/**
 * The input's events with their line numbers, after `skipLines`, up to `maxEvents`, a chunk at
 * a time. A bad line throws, after the good events before it were handed out.
 */
async function* numberedEvents(options: NdjsonSourceOptions, input: AsyncIterable<Buffer | string>): AsyncGenerator<NumberedEvent[]> {
  const name = options.file === '-' ? 'stdin' : options.file;
  const skip = options.skipLines ?? 0;
  const max = options.maxEvents ?? Infinity;
  if (max <= 0) return;
  let lineNo = 0;
  let events = 0;
  for await (const lines of rawLines(input, name)) {
    const batch: NumberedEvent[] = [];
    for (const raw of lines) {
      lineNo++;
      if (lineNo <= skip) continue;
      let checked: CheckedLine | undefined;
      try {
        checked = checkLine(raw, lineNo, `${name}:${lineNo}`, options.typeField);
      } catch (err) {
        if (batch.length > 0) yield batch;
        throw err;
      }
      if (checked === undefined) continue;
      batch.push({ lineNo, checked });
      if (++events >= max) {
        yield batch;
        return;
      }
    }
    if (batch.length > 0) yield batch;
  }
}

function openInput(options: NdjsonSourceOptions): Readable {
  if (options.file === '-') return options.stdin ?? process.stdin;
  return createReadStream(options.file, { highWaterMark: 256 * 1024 });
}

/**
 * The first pass over a regular file: every line that would be sent is checked, nothing is
 * kept. Throws the first bad line (so nothing is sent); returns the number of events.
 */
export async function validateNdjsonFile(options: NdjsonSourceOptions): Promise<{ events: number; lastLine: number }> {
  const input = openInput(options);
  let events = 0;
  let lastLine = 0;
  try {
    for await (const batch of numberedEvents(options, input)) {
      events += batch.length;
      lastLine = batch[batch.length - 1]!.lineNo;
    }
  } finally {
    input.destroy();
  }
  return { events, lastLine };
}

/**
 * Reads one JSON event per line. The body is sent as written; type, id and key are read from it
 * (`id`, then a generated one; key: `payment_id`, `data.payment_id`, `data.order_id`, the id).
 * A bad line ends the source (see `failure`); the good events before it are handed out.
 */
export function ndjsonSource(options: NdjsonSourceOptions): NdjsonSource {
  const input = openInput(options);
  const events = numberedEvents(options, input);
  const prng = new Prng(options.seed);
  let count = 0;
  let lastLine = 0;
  let done = false;
  let failure: BadLineError | undefined;
  let buffered: NumberedEvent[] = [];
  let next = 0;

  const toEvent = ({ checked }: NumberedEvent): GeneratedEvent => {
    const { body, text, type } = checked;
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
      const out: GeneratedEvent[] = [];
      while (out.length < max) {
        if (next < buffered.length) {
          const e = buffered[next++]!;
          out.push(toEvent(e));
          lastLine = e.lineNo;
          count++;
          continue;
        }
        if (done) break;
        let got: IteratorResult<NumberedEvent[]>;
        try {
          got = await events.next();
        } catch (err) {
          done = true;
          if (!(err instanceof BadLineError)) throw err;
          failure = err;
          break;
        }
        if (got.done) {
          done = true;
          break;
        }
        buffered = got.value;
        next = 0;
      }
      return out;
    },
    get payments() {
      return count;
    },
    get lastLine() {
      return lastLine;
    },
    get failure() {
      return failure;
    },
    close() {
      done = true;
      if (options.file !== '-') input.destroy();
    },
  };
}
