import { afterEach, describe, expect, it, vi } from 'vitest';
import { createProgress, fitLine, MIN_COLUMNS, progressWidth, RENDERS_PER_S } from '../../src/cli/progress.js';

describe('progress width and line', () => {
  it.each([
    [0, 80],
    [undefined, 80],
    [Number.NaN, 80],
    [-3, 80],
    [Infinity, 80],
    [1, undefined],
    [MIN_COLUMNS - 1, undefined],
    [MIN_COLUMNS, MIN_COLUMNS],
    [80, 80],
    [132.7, 132],
    [100_000, 200],
  ])('%s columns draw in %s', (columns, width) => {
    expect(progressWidth(columns)).toBe(width);
  });

  it('cuts the text to one line shorter than the width, whatever it holds', () => {
    expect(fitLine('short', 80)).toBe('short');
    const long = fitLine('x'.repeat(500), 40);
    expect([...long]).toHaveLength(39);
    expect(long.endsWith('…')).toBe(true);
    expect(fitLine('a\nb\r\nc', 80)).toBe('a b c');
    expect([...fitLine('·→'.repeat(100), 20)]).toHaveLength(19);
  });
});

describe('createProgress', () => {
  afterEach(() => vi.useRealTimers());

  it.each([0, 1, 5, 80, undefined, 1_000_000])('on %s columns: redraws on the timer only, one bounded line each', (columns) => {
    vi.useFakeTimers();
    const writes: string[] = [];
    const stream = { columns, write: (t: string) => writes.push(t) };
    const p = createProgress(stream, 'connecting');
    // The work reports a million times a second: that must not draw anything by itself.
    for (let i = 0; i < 100_000; i++) p.update(`${i} acked · ${'x'.repeat(300)}`);
    vi.advanceTimersByTime(10_000);
    p.stop();
    p.stop();
    expect(writes.length).toBeLessThanOrEqual(10 * RENDERS_PER_S + 3);
    const bytes = writes.reduce((n, w) => n + Buffer.byteLength(w), 0);
    expect(bytes).toBeLessThan(10 * RENDERS_PER_S * 700);
    for (const w of writes) expect(w).not.toMatch(/\n/);
    const width = progressWidth(columns);
    if (width === undefined) expect(writes).toEqual([]);
    else for (const w of writes) expect([...w.replace(/^\r/, '').replace(/\x1b\[K$/, '')].length).toBeLessThan(width);
  });
});
