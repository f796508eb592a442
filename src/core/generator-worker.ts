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
  let bytes = 0;
  for (const e of events) bytes += Buffer.byteLength(e.body, 'utf8');
  const bodies = Buffer.allocUnsafeSlow(bytes);
  const ends = new Uint32Array(events.length);
  let offset = 0;
  let text = '';
  for (let i = 0; i < events.length; i++) {
    const e = events[i]!;
    offset += bodies.write(e.body, offset, 'utf8');
    ends[i] = offset;
    text +=
      `${i === 0 ? '' : SEP}${e.id}${SEP}${e.type}${SEP}${e.paymentId}${SEP}${e.sequence ?? ''}${SEP}${e.source}${SEP}` +
      `${e.occurredAt}${SEP}${e.traceId}${SEP}${e.spanId}${SEP}${e.parentId ?? ''}${SEP}${e.siblings ?? ''}`;
  }
  return { count: events.length, bodies: bodies.buffer as ArrayBuffer, ends, text };
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
