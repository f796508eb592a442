import { describe, expect, it } from 'vitest';
import type { Clock } from '../../src/core/clock.js';
import { PacedSender } from '../../src/core/paced-sender.js';

/** A clock that moves only when slept on: every sleep is recorded and jumps time forward. */
function manualClock(startUs: number): Clock & { sleeps: number[] } {
  let nowUs = startUs;
  const sleeps: number[] = [];
  return {
    sleeps,
    nowUs: () => nowUs,
    sleep: async (ms) => {
      sleeps.push(ms);
      nowUs += ms * 1000;
    },
  };
}

describe('PacedSender', () => {
  it('hands out send slots on the schedule started by start(), and says how many are due', async () => {
    const clock = manualClock(1_000_000);
    const sender = new PacedSender({ clock, rate: 100, maxInFlight: 1 });
    sender.start(1_000_000);
    expect(sender.paced).toBe(true);
    expect(sender.due(1_000_000)).toBe(1);
    expect(sender.due(1_035_000)).toBe(4);
    expect(sender.take(3)).toEqual([1_000_000, 1_010_000, 1_020_000]);
    expect(sender.due(1_025_000)).toBe(0);
    await sender.untilNext(1_025_000);
    expect(clock.sleeps).toEqual([5]);
    // A started schedule stays as it is.
    sender.start(9_000_000);
    expect(sender.take(1)).toEqual([1_030_000]);
  });

  it('without start(), the schedule begins with the first slot taken; takeAll sleeps until the last slot is due', async () => {
    const clock = manualClock(2_000_000);
    const sender = new PacedSender({ clock, rate: 1000, maxInFlight: 1 });
    await sender.takeAll(5);
    // Slots at 0, 1, 2, 3, 4 ms: the batch goes when the fifth is due.
    expect(clock.sleeps).toEqual([4]);
    await sender.takeAll(1);
    expect(clock.sleeps).toEqual([4, 1]);
  });

  it('has no slots when it is not paced', () => {
    const sender = new PacedSender({ clock: manualClock(0), rate: undefined, maxInFlight: 1 });
    expect(sender.paced).toBe(false);
    expect(() => sender.take(1)).toThrow(RangeError);
  });

  it('keeps at most maxInFlight batches in flight and settles them all', async () => {
    const sender = new PacedSender({ clock: manualClock(0), rate: undefined, maxInFlight: 2 });
    const release: (() => void)[] = [];
    const done: number[] = [];
    const batch = (i: number) =>
      new Promise<void>((resolve) => release.push(resolve)).then(() => {
        done.push(i);
      });
    sender.track(batch(1));
    expect(sender.full).toBe(false);
    sender.track(batch(2));
    expect(sender.full).toBe(true);
    const room = sender.room();
    release[1]!();
    await room;
    expect(sender.full).toBe(false);
    expect(done).toEqual([2]);
    sender.track(batch(3));
    const settled = sender.settle().then(() => 'settled');
    release[0]!();
    release[2]!();
    expect(await settled).toBe('settled');
    expect(done.sort()).toEqual([1, 2, 3]);
  });
});
