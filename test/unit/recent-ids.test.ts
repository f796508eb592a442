/** The bounded id memories of trace and bench: each id once, the oldest generation forgotten whole. */
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { Worker } from 'node:worker_threads';
import { describe, expect, it } from 'vitest';
import { RecentIdHashes, RecentIds } from '../../src/core/recent-ids.js';
import { Prng } from '../../src/events/prng.js';

describe.each([
  ['RecentIds', (bound: number) => new RecentIds(bound)],
  ['RecentIdHashes', (bound: number) => new RecentIdHashes(bound)],
  ['RecentIdHashes in a SharedArrayBuffer', (bound: number) => new RecentIdHashes(bound, { buffer: new SharedArrayBuffer(RecentIdHashes.bytesFor(bound) + 8), byteOffset: 8 })],
])('%s', (_, make) => {
  it('takes each id once, UUIDs and other ids alike', () => {
    const ids = make(1_000);
    const prng = new Prng(7);
    const some = [...Array.from({ length: 300 }, () => prng.uuid()), 'order-1', 'order-2', '', 'ffffffff-0000-4000-8000-0000ffffffff', 'ÄÖÜ'];
    expect(some.map((id) => ids.addNew(id))).toEqual(some.map(() => true));
    expect(some.map((id) => ids.addNew(id))).toEqual(some.map(() => false));
  });

  it('keeps at least three quarters of its bound, and forgets the oldest beyond it', () => {
    const ids = make(400);
    const prng = new Prng(8);
    const first = Array.from({ length: 100 }, () => prng.uuid());
    for (const id of first) ids.addNew(id);
    // 300 more: the first 100 are still within the bound.
    for (let i = 0; i < 300; i++) ids.addNew(prng.uuid());
    expect(first.filter((id) => ids.addNew(id))).toEqual([]);
    // Another 400: the first generation is gone.
    for (let i = 0; i < 400; i++) ids.addNew(prng.uuid());
    expect(first.filter((id) => ids.addNew(id)).length).toBe(100);
  });
});

describe('RecentIdHashes shared by threads (bench --procs)', () => {
  it('counts an id once over every thread, however the threads interleave', async () => {
    // Four threads add overlapping id sets at once, each into the one shared buffer; the new ones
    // they report must add up to the union, each id new in exactly one thread.
    const bound = 200_000;
    const buffer = new SharedArrayBuffer(RecentIdHashes.bytesFor(bound));
    const prng = new Prng(11);
    const pool = Array.from({ length: 40_000 }, () => prng.uuid());
    const sets = [0, 1, 2, 3].map((t) => pool.filter((_, i) => i % 4 === t || i % 3 === 0));
    // The threads run the built module (npm test builds first); vitest does not transform a worker's code.
    const moduleUrl = pathToFileURL(path.resolve('dist/core/recent-ids.js')).href;
    const code = `
      const { parentPort, workerData } = require('node:worker_threads');
      import(workerData.moduleUrl).then(({ RecentIdHashes }) => {
        const ids = new RecentIdHashes(workerData.bound, { buffer: workerData.buffer, byteOffset: 0 });
        const fresh = [];
        for (const id of workerData.ids) if (ids.addNew(id)) fresh.push(id);
        parentPort.postMessage(fresh);
      });`;
    const fresh = await Promise.all(
      sets.map(
        (ids) =>
          new Promise<string[]>((resolve, reject) => {
            const w = new Worker(code, { eval: true, workerData: { moduleUrl, bound, buffer, ids } });
            w.once('message', (m: string[]) => {
              resolve(m);
              void w.terminate();
            });
            w.once('error', reject);
          }),
      ),
    );
    const all = fresh.flat();
    expect(all.length).toBe(new Set(all).size);
    expect(new Set(all)).toEqual(new Set(sets.flat()));
    // And the parent, on the same buffer, finds every one of them there.
    const mine = new RecentIdHashes(bound, { buffer, byteOffset: 0 });
    expect(pool.filter((id) => mine.addNew(id))).toEqual([]);
  });
});
