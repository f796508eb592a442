/**
 * Messages a group must hand out again (nacked, or left unacked by a closed subscription), kept as
 * a binary min-heap on log offset: redeliveries come out oldest first, ahead of anything newer in
 * the log, so a single subscriber still sees the destination's order wherever that is possible.
 */

export interface HasOffset {
  readonly offset: number;
}

export class RedeliveryQueue<T extends HasOffset> {
  private readonly heap: T[] = [];

  get size(): number {
    return this.heap.length;
  }

  push(item: T): void {
    const heap = this.heap;
    let i = heap.length;
    heap.push(item);
    while (i > 0) {
      const parent = (i - 1) >> 1;
      if (heap[parent]!.offset <= item.offset) break;
      heap[i] = heap[parent]!;
      i = parent;
    }
    heap[i] = item;
  }

  peek(): T | undefined {
    return this.heap[0];
  }

  pop(): T | undefined {
    const heap = this.heap;
    const top = heap[0];
    const last = heap.pop();
    if (top === undefined || last === undefined || heap.length === 0) return top;
    const n = heap.length;
    let i = 0;
    for (;;) {
      const left = 2 * i + 1;
      if (left >= n) break;
      const right = left + 1;
      const child = right < n && heap[right]!.offset < heap[left]!.offset ? right : left;
      if (heap[child]!.offset >= last.offset) break;
      heap[i] = heap[child]!;
      i = child;
    }
    heap[i] = last;
    return top;
  }
}
