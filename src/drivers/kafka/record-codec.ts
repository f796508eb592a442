/**
 * A lean record codec for kafkajs 2.2.4: the same bytes and the same decoded records as kafkajs'
 * own Record v0 encoder and decoder (recordBatch/record/v0), at a fraction of the CPU.
 *
 * Measured with `node --cpu-prof` on `payq produce` (issue 14): kafkajs builds a new Encoder around
 * a zeroed 512-byte Buffer.alloc for every record and every header of it, and a Buffer.from for
 * every varint: with payq's ~10 headers, allocation and GC were ~45% of produce's CPU. On
 * consume, kafkajs rebuilds the headers object once per header (`{...obj, [key]: value}`) and
 * parses the batch's base offset and timestamp as BigInts for every record. Here a record is
 * sized first and written into one Buffer.allocUnsafe (from Node's pool), and the decoder builds
 * headers in one object and computes offsets and timestamps as numbers while they are exact.
 *
 * kafkajs' modules take their Record encoder and decoder from require() once, when kafkajs is
 * first loaded, so installLeanRecordCodec() puts these two in the require cache under kafkajs'
 * own paths before that (the driver imports this module before kafkajs). It does so only for
 * kafkajs 2.2.4 (its last release: the record format of Kafka's protocol cannot change under
 * it) and only while kafkajs is not loaded yet; otherwise kafkajs runs as it is.
 * test/unit/kafka-record-codec.test.ts compares both with kafkajs' own, byte for byte.
 */
import Module, { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

type HeaderValue = Buffer | string | null | undefined;
interface RecordInput {
  offsetDelta?: number;
  timestampDelta?: number;
  key?: Buffer | string | null | undefined;
  value?: Buffer | string | null | undefined;
  headers?: Record<string, HeaderValue | HeaderValue[]> | undefined;
}

/** What kafkajs' batch encoder reads of a record: an Encoder's `buf`, `buffer` and `size()`. */
class EncodedRecord {
  constructor(readonly buf: Buffer) {}
  get buffer(): Buffer {
    return this.buf;
  }
  size(): number {
    return this.buf.length;
  }
}

function zigzag(v: number): number {
  return v >= 0 ? v * 2 : -v * 2 - 1;
}

/** Bytes of an unsigned varint (exact for integers up to 2^53). */
function uvarSize(v: number): number {
  let n = 1;
  while (v >= 128) {
    v = Math.floor(v / 128);
    n++;
  }
  return n;
}

function writeUVar(buf: Buffer, off: number, v: number): number {
  while (v >= 128) {
    buf[off++] = (v % 128) | 128;
    v = Math.floor(v / 128);
  }
  buf[off++] = v;
  return off;
}

/** Bytes (or text, as UTF-8) of a field; null and undefined are written as length -1. */
function bytesOf(v: Buffer | string | null | undefined): Buffer | string | null {
  if (v === null || v === undefined) return null;
  return Buffer.isBuffer(v) ? v : String(v);
}

function byteLength(v: Buffer | string | null): number {
  return v === null ? -1 : typeof v === 'string' ? Buffer.byteLength(v, 'utf8') : v.length;
}

/** varint(-1) is one byte (zigzag 1); a field of n bytes is varint(n) + n. */
function fieldSize(length: number): number {
  return length < 0 ? 1 : uvarSize(length * 2) + length;
}

function writeField(buf: Buffer, off: number, v: Buffer | string | null, length: number): number {
  if (v === null) {
    buf[off] = 1;
    return off + 1;
  }
  off = writeUVar(buf, off, length * 2);
  if (typeof v === 'string') buf.write(v, off, length, 'utf8');
  else v.copy(buf, off);
  return off + length;
}

// Scratch space for one record's fields: reused, records are encoded one at a time.
let fields: (Buffer | string | null)[] = [];
let lengths: number[] = [];

/** kafkajs' recordBatch/record/v0 encoder, byte for byte. */
export function encodeRecord({ offsetDelta = 0, timestampDelta = 0, key, value, headers = {} }: RecordInput): EncodedRecord {
  if (!Number.isSafeInteger(timestampDelta) || !Number.isSafeInteger(offsetDelta)) {
    throw new TypeError(`record offset/timestamp delta out of range: ${offsetDelta}, ${timestampDelta}`);
  }
  let n = 0;
  for (const name in headers) {
    const v = headers[name];
    if (Array.isArray(v)) {
      for (const item of v) {
        fields[n++] = name;
        fields[n++] = bytesOf(item);
      }
    } else {
      fields[n++] = name;
      fields[n++] = bytesOf(v);
    }
  }
  const k = bytesOf(key);
  const val = bytesOf(value);
  const kLen = byteLength(k);
  const vLen = byteLength(val);
  let body = 1 + uvarSize(zigzag(timestampDelta)) + uvarSize(zigzag(offsetDelta)) + fieldSize(kLen) + fieldSize(vLen) + uvarSize((n / 2) * 2);
  for (let i = 0; i < n; i++) {
    const len = byteLength(fields[i]!);
    lengths[i] = len;
    body += fieldSize(len);
  }
  const buf = Buffer.allocUnsafe(uvarSize(body * 2) + body);
  let off = writeUVar(buf, 0, body * 2);
  buf[off++] = 0; // attributes: none used
  off = writeUVar(buf, off, zigzag(timestampDelta));
  off = writeUVar(buf, off, zigzag(offsetDelta));
  off = writeField(buf, off, k, kLen);
  off = writeField(buf, off, val, vLen);
  off = writeUVar(buf, off, (n / 2) * 2);
  for (let i = 0; i < n; i++) off = writeField(buf, off, fields[i]!, lengths[i]!);
  if (off !== buf.length) throw new Error(`record encoder: wrote ${off} of ${buf.length} bytes`);
  if (n > 256) {
    fields = [];
    lengths = [];
  } else fields.fill(null, 0, n);
  return new EncodedRecord(buf);
}

/** The part of kafkajs' Decoder the record decoder uses. */
interface KafkaDecoder {
  buffer: Buffer;
  offset: number;
  readInt8(): number;
  readVarInt(): number;
  readVarLong(): { value: bigint };
  readVarIntString(): string | null;
  readVarIntBytes(): Buffer | null;
}

interface BatchContext {
  firstOffset?: string;
  firstTimestamp?: string;
  magicByte?: number;
  isControlBatch?: boolean;
  timestampType?: number;
  maxTimestamp?: string;
}

const LOG_APPEND_TIME = 1; // kafkajs protocol/timestampTypes

/** A batch's base offset and timestamp, parsed once per batch (its context object). */
interface Base {
  offset: number | bigint;
  timestamp: number | bigint;
}
const bases = new WeakMap<object, Base>();

function parseBase(text: string | undefined): number | bigint {
  const big = BigInt(text ?? '0');
  const n = Number(big);
  return Number.isSafeInteger(n) ? n : big;
}

/** base + delta, as kafkajs' Long gives it (decimal text), in numbers while they are exact. */
function plus(base: number | bigint, delta: number | bigint): string {
  if (typeof base === 'number' && typeof delta === 'number') {
    const sum = base + delta;
    if (Number.isSafeInteger(sum)) return String(sum);
  }
  return (BigInt(base) + BigInt(delta)).toString();
}

/**
 * kafkajs' recordBatch/record/v0 decoder: the same record objects (except that a header named
 * like an Object.prototype member, `constructor` say, is read as itself: kafkajs made an array of
 * the inherited function and the value).
 */
export function decodeRecord(decoder: KafkaDecoder, batchContext: BatchContext = {}) {
  const { magicByte, isControlBatch = false, timestampType, maxTimestamp } = batchContext;
  let base = bases.get(batchContext);
  if (base === undefined) {
    base = { offset: parseBase(batchContext.firstOffset), timestamp: parseBase(batchContext.firstTimestamp) };
    bases.set(batchContext, base);
  }
  const attributes = decoder.readInt8();
  // A one-byte varlong (deltas below 64, the common case) without kafkajs' BigInt loop.
  const first = decoder.buffer[decoder.offset]!;
  let timestampDelta: number | bigint;
  if (first < 128) {
    decoder.offset++;
    timestampDelta = (first >>> 1) ^ -(first & 1);
  } else timestampDelta = decoder.readVarLong().value;
  const timestamp = timestampType === LOG_APPEND_TIME && maxTimestamp ? maxTimestamp : plus(base.timestamp, timestampDelta);
  const offset = plus(base.offset, decoder.readVarInt());
  const key = decoder.readVarIntBytes();
  const value = decoder.readVarIntBytes();
  const count = decoder.readVarInt();
  const headers: Record<string, Buffer | null | (Buffer | null)[]> = {};
  for (let i = 0; i < count; i++) {
    const name = decoder.readVarIntString()!;
    const v = decoder.readVarIntBytes();
    const prev = Object.hasOwn(headers, name) ? headers[name] : undefined;
    const next = prev === undefined ? v : Array.isArray(prev) ? prev.concat([v]) : [prev, v];
    // A header named __proto__ is an own property, as in kafkajs' object spread.
    if (name === '__proto__') Object.defineProperty(headers, name, { value: next, enumerable: true, writable: true, configurable: true });
    else headers[name] = next;
  }
  return { magicByte, attributes, timestamp, offset, key, value, headers, isControlRecord: isControlBatch, batchContext };
}

const RECORD = 'kafkajs/src/protocol/recordBatch/record/v0/index.js';
const RECORD_DECODER = 'kafkajs/src/protocol/recordBatch/record/v0/decoder.js';
const KAFKAJS_VERSION = '2.2.4';

let installed: boolean | undefined;

/**
 * Puts the lean codec in kafkajs' place (see above). True when it is in use: kafkajs 2.2.4, not
 * loaded before. PAYQ_KAFKA_RECORD_CODEC=kafkajs keeps kafkajs' own (for measuring).
 */
export function installLeanRecordCodec(): boolean {
  if (installed !== undefined) return installed;
  installed = false;
  if (process.env['PAYQ_KAFKA_RECORD_CODEC'] === 'kafkajs') return installed;
  try {
    if ((require('kafkajs/package.json') as { version: string }).version !== KAFKAJS_VERSION) return installed;
    const paths = [require.resolve(RECORD), require.resolve(RECORD_DECODER)];
    if (paths.some((p) => require.cache[p] !== undefined)) return installed;
    const exports = [encodeRecord, decodeRecord];
    paths.forEach((path, i) => {
      const m = new Module(path);
      m.filename = path;
      m.loaded = true;
      m.exports = exports[i];
      require.cache[path] = m;
    });
    installed = true;
  } catch {
    // kafkajs laid out differently: its own codec stays.
  }
  return installed;
}

installLeanRecordCodec();
