/**
 * payq's own per-event fields in one compact `payq` header on the wire (Kafka), instead of one
 * header each: every header costs a Kafka client a key and a value to encode and decode, and
 * payq's timing headers were 3–7 of the 11–15 on every record (README "Events").
 *
 *   payq: p=1764770000000000;s=1764769999990000;r=a5d6b4325b2a;q=3;i=…;c=<parent id>;n=2
 *
 * In memory (Headers, as drivers hand them over) the fields keep their own names (`payq-run-id`,
 * …): a driver packs them on send and unpacks them on receive, so everything above the driver
 * reads one model, and messages written before the compact header (the separate `payq-*`
 * headers) read as they always did. CloudEvents and traceparent headers stay as they are, for
 * every other reader.
 */
import type { Headers } from '../drivers/types.js';
import { PayqHeader } from './headers.js';

/** The header's name on the wire. */
export const PAYQ_WIRE_HEADER = 'payq';

/** Field letter in the compact header → the in-memory header it stands for. Defined once. */
const FIELDS = {
  p: PayqHeader.publishedUs,
  s: PayqHeader.startUs,
  r: PayqHeader.runId,
  q: PayqHeader.sequence,
  i: PayqHeader.intendedUs,
  c: PayqHeader.parentId,
  n: PayqHeader.siblings,
} as const;

type Letter = keyof typeof FIELDS;
const LETTER_OF = new Map<string, Letter>(Object.entries(FIELDS).map(([letter, name]) => [name, letter as Letter]));
const NAME_OF = new Map<string, string>(Object.entries(FIELDS));

/** `;` separates fields and `%` escapes: those two are percent-encoded in values, nothing else. */
function escape(value: string): string {
  return value.includes(';') || value.includes('%') ? value.replaceAll('%', '%25').replaceAll(';', '%3B') : value;
}

function unescape(value: string): string {
  return value.includes('%') ? value.replaceAll('%3B', ';').replaceAll('%3b', ';').replaceAll('%25', '%') : value;
}

/**
 * The wire headers of a message: payq's packable fields folded into one `payq` header, the rest
 * as they are. Headers without such fields (or already holding a `payq` header of someone
 * else's) are returned as they are.
 */
export function packPayqHeaders(headers: Headers): Headers {
  if (headers[PAYQ_WIRE_HEADER] !== undefined) return headers;
  const out: Headers = {};
  let packed = '';
  for (const name in headers) {
    const value = headers[name]!;
    const letter = name.startsWith('payq-') ? LETTER_OF.get(name) : undefined;
    if (letter === undefined) out[name] = value;
    else packed += `${packed === '' ? '' : ';'}${letter}=${escape(value)}`;
  }
  if (packed === '') return headers;
  out[PAYQ_WIRE_HEADER] = packed;
  return out;
}

/**
 * Adds the fields of a received `payq` header value to `into` (a field also present as a header
 * of its own keeps that header's value, whichever comes first). Returns false, adding nothing,
 * when the value is not payq's compact form (no field payq knows): the caller keeps it as a
 * header like any other. Unknown letters are skipped, for later fields.
 */
export function unpackPayqHeader(packed: string, into: Headers): boolean {
  let known = false;
  let start = 0;
  while (start < packed.length) {
    let end = packed.indexOf(';', start);
    if (end === -1) end = packed.length;
    const eq = packed.indexOf('=', start);
    if (eq > start && eq < end) {
      const name = NAME_OF.get(packed.slice(start, eq));
      if (name !== undefined) {
        known = true;
        into[name] ??= unescape(packed.slice(eq + 1, end));
      }
    }
    start = end + 1;
  }
  return known;
}
