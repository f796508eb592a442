/**
 * Ids seen lately, at most `bound` of them, in generations: when the newest is full, the oldest is
 * dropped whole. (Deleting a Set's oldest entry one by one leaves holes that every later
 * `values().next()` walks over again.) Four generations keep the count between 75% and 100% of
 * the bound, so memory stays low however long a run goes on.
 */
export const RECENT_GENERATIONS = 4;

export class RecentIds {
  private readonly generations: Set<string>[] = [new Set()];

  constructor(private readonly bound: number) {}

  add(id: string): void {
    let newest = this.generations[this.generations.length - 1]!;
    if (newest.size >= this.bound / RECENT_GENERATIONS) {
      if (this.generations.length === RECENT_GENERATIONS) this.generations.shift();
      this.generations.push((newest = new Set()));
    }
    newest.add(id);
  }

  has(id: string): boolean {
    for (let i = this.generations.length - 1; i >= 0; i--) if (this.generations[i]!.has(id)) return true;
    return false;
  }

  /** Adds `id`; true when it was not there yet. */
  addNew(id: string): boolean {
    if (this.has(id)) return false;
    this.add(id);
    return true;
  }
}

/**
 * The same for many ids at a high rate, each kept as two 32-bit words in open-addressed tables of
 * their own, one a generation: 16 bytes an id, off the JS heap, where a Set of strings would hold
 * some 85 bytes an id on it (bench counts every event of a run this way, core/bench-driver.ts).
 * payq's event ids are UUIDs of random digits: the words are a UUID's first and last eight hex
 * digits as they are; any other id is hashed (two FNV-1a variants). Two different ids taken for
 * one: about once in 10¹⁸ pairs.
 *
 * The tables can live in a SharedArrayBuffer that a run's threads share (bench --procs): an id is
 * then counted once over all of them, each addNew() under a lock of the buffer's own (Atomics).
 */
export class RecentIdHashes {
  /** [lock, newest generation, the generations' sizes…]. */
  private readonly header: Int32Array;
  private readonly tables: Int32Array[] = [];
  private readonly perGeneration: number;
  private readonly mask: number;
  private readonly shared: boolean;

  /** Bytes of the buffer `bound` ids need. */
  static bytesFor(bound: number): number {
    const { slots } = RecentIdHashes.shape(bound);
    return HEADER_WORDS * 4 + RECENT_GENERATIONS * slots * 2 * 4;
  }

  private static shape(bound: number): { perGeneration: number; slots: number } {
    const perGeneration = Math.max(1, Math.ceil(bound / RECENT_GENERATIONS));
    // At most half full: short probes.
    let slots = 2;
    while (slots < perGeneration * 2) slots *= 2;
    return { perGeneration, slots };
  }

  /** `at`: a region of bytesFor(bound) bytes of a buffer the tables live in (shared with other threads). */
  constructor(bound: number, at?: { buffer: SharedArrayBuffer; byteOffset: number }) {
    const { perGeneration, slots } = RecentIdHashes.shape(bound);
    this.perGeneration = perGeneration;
    this.mask = slots - 1;
    this.shared = at !== undefined;
    const buffer = at?.buffer ?? new ArrayBuffer(RecentIdHashes.bytesFor(bound));
    const offset = at?.byteOffset ?? 0;
    this.header = new Int32Array(buffer, offset, HEADER_WORDS);
    for (let g = 0; g < RECENT_GENERATIONS; g++) this.tables.push(new Int32Array(buffer, offset + HEADER_WORDS * 4 + g * slots * 8, slots * 2));
  }

  /** Adds `id`; true when it was not there yet. */
  addNew(id: string): boolean {
    let h1 = id.length === 36 ? hexWord(id, 0) : -1;
    let h2 = h1 === -1 ? -1 : hexWord(id, 28);
    if (h2 === -1) {
      h1 = 0x811c9dc5 | 0;
      h2 = 0x9747b28c | 0;
      for (let i = 0; i < id.length; i++) {
        const c = id.charCodeAt(i);
        h1 = Math.imul(h1 ^ c, 0x01000193);
        h2 = Math.imul(h2 ^ c, 0x5bd1e995);
        h2 ^= h2 >>> 15;
      }
    }
    // A slot whose second word is 0 is empty: a 0 is kept as 1 (one more pair taken for one).
    if (h2 === 0) h2 = 1;
    if (!this.shared) return this.insert(h1, h2);
    // The lock is held for a few probes: spin a little, then nap in 50 µs steps (no notify needed).
    const { header } = this;
    for (let spins = 0; Atomics.compareExchange(header, LOCK, 0, 1) !== 0; spins++) if (spins > 64) Atomics.wait(header, LOCK, 1, 0.05);
    try {
      return this.insert(h1, h2);
    } finally {
      Atomics.store(header, LOCK, 0);
    }
  }

  private insert(h1: number, h2: number): boolean {
    const { header } = this;
    const newest = header[NEWEST]!;
    for (let k = 0; k < RECENT_GENERATIONS; k++) {
      const g = (newest - k + RECENT_GENERATIONS) % RECENT_GENERATIONS;
      if (header[SIZES + g] !== 0 && this.find(this.tables[g]!, h1, h2) < 0) return false;
    }
    let g = newest;
    if (header[SIZES + g]! >= this.perGeneration) {
      g = (g + 1) % RECENT_GENERATIONS;
      header[NEWEST] = g;
      this.tables[g]!.fill(0);
      header[SIZES + g] = 0;
    }
    const table = this.tables[g]!;
    const slot = this.find(table, h1, h2);
    table[slot] = h1;
    table[slot + 1] = h2;
    header[SIZES + g]!++;
    return true;
  }

  /** The index of the empty slot where the hash goes, or -1 when it is there. */
  private find(table: Int32Array, h1: number, h2: number): number {
    for (let i = h1 & this.mask; ; i = (i + 1) & this.mask) {
      const at = i * 2;
      const second = table[at + 1]!;
      if (second === 0) return at;
      if (second === h2 && table[at] === h1) return -1;
    }
  }
}

const LOCK = 0;
const NEWEST = 1;
const SIZES = 2;
const HEADER_WORDS = SIZES + RECENT_GENERATIONS;

/** Eight hex digits of `id` from `at` as a 32-bit word; -1 when they are not all hex digits (or are ffffffff: such an id is hashed). */
function hexWord(id: string, at: number): number {
  let word = 0;
  for (let i = at; i < at + 8; i++) {
    const c = id.charCodeAt(i);
    const digit = c >= 48 && c <= 57 ? c - 48 : c >= 97 && c <= 102 ? c - 87 : c >= 65 && c <= 70 ? c - 55 : -1;
    if (digit < 0) return -1;
    word = (word << 4) | digit;
  }
  return word;
}
