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
 */
export class RecentIdHashes {
  private readonly tables: Int32Array[] = [];
  private readonly sizes: number[] = [];
  private readonly perGeneration: number;
  private readonly mask: number;
  private newest = 0;

  constructor(bound: number) {
    this.perGeneration = Math.max(1, Math.ceil(bound / RECENT_GENERATIONS));
    // At most half full: short probes.
    let slots = 2;
    while (slots < this.perGeneration * 2) slots *= 2;
    this.mask = slots - 1;
    for (let g = 0; g < RECENT_GENERATIONS; g++) {
      this.tables.push(new Int32Array(slots * 2));
      this.sizes.push(0);
    }
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
    for (let k = 0; k < RECENT_GENERATIONS; k++) {
      const g = (this.newest - k + RECENT_GENERATIONS) % RECENT_GENERATIONS;
      if (this.sizes[g] !== 0 && this.find(this.tables[g]!, h1, h2) < 0) return false;
    }
    if (this.sizes[this.newest]! >= this.perGeneration) {
      this.newest = (this.newest + 1) % RECENT_GENERATIONS;
      this.tables[this.newest]!.fill(0);
      this.sizes[this.newest] = 0;
    }
    const table = this.tables[this.newest]!;
    const slot = this.find(table, h1, h2);
    table[slot] = h1;
    table[slot + 1] = h2;
    this.sizes[this.newest]!++;
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
