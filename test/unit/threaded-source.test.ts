import { describe, expect, it } from 'vitest';
import { generatedSource, type EventSource } from '../../src/core/sources.js';
import { EventGenerator, type GeneratedEvent } from '../../src/events/generator.js';
import { loadScenario } from '../../src/events/scenario.js';

// The generator thread runs compiled code (dist/core/generator-worker.js): load the compiled
// source too (npm test builds first).
const { threadedSource } = (await import('../../dist/core/threaded-source.js' as string)) as typeof import('../../src/core/threaded-source.js');

const scenario = loadScenario('checkout');

function plain(e: GeneratedEvent) {
  return {
    id: e.id,
    type: e.type,
    paymentId: e.paymentId,
    sequence: e.sequence,
    source: e.source,
    occurredAt: e.occurredAt,
    traceId: e.traceId,
    spanId: e.spanId,
    parentId: e.parentId,
    siblings: e.siblings,
    body: e.body,
  };
}

/** Pulls everything, in chunks of the given sizes in turn. */
async function drain(source: EventSource, sizes: number[]): Promise<GeneratedEvent[]> {
  const out: GeneratedEvent[] = [];
  for (let i = 0; ; i++) {
    const chunk = await source.pull(sizes[i % sizes.length]!);
    if (chunk.length === 0) return out;
    out.push(...chunk);
  }
}

describe('threadedSource', () => {
  it.each([
    { mode: 'entry events', lifecycle: false, payments: 5000, size: undefined, sizes: [1000] },
    { mode: 'lifecycles, padded bodies, odd pull sizes', lifecycle: true, payments: 400, size: 700, sizes: [1, 7, 1000, 333] },
    { mode: 'bodies of 300 kB (short batches)', lifecycle: false, payments: 20, size: 300_000, sizes: [1000] },
  ])('hands out exactly the events of the in-process generator: $mode', async ({ lifecycle, payments, size, sizes }) => {
    const options = { scenario, seed: 42, payments, lifecycle, size };
    const expected = await drain(generatedSource(new EventGenerator(options)), [1000]);
    const threaded = threadedSource(options, { batchSize: 256, ahead: 3 });
    try {
      const got = await drain(threaded, sizes);
      expect(got.length).toBe(expected.length);
      expect(got.map(plain)).toEqual(expected.map(plain));
      for (const e of got) expect(e.value?.equals(Buffer.from(e.body))).toBe(true);
      expect(threaded.payments).toBe(payments);
    } finally {
      threaded.close?.();
    }
  });

  it('stops when closed, and hands out nothing after', async () => {
    const source = threadedSource({ scenario, seed: 1, payments: Infinity, lifecycle: false });
    expect((await source.pull(10)).length).toBe(10);
    source.close?.();
    expect(await source.pull(10)).toEqual([]);
  });
});
