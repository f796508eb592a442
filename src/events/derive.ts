/**
 * Deterministic choices made while handling an event: the ids of the events it emits and the
 * random draws (failure, outcome, processing time) of each attempt. They depend only on the
 * input event's id, the attempt and a seed, so a worker that crashes and handles the same event
 * again emits the same ids (trace counts them as duplicates, not as new events) and makes the
 * same decisions.
 */
import { Prng } from './prng.js';

/** FNV-1a over the string, folded to 53 bits: a seed for Prng. */
export function hashSeed(text: string, salt = 0): number {
  let h1 = 0x811c9dc5 ^ salt;
  let h2 = 0x01000193 ^ (salt >>> 1);
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    h1 = Math.imul(h1 ^ c, 0x01000193);
    h2 = Math.imul(h2 ^ c, 0x5bd1e995);
  }
  return ((h1 >>> 0) * 0x200000 + ((h2 >>> 0) & 0x1fffff)) % Number.MAX_SAFE_INTEGER;
}

/** The random stream for one attempt at handling `eventId` in `stage`. */
export function attemptPrng(eventId: string, stage: string, attempt: number, seed: number): Prng {
  return new Prng(hashSeed(`${stage}\u0000${eventId}\u0000${attempt}`, seed));
}

/** The id of the `index`-th event emitted when `stage` handles `eventId`. */
export function childEventId(eventId: string, stage: string, index: number): string {
  return new Prng(hashSeed(`${stage}\u0000${eventId}\u0000child\u0000${index}`)).uuid();
}
