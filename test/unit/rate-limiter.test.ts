import { describe, expect, it } from 'vitest';
import { RateLimiter } from '../../src/core/rate-limiter.js';

describe('RateLimiter', () => {
  it('hands out intended times on a fixed schedule, whatever happens meanwhile', () => {
    const r = new RateLimiter(1000, 5_000_000);
    expect(r.takeUs()).toBe(5_000_000);
    expect(r.takeUs()).toBe(5_001_000);
    expect(r.peekUs()).toBe(5_002_000);
    for (let i = 0; i < 998; i++) r.takeUs();
    expect(r.peekUs()).toBe(6_000_000);
    expect(r.taken).toBe(1000);
  });

  it('rejects a non-positive rate', () => {
    expect(() => new RateLimiter(0, 0)).toThrow(RangeError);
  });
});
