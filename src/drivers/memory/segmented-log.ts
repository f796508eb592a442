/**
 * An append-only log of records addressed by offset, stored in fixed-size segments so that
 * append, read-by-offset and dropping the oldest records are all O(1) (amortised), and memory
 * can be given back a segment at a time once every reader is past it.
 */

const SEGMENT_BITS = 8;
export const SEGMENT_SIZE = 1 << SEGMENT_BITS;

export class SegmentedLog<T> {
  /** Segments from the oldest retained one; `segments[head]` holds offsets from `firstSegment * SEGMENT_SIZE`. */
  private segments: T[][] = [];
  private head = 0;
  private firstSegment = 0;
  private end = 0;

  /** The offset the next append gets. */
  get endOffset(): number {
    return this.end;
  }

  /** The oldest offset still readable. */
  get startOffset(): number {
    return Math.min(this.firstSegment * SEGMENT_SIZE, this.end);
  }

  /** Records retained (not trimmed). */
  get size(): number {
    return this.end - this.startOffset;
  }

  append(record: T): number {
    const offset = this.end;
    const inSegment = offset & (SEGMENT_SIZE - 1);
    if (inSegment === 0 || this.segments.length === this.head) {
      this.segments.push([]);
    }
    // Segments are filled in order, so the last one is always the one being written.
    this.segments[this.segments.length - 1]!.push(record);
    this.end = offset + 1;
    return offset;
  }

  /** The record at `offset`, or undefined when it was trimmed or is not written yet. */
  get(offset: number): T | undefined {
    if (offset < this.startOffset || offset >= this.end) return undefined;
    const segment = this.segments[this.head + Math.floor(offset / SEGMENT_SIZE) - this.firstSegment]!;
    return segment[offset & (SEGMENT_SIZE - 1)];
  }

  /**
   * Forgets whole segments that lie entirely before `offset` (nobody will read them again).
   * The segment being written is never dropped. Returns how many records were freed.
   */
  trimBefore(offset: number): number {
    const target = Math.min(offset, this.end);
    let freed = 0;
    while (this.segments.length - this.head > 1 && (this.firstSegment + 1) * SEGMENT_SIZE <= target) {
      freed += this.segments[this.head]!.length;
      this.segments[this.head] = undefined as unknown as T[];
      this.head++;
      this.firstSegment++;
    }
    // Compact the segment index now and then so it never grows with the log's history.
    if (this.head > 64 && this.head * 2 > this.segments.length) {
      this.segments = this.segments.slice(this.head);
      this.head = 0;
    }
    return freed;
  }
}
