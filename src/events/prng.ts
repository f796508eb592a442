/**
 * The seeded PRNG behind `--seed`: sfc32 seeded through splitmix32. Small, fast, and the same
 * sequence on every machine (only 32-bit integer ops and one division), unlike Math.random.
 */
/** The two lowercase hex digits of each byte value, as ASCII codes: HEX_CODES[2b], HEX_CODES[2b+1]. */
const HEX_CODES = new Uint8Array(512);
for (let i = 0; i < 256; i++) {
  const text = i.toString(16).padStart(2, '0');
  HEX_CODES[2 * i] = text.charCodeAt(0);
  HEX_CODES[2 * i + 1] = text.charCodeAt(1);
}
/** Where hex and uuid write their digits; one flat string is made of it (no concatenations). */
const scratch = Buffer.alloc(64);

/** Writes the 4 bytes of x (least significant first) as 8 hex digits at `at`; returns the next position. */
function put32LE(x: number, at: number): number {
  for (let shift = 0; shift < 32; shift += 8) {
    const b = (x >>> shift) & 0xff;
    scratch[at++] = HEX_CODES[2 * b]!;
    scratch[at++] = HEX_CODES[2 * b + 1]!;
  }
  return at;
}

/** Writes byte b as 2 hex digits at `at`; returns the next position. */
function put8(b: number, at: number): number {
  scratch[at] = HEX_CODES[2 * b]!;
  scratch[at + 1] = HEX_CODES[2 * b + 1]!;
  return at + 2;
}

function splitmix32(state: number): [number, number] {
  state = (state + 0x9e3779b9) | 0;
  let z = state;
  z = Math.imul(z ^ (z >>> 16), 0x85ebca6b);
  z = Math.imul(z ^ (z >>> 13), 0xc2b2ae35);
  return [state, (z ^ (z >>> 16)) >>> 0];
}

export class Prng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spareNormal: number | undefined;

  constructor(seed: number) {
    if (!Number.isSafeInteger(seed) || seed < 0) throw new RangeError(`seed must be a non-negative integer, got ${seed}`);
    // Fold all 53 bits of the seed into the state.
    let s = (seed >>> 0) ^ Math.floor(seed / 0x100000000);
    let out: number;
    [s, out] = splitmix32(s);
    this.a = out;
    [s, out] = splitmix32(s);
    this.b = out;
    [s, out] = splitmix32(s);
    this.c = out;
    [s, out] = splitmix32(s ^ Math.floor(seed / 0x100000000));
    this.d = out;
    for (let i = 0; i < 12; i++) this.uint32();
  }

  /** A uniform 32-bit unsigned integer. */
  uint32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  next(): number {
    return this.uint32() / 4294967296;
  }

  /** Uniform integer in [0, n). */
  int(n: number): number {
    return Math.floor(this.next() * n);
  }

  /** Standard normal (Box–Muller, both values used). */
  normal(): number {
    if (this.spareNormal !== undefined) {
      const v = this.spareNormal;
      this.spareNormal = undefined;
      return v;
    }
    let u = this.next();
    while (u === 0) u = this.next();
    const v = this.next();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spareNormal = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** `bytes` random bytes as lowercase hex. */
  hex(bytes: number): string {
    if (bytes > 32) {
      let s = '';
      for (let left = bytes; left > 0; left -= 32) s += this.hex(Math.min(32, left));
      return s;
    }
    let at = 0;
    for (let i = 0; i < bytes; i += 4) at = put32LE(this.uint32(), at);
    return scratch.toString('latin1', 0, bytes * 2);
  }

  /** A version-4-shaped UUID drawn from this stream (deterministic, not crypto-random). */
  uuid(): string {
    const a = this.uint32();
    const b = this.uint32();
    const c = this.uint32();
    const d = this.uint32();
    let at = put8(a >>> 24, 0);
    at = put8((a >>> 16) & 0xff, at);
    at = put8((a >>> 8) & 0xff, at);
    at = put8(a & 0xff, at);
    scratch[at++] = 0x2d; // '-'
    at = put8(b >>> 24, at);
    at = put8((b >>> 16) & 0xff, at);
    scratch[at++] = 0x2d;
    at = put8(((b >>> 8) & 0x0f) | 0x40, at);
    at = put8(b & 0xff, at);
    scratch[at++] = 0x2d;
    at = put8(((c >>> 24) & 0x3f) | 0x80, at);
    at = put8((c >>> 16) & 0xff, at);
    scratch[at++] = 0x2d;
    at = put8((c >>> 8) & 0xff, at);
    at = put8(c & 0xff, at);
    at = put8(d >>> 24, at);
    at = put8((d >>> 16) & 0xff, at);
    at = put8((d >>> 8) & 0xff, at);
    at = put8(d & 0xff, at);
    return scratch.toString('latin1', 0, at);
  }

  /** Picks an index from cumulative weights (last entry = total). */
  pickCumulative(cumulative: readonly number[]): number {
    const x = this.next() * cumulative[cumulative.length - 1]!;
    for (let i = 0; i < cumulative.length; i++) if (x < cumulative[i]!) return i;
    return cumulative.length - 1;
  }
}
