import { describe, expect, it } from 'vitest';
import { PartitionOffsets, type Slot } from '../../src/drivers/kafka/partition-offsets.js';

/** Receives offsets [from, to) and returns their slots (none may be skipped). */
function receiveAll(p: PartitionOffsets, from: number, to: number): Slot[] {
  const slots: Slot[] = [];
  for (let o = from; o < to; o++) {
    const r = p.receive(BigInt(o));
    if (r.skip) throw new Error(`offset ${o} unexpectedly skipped`);
    slots.push(r.slot);
  }
  return slots;
}

describe('kafka partition offsets (ack → commit bookkeeping)', () => {
  it('commits only the contiguous acked prefix, one past its end', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 10, 15);
    p.ack(s[0]!);
    p.ack(s[1]!);
    p.ack(s[3]!); // beyond the gap at 12
    expect(p.commitPoint()).toBe(12n);
    p.committed(12n);
    expect(p.commitPoint()).toBeUndefined(); // nothing new
    p.ack(s[2]!);
    expect(p.commitPoint()).toBe(14n); // 12, 13 now contiguous; 14 still open
    p.ack(s[4]!);
    expect(p.commitPoint()).toBe(15n);
  });

  it('nack: seeks back to the lowest nacked offset; acked ones after it are skipped when re-fetched', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 0, 6);
    p.ack(s[0]!);
    p.nack(s[4]!);
    p.ack(s[3]!);
    p.nack(s[2]!);
    p.ack(s[5]!);
    // s[1] left open
    expect(p.takeSeek()).toBe(2n);
    expect(p.takeSeek()).toBeUndefined();
    expect(p.commitPoint()).toBe(1n); // 0 acked, 1 open

    // Re-fetched from 2: 2 and 4 come again (flagged), 3 and 5 were acked → skipped.
    const again = [2, 3, 4, 5].map((o) => p.receive(BigInt(o)));
    expect(again.map((r) => (r.skip ? 'skip' : r.redelivered ? 'redelivered' : 'new'))).toEqual(['redelivered', 'skip', 'redelivered', 'skip']);
    const r2 = again[0]!;
    const r4 = again[2]!;
    if (r2.skip || r4.skip) throw new Error('unreachable');
    p.ack(s[1]!);
    p.ack(r2.slot);
    expect(p.commitPoint()).toBe(4n);
    p.ack(r4.slot);
    expect(p.commitPoint()).toBe(6n);
  });

  it('a settle is counted once; nack after ack is ignored', () => {
    const p = new PartitionOffsets();
    const [a] = receiveAll(p, 0, 1);
    expect(p.ack(a!)).toBe(true);
    expect(p.ack(a!)).toBe(false);
    expect(p.nack(a!)).toBe(false);
    expect(p.hasPendingSeek()).toBe(false);
  });

  it('deliveries still out at a seek-back are not handed out twice; their late settles count', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 0, 4);
    p.nack(s[0]!);
    expect(p.takeSeek()).toBe(0n); // s[1..3] are still out (open)
    p.ack(s[2]!); // settled before being fetched again
    const again = [0, 1, 2, 3].map((o) => p.receive(BigInt(o)));
    // 0: nacked → delivered again; 1, 3: re-attached to the delivery still out; 2: acked → skipped.
    expect(again.map((r) => r.skip)).toEqual([false, true, true, true]);
    const r0 = again[0]!;
    if (r0.skip) throw new Error('unreachable');
    expect(r0.redelivered).toBe(true);
    p.ack(r0.slot);
    p.ack(s[1]!);
    expect(p.commitPoint()).toBe(3n); // 3 still out
    p.nack(s[3]!); // re-attached, so a nack seeks again
    expect(p.takeSeek()).toBe(3n);
  });

  it('a nack of a delivery not yet fetched again needs no seek: it will be fetched anyway', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 0, 2);
    p.nack(s[0]!);
    p.takeSeek();
    p.nack(s[1]!); // detached, not re-fetched yet
    expect(p.hasPendingSeek()).toBe(false);
    const again = [0, 1].map((o) => p.receive(BigInt(o)));
    expect(again.map((r) => r.skip)).toEqual([false, false]);
  });

  it('reset (rebalance) forgets the window and pending seeks; settled and outstanding work is remembered', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 0, 4);
    p.ack(s[0]!);
    p.ack(s[2]!);
    p.nack(s[1]!);
    p.reset(); // s[3] is still out
    expect(p.hasPendingSeek()).toBe(false);
    expect(p.commitPoint()).toBeUndefined();
    // kafkajs restarts from the broker's committed offset (0 here).
    const again = [0, 1, 2, 3].map((o) => p.receive(BigInt(o)));
    expect(again.map((r) => r.skip)).toEqual([true, false, true, true]);
    const r1 = again[1]!;
    if (r1.skip) throw new Error('unreachable');
    expect(r1.redelivered).toBe(true);
    p.ack(r1.slot);
    p.ack(s[3]!);
    expect(p.commitPoint()).toBe(4n);
  });

  it('a rebalance after a commit it refused: what was acked is skipped when fetched again, and committed anew', () => {
    const p = new PartitionOffsets();
    for (const slot of receiveAll(p, 0, 4)) p.ack(slot);
    expect(p.commitPoint()).toBe(4n);
    // The commit of 4 was refused (REBALANCE_IN_PROGRESS): the broker still has nothing for this partition.
    p.reset();
    const again = [0, 1, 2, 3, 4, 5].map((o) => p.receive(BigInt(o)));
    expect(again.map((r) => r.skip)).toEqual([true, true, true, true, false, false]);
    expect(p.commitPoint()).toBe(4n);
    for (const r of again.slice(4)) if (!r.skip) p.ack(r.slot);
    expect(p.commitPoint()).toBe(6n);
  });

  it('never commits past a nack even if the position moves back without a seek of ours', () => {
    const p = new PartitionOffsets();
    const s = receiveAll(p, 0, 4);
    p.nack(s[1]!);
    p.ack(s[0]!);
    p.ack(s[2]!);
    p.ack(s[3]!);
    // kafkajs hands out from 1 again before our seek was taken: the window restarts at 1.
    const r1 = p.receive(1n);
    expect(r1.skip).toBe(false);
    expect(p.hasPendingSeek()).toBe(false); // the nacked message is being fetched again anyway
    expect(p.commitPoint()).toBe(1n);
    expect([2n, 3n].map((o) => p.receive(o).skip)).toEqual([true, true]);
    // Below the contiguous acked prefix: skipped.
    expect(p.receive(0n).skip).toBe(true);
  });

  it('commits past gaps in offsets (compaction, transaction markers)', () => {
    const p = new PartitionOffsets();
    const r = [5, 9, 20].map((o) => p.receive(BigInt(o)));
    for (const x of r) if (!x.skip) p.ack(x.slot);
    expect(p.commitPoint()).toBe(21n);
  });

  it('stays linear for long runs (window compaction)', () => {
    const p = new PartitionOffsets();
    for (let o = 0; o < 50_000; o++) {
      const r = p.receive(BigInt(o));
      if (!r.skip) p.ack(r.slot);
      if (o % 1000 === 999) expect(p.commitPoint()).toBe(BigInt(o + 1));
    }
    expect(p.openCount()).toBe(0);
  });
});
