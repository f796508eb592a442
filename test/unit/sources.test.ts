import { Readable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { ndjsonSource } from '../../src/core/sources.js';

/** The input cut into chunks of `size` bytes, as a pipe may deliver it. */
function chunked(bytes: Buffer, size: number): Readable {
  const chunks: Buffer[] = [];
  for (let i = 0; i < bytes.length; i += size) chunks.push(bytes.subarray(i, i + size));
  return Readable.from(chunks);
}

async function readAll(bytes: Buffer, size: number, extra: { skipLines?: number; maxEvents?: number } = {}) {
  const source = ndjsonSource({ file: '-', stdin: chunked(bytes, size), typeField: 'event', seed: 1, ...extra });
  const bodies: string[] = [];
  for (let chunk = await source.pull(2); chunk.length > 0; chunk = await source.pull(2)) bodies.push(...chunk.map((e) => e.body));
  return { bodies, lastLine: source.lastLine, failure: source.failure };
}

const text = Buffer.from('\ufeff{"event":"a"}\r\n\n  {"event":"b","x":"é"}  \n{"event":"c"}');

describe('ndjsonSource line splitting', () => {
  it.each([1, 2, 3, 7, 64, 4096])('gives the same events and line numbers in chunks of %i bytes', async (size) => {
    const r = await readAll(text, size);
    expect(r.bodies).toEqual(['{"event":"a"}', '{"event":"b","x":"é"}', '{"event":"c"}']);
    expect(r.lastLine).toBe(4);
    expect(r.failure).toBeUndefined();
  });

  it.each([1, 5, 100_000])('a too-long line is one bad line; with --skip-lines past it, the next lines count right (chunks of %i)', async (size) => {
    const long = Buffer.concat([Buffer.from('{"event":"a"}\n{"event":"x","pad":"'), Buffer.alloc(1_200_000, 0x61), Buffer.from('"}\n{"event":"b"}\n{"event":"c"}\n')]);
    const bad = await readAll(long, size);
    expect(bad.bodies).toEqual(['{"event":"a"}']);
    expect(bad.failure?.line).toBe(2);
    expect(bad.failure?.message).toMatch(/^stdin:2: the line is longer than 1 MiB/);
    const resumed = await readAll(long, size, { skipLines: 2, maxEvents: 1 });
    expect(resumed.bodies).toEqual(['{"event":"b"}']);
    expect(resumed.lastLine).toBe(3);
  });
});
