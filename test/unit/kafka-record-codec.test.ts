import { createRequire } from 'node:module';
import { describe, expect, it } from 'vitest';

// kafkajs' own record codec, loaded before payq's module (which then leaves the cache alone).
const require = createRequire(import.meta.url);
const kafkajsEncode = require('kafkajs/src/protocol/recordBatch/record/v0/index.js') as (r: object) => { buffer: Buffer };
const kafkajsDecode = require('kafkajs/src/protocol/recordBatch/record/v0/decoder.js') as (d: object, ctx: object) => unknown;
const Decoder = require('kafkajs/src/protocol/decoder.js') as new (b: Buffer) => object;
const { encodeRecord, decodeRecord } = await import('../../src/drivers/kafka/record-codec.js');

/** A deterministic stream of records of every shape kafkajs takes. */
function* records(n: number) {
  let s = 7;
  const rnd = (m: number) => (s = (s * 1103515245 + 12345) % 2 ** 31) % m;
  const text = (len: number) => Array.from({ length: len }, () => 'aZ09-_;=%é€😀'[rnd(13)]).join('');
  for (let i = 0; i < n; i++) {
    const headers: Record<string, string | Buffer | (string | Buffer)[]> = {};
    const count = rnd(16);
    for (let h = 0; h < count; h++) {
      const v = rnd(4) === 0 ? Buffer.from(text(rnd(300))) : text(rnd(90));
      headers[`h${h}-${text(rnd(5))}`] = rnd(8) === 0 ? [v, text(3)] : v;
    }
    const key = [null, undefined, text(rnd(40)), Buffer.from(text(rnd(20)))][rnd(4)];
    const value = [null, text(rnd(2000)), Buffer.from(text(rnd(9000)))][rnd(3)];
    yield { offsetDelta: [0, 1, 63, 64, 8191, 8192, 100_000, 2 ** 21][rnd(8)], timestampDelta: [0, 5, 64, 1_000_000, 2 ** 40][rnd(5)], key, value, headers };
  }
}

describe('payq Kafka record codec', () => {
  it('encodes every record byte for byte as kafkajs 2.2.4 does', () => {
    for (const r of records(400)) expect(encodeRecord(r).buffer.equals(kafkajsEncode(r).buffer)).toBe(true);
  });

  it('decodes every record into what kafkajs 2.2.4 gives', () => {
    const contexts = [
      { firstOffset: '0', firstTimestamp: '1764770000000', magicByte: 2, isControlBatch: false, timestampType: 0, maxTimestamp: '1764770000999' },
      { firstOffset: '9007199254740990', firstTimestamp: '9007199254740990', magicByte: 2, timestampType: 0, maxTimestamp: '1' },
      { firstOffset: '42', firstTimestamp: '1764770000000', magicByte: 2, isControlBatch: true, timestampType: 1, maxTimestamp: '1764770000999' },
    ];
    let i = 0;
    /** Buffers as hex, so that the comparison is quick. */
    const plain = (rec: unknown): string =>
      JSON.stringify(rec, (k, v: unknown) => (k === 'batchContext' ? undefined : v && typeof v === 'object' && (v as { type?: string }).type === 'Buffer' ? Buffer.from((v as { data: number[] }).data).toString('hex') : v));
    for (const r of records(400)) {
      // kafkajs cannot encode a null header value; the records above have none.
      const bytes = kafkajsEncode(r).buffer;
      const ctx = contexts[i++ % contexts.length]!;
      const framed = (b: Buffer) => {
        // The batch decoder hands the record decoder the bytes after the record's length.
        const d = new Decoder(b) as { readVarInt(): number; offset: number };
        d.readVarInt();
        return d;
      };
      const ours = decodeRecord(framed(bytes) as never, ctx);
      const theirs = kafkajsDecode(framed(bytes), ctx) as typeof ours;
      expect(ours.batchContext).toBe(theirs.batchContext);
      expect(plain(ours)).toBe(plain(theirs));
    }
  });

  it('reads a repeated header as kafkajs does: every value, in order', () => {
    const bytes = kafkajsEncode({ key: 'k', value: 'v', headers: { a: ['1', '2', '3'], b: 'x' } }).buffer;
    const d = new Decoder(bytes) as { readVarInt(): number };
    d.readVarInt();
    const got = decodeRecord(d as never, { firstOffset: '0', firstTimestamp: '0' }) as { headers: Record<string, unknown> };
    expect(got.headers).toEqual({ a: [Buffer.from('1'), Buffer.from('2'), Buffer.from('3')], b: Buffer.from('x') });
  });
});
