/**
 * The generator thread of threaded-source.ts: runs the seeded generator and hands its events over
 * in packed batches, so the sending thread only unpacks and sends. Started by threadedSource only.
 *
 * Each batch: the bodies as one UTF-8 buffer (transferred, not copied) with their end offsets,
 * and the other fields as one string, FIELDS per event, separated by SEP (none of them can hold
 * it: ids, names and times come from validated alphabets).
 */
import { parentPort, workerData } from 'node:worker_threads';
import { EventGenerator, type GeneratedEvent } from '../events/generator.js';
import { parseScenario } from '../events/scenario.js';
import type { GeneratorThreadData, PackedBatch, ThreadMessage } from './threaded-source.js';
import { SEP } from './threaded-source.js';

function pack(events: GeneratedEvent[]): PackedBatch {
  const n = events.length;
  const ends = new Uint32Array(n);
  const parts: string[] = new Array(n);
  let text = '';
  for (let i = 0; i < n; i++) {
    const e = events[i]!;
    parts[i] = e.body;
    text +=
      `${i === 0 ? '' : SEP}${e.id}${SEP}${e.type}${SEP}${e.paymentId}${SEP}${e.sequence ?? ''}${SEP}${e.source}${SEP}` +
      `${e.occurredAt}${SEP}${e.traceId}${SEP}${e.spanId}${SEP}${e.parentId ?? ''}${SEP}${e.siblings ?? ''}`;
  }
  // One string, measured and encoded once: far cheaper than n small encodes of concatenated
  // (unflattened) bodies. When it is all ASCII, bytes and characters line up.
  const joined = parts.join('');
  const bytes = Buffer.byteLength(joined, 'utf8');
  const ascii = bytes === joined.length;
  let offset = 0;
  for (let i = 0; i < n; i++) {
    offset += ascii ? parts[i]!.length : Buffer.byteLength(parts[i]!, 'utf8');
    ends[i] = offset;
  }
  const bodies = Buffer.allocUnsafeSlow(bytes);
  bodies.write(joined, 0, ascii ? 'latin1' : 'utf8');
  return { count: n, bodies: bodies.buffer as ArrayBuffer, ends, text };
}

/** A batch ends after about this much body text (1 MiB). */
const MAX_BATCH_CHARS = 1 << 20;

const data = workerData as GeneratorThreadData;
const port = parentPort!;
try {
  const scenario = parseScenario(data.scenarioText, data.scenarioOrigin);
  const generator = new EventGenerator({ ...data.generator, scenario });
  let done = false;
  port.on('message', (credit: number) => {
    for (let b = 0; b < credit && !done; b++) {
      const events: GeneratedEvent[] = [];
      // Big bodies (--size) make short batches: what is generated ahead stays near 16 MiB at most.
      let chars = 0;
      while (events.length < data.batchSize && chars < MAX_BATCH_CHARS) {
        const e = generator.next();
        if (e === undefined) {
          done = true;
          break;
        }
        events.push(e);
        chars += e.body.length;
      }
      if (events.length > 0) {
        const batch = pack(events);
        port.postMessage({ batch } satisfies ThreadMessage, [batch.bodies, batch.ends.buffer as ArrayBuffer]);
      }
      if (done) port.postMessage({ done: true } satisfies ThreadMessage);
    }
  });
} catch (err) {
  port.postMessage({ error: err instanceof Error ? err.message : String(err) } satisfies ThreadMessage);
}
