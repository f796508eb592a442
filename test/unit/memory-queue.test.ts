import { describe, expect, it } from 'vitest';
import { RedeliveryQueue } from '../../src/drivers/memory/redelivery-queue.js';
import { SEGMENT_SIZE, SegmentedLog } from '../../src/drivers/memory/segmented-log.js';

describe('SegmentedLog', () => {
  it('appends with consecutive offsets and reads them back', () => {
    const log = new SegmentedLog<string>();
    expect(log.endOffset).toBe(0);
    expect(log.get(0)).toBeUndefined();
    const n = SEGMENT_SIZE * 2 + 7;
    for (let i = 0; i < n; i++) expect(log.append(`m${i}`)).toBe(i);
    expect(log.endOffset).toBe(n);
    expect(log.startOffset).toBe(0);
    expect(log.size).toBe(n);
    for (const i of [0, 1, SEGMENT_SIZE - 1, SEGMENT_SIZE, SEGMENT_SIZE + 1, n - 1]) expect(log.get(i)).toBe(`m${i}`);
    expect(log.get(n)).toBeUndefined();
    expect(log.get(-1)).toBeUndefined();
  });

  it('trims whole segments before an offset, never the one being written', () => {
    const log = new SegmentedLog<number>();
    for (let i = 0; i < SEGMENT_SIZE * 3 + 5; i++) log.append(i);

    expect(log.trimBefore(SEGMENT_SIZE - 1)).toBe(0); // first segment still needed
    expect(log.startOffset).toBe(0);

    expect(log.trimBefore(SEGMENT_SIZE * 2 + 3)).toBe(SEGMENT_SIZE * 2);
    expect(log.startOffset).toBe(SEGMENT_SIZE * 2);
    expect(log.get(SEGMENT_SIZE * 2 - 1)).toBeUndefined();
    expect(log.get(SEGMENT_SIZE * 2)).toBe(SEGMENT_SIZE * 2);

    // Past the end: everything but the segment being written goes.
    log.trimBefore(Number.MAX_SAFE_INTEGER);
    expect(log.startOffset).toBe(SEGMENT_SIZE * 3);
    expect(log.get(SEGMENT_SIZE * 3 + 4)).toBe(SEGMENT_SIZE * 3 + 4);
    expect(log.append(-1)).toBe(SEGMENT_SIZE * 3 + 5);
    expect(log.get(SEGMENT_SIZE * 3 + 5)).toBe(-1);
  });

  it('keeps working across many trims (index compaction) with bounded retention', () => {
    const log = new SegmentedLog<number>();
    let read = 0;
    let wrong = 0;
    let maxRetained = 0;
    for (let i = 0; i < SEGMENT_SIZE * 300; i++) {
      log.append(i);
      if (i % 1000 === 999) {
        // a reader that keeps up: every record it reads is the one written at that offset
        for (; read <= i; read++) if (log.get(read) !== read) wrong++;
        log.trimBefore(read);
        maxRetained = Math.max(maxRetained, log.size);
      }
    }
    expect(wrong).toBe(0);
    expect(maxRetained).toBeLessThanOrEqual(SEGMENT_SIZE * 2);
    expect(log.endOffset).toBe(SEGMENT_SIZE * 300);
    expect(log.get(log.endOffset - 1)).toBe(SEGMENT_SIZE * 300 - 1);
  });
});

describe('RedeliveryQueue', () => {
  const item = (offset: number) => ({ offset });

  it('pops in offset order whatever the push order', () => {
    const q = new RedeliveryQueue<{ offset: number }>();
    expect(q.pop()).toBeUndefined();
    const offsets = [50, 3, 99, 3, 0, 42, 7, 1000, 8, 2];
    for (const o of offsets) q.push(item(o));
    expect(q.size).toBe(offsets.length);
    expect(q.peek()?.offset).toBe(0);
    const out: number[] = [];
    while (q.size > 0) out.push(q.pop()!.offset);
    expect(out).toEqual([...offsets].sort((a, b) => a - b));
    expect(q.pop()).toBeUndefined();
  });

  it('stays ordered with pushes and pops interleaved (randomised, seeded)', () => {
    let seed = 12345;
    const rand = () => (seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31;
    const q = new RedeliveryQueue<{ offset: number }>();
    const model: number[] = [];
    for (let step = 0; step < 5000; step++) {
      if (rand() < 0.6 || model.length === 0) {
        const o = Math.floor(rand() * 1000);
        q.push(item(o));
        model.push(o);
        model.sort((a, b) => a - b);
      } else {
        expect(q.pop()!.offset).toBe(model.shift());
      }
      expect(q.size).toBe(model.length);
    }
  });
});
