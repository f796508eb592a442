/** The bounded id memories of trace and bench: each id once, the oldest generation forgotten whole. */
import { describe, expect, it } from 'vitest';
import { RecentIdHashes, RecentIds } from '../../src/core/recent-ids.js';
import { Prng } from '../../src/events/prng.js';

describe.each([
  ['RecentIds', (bound: number) => new RecentIds(bound)],
  ['RecentIdHashes', (bound: number) => new RecentIdHashes(bound)],
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
