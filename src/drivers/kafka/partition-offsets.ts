/**
 * Per-partition bookkeeping that turns individual acks and nacks into Kafka's one committed
 * offset per partition. Kafka can only remember "everything before offset N is done", so:
 *
 * - the commit point is the first handed-out message that is not acked yet (or one past the last
 *   one when all are): acks beyond a gap wait for the gap;
 * - a nack can only be honoured by seeking the partition back to the lowest nacked offset, which
 *   also re-fetches everything after it; messages that were already acked are remembered and
 *   skipped when they come round again, and messages whose delivery is still out (handed to the
 *   handler, not settled yet) are re-attached to that delivery instead of being handed out twice,
 *   so only nacked messages are delivered again.
 *
 * Pure bookkeeping, no kafkajs: unit-tested on its own.
 */

export type SlotState = 'open' | 'acked' | 'nacked';

/** One handed-out (or skipped) message. Deliveries keep a reference to settle it later. */
export interface Slot {
  readonly offset: bigint;
  state: SlotState;
  /** Dropped from the window by a seek-back or a rebalance; its delivery is stale. */
  detached: boolean;
}

export type Receipt =
  | { skip: true }
  | { skip: false; slot: Slot; redelivered: boolean };

export class PartitionOffsets {
  /** Slots since the commit point, in fetch order (offsets increase). */
  private window: Slot[] = [];
  private head = 0;
  /** The live slot per offset in the window. */
  private readonly live = new Map<bigint, Slot>();
  /** Acked offsets at or beyond a seek-back point: skip them when they are fetched again. */
  private readonly ackedAhead = new Set<bigint>();
  /** Detached slots whose delivery is still out: re-attached when their offset is fetched again. */
  private readonly staleOpen = new Map<bigint, Slot>();
  /** Highest offset ever handed out by this consumer: anything at or below it is a redelivery. */
  private highestHandedOut = -1n;
  /** One past the last slot popped off the window (acked and contiguous). */
  private contiguousEnd: bigint | undefined;
  private lastCommitted: bigint | undefined;
  private pendingSeek: bigint | undefined;

  /** Registers a fetched message. `skip` means it was acked before a seek-back: don't hand it out. */
  receive(offset: bigint): Receipt {
    // The window is in offset order. An offset at or below its tail means the fetch position
    // moved back (our seek, or kafkajs on its own): the window restarts here, as after a seek.
    const tail = this.window.length > this.head ? this.window[this.window.length - 1]!.offset : undefined;
    if (tail !== undefined && offset <= tail) this.truncateFrom(offset);
    // Below the contiguous acked prefix: done already.
    if (this.contiguousEnd !== undefined && offset < this.contiguousEnd) return { skip: true };
    const outstanding = this.staleOpen.get(offset);
    if (outstanding) {
      this.staleOpen.delete(offset);
      outstanding.detached = false;
      this.append(outstanding);
      return { skip: true };
    }
    if (this.ackedAhead.delete(offset)) {
      this.append({ offset, state: 'acked', detached: false });
      return { skip: true };
    }
    const slot: Slot = { offset, state: 'open', detached: false };
    this.append(slot);
    const redelivered = offset <= this.highestHandedOut;
    if (offset > this.highestHandedOut) this.highestHandedOut = offset;
    return { skip: false, slot, redelivered };
  }

  private append(slot: Slot): void {
    this.window.push(slot);
    this.live.set(slot.offset, slot);
  }

  /** Acks a slot. Returns false when it was already settled. */
  ack(slot: Slot): boolean {
    if (slot.state !== 'open') return false;
    slot.state = 'acked';
    if (slot.detached) {
      // Dropped from the window (seek-back / rebalance) but the work is done: skip the message
      // when it is fetched again.
      if (this.staleOpen.get(slot.offset) === slot) this.staleOpen.delete(slot.offset);
      this.ackedAhead.add(slot.offset);
    }
    return true;
  }

  /** Nacks a slot: the partition must be sought back to it. Returns false when already settled. */
  nack(slot: Slot): boolean {
    if (slot.state !== 'open') return false;
    slot.state = 'nacked';
    if (slot.detached) {
      // Not fetched again yet (it would have been re-attached): it will be, and handed out anew.
      if (this.staleOpen.get(slot.offset) === slot) this.staleOpen.delete(slot.offset);
      return true;
    }
    if (this.pendingSeek === undefined || slot.offset < this.pendingSeek) this.pendingSeek = slot.offset;
    return true;
  }

  hasPendingSeek(): boolean {
    return this.pendingSeek !== undefined;
  }

  /**
   * Takes the offset to seek back to (lowest nack), if any, and forgets the window from there on:
   * acked slots become skip marks, open ones wait to be re-attached (their late settles count).
   */
  takeSeek(): bigint | undefined {
    const target = this.pendingSeek;
    if (target === undefined) return undefined;
    this.pendingSeek = undefined;
    this.truncateFrom(target);
    return target;
  }

  private truncateFrom(target: bigint): void {
    // Everything from `target` on is fetched again, the nacked message included.
    if (this.pendingSeek !== undefined && this.pendingSeek >= target) this.pendingSeek = undefined;
    const kept: Slot[] = [];
    for (let i = this.head; i < this.window.length; i++) {
      const slot = this.window[i]!;
      if (slot.offset < target) {
        kept.push(slot);
        continue;
      }
      this.live.delete(slot.offset);
      this.detach(slot);
    }
    this.window = kept;
    this.head = 0;
  }

  /** The offset to commit (next one to read), when it moved since the last `committed()`. */
  commitPoint(): bigint | undefined {
    while (this.head < this.window.length && this.window[this.head]!.state === 'acked') {
      const slot = this.window[this.head++]!;
      this.live.delete(slot.offset);
      this.contiguousEnd = slot.offset + 1n;
    }
    if (this.head > 1024 && this.head * 2 > this.window.length) {
      this.window = this.window.slice(this.head);
      this.head = 0;
    }
    const point = this.head < this.window.length ? this.window[this.head]!.offset : this.contiguousEnd;
    if (point === undefined || (this.lastCommitted !== undefined && point <= this.lastCommitted)) return undefined;
    return point;
  }

  /** Records a successful commit of `offset`. */
  committed(offset: bigint): void {
    if (this.lastCommitted === undefined || offset > this.lastCommitted) this.lastCommitted = offset;
  }

  /**
   * After a rebalance kafkajs restarts the partition from the broker's committed offset: forget
   * the window (late settles of its deliveries still count) and any pending seek. What was acked
   * below the contiguous end stays done: a commit refused by the rebalance leaves the broker's
   * offset behind it, and those messages are skipped when fetched again (then committed anew).
   */
  reset(): void {
    for (let i = this.head; i < this.window.length; i++) this.detach(this.window[i]!);
    this.window = [];
    this.head = 0;
    this.live.clear();
    this.lastCommitted = undefined;
    this.pendingSeek = undefined;
  }

  private detach(slot: Slot): void {
    slot.detached = true;
    if (slot.state === 'acked') this.ackedAhead.add(slot.offset);
    else if (slot.state === 'open') this.staleOpen.set(slot.offset, slot);
  }

  /** Handed out and neither acked nor nacked (for tests and diagnostics). */
  openCount(): number {
    let n = 0;
    for (let i = this.head; i < this.window.length; i++) if (this.window[i]!.state === 'open') n++;
    return n;
  }
}
