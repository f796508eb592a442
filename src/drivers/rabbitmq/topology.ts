/**
 * Pure naming and routing rules of the RabbitMQ layout (README "Destinations"). No amqplib here, so every
 * rule is unit-tested without a broker.
 *
 * Layout
 * - One durable topic exchange (`payq`, or `?exchange=`), one durable queue per destination.
 * - Routing key of a message sent to destination D: `D.<type>.<key>` — the event type and the
 *   payment id, each escaped to exactly one topic word (`%` → `%25`, `.` → `%2E`).
 * - Each destination queue D is bound with `D.*.*`. Because the last two words are always
 *   single words, `D.*.*` matches exactly the keys of D and nothing of another destination:
 *   `payments.*.*` does not match `payments.dlq.order_placed.p1` (one word too many), which
 *   `payments.#` would, duplicating every send to `payments.dlq` into `payments`.
 * - Taps (SubscribeOptions.tap: a durable queue of the tap's own, `payq.tap.<pid>.<random>`)
 *   bind `D.*.*` for each destination D and see sends without taking them from D's consumers.
 *   A tap on a DLQ `D.dlq` also binds the DLX with `D.dlq`: dead letters reach `D.dlq` through
 *   the DLX, never through the topic exchange.
 * - With `deadLetter`, D gets `x-dead-letter-exchange` = `<exchange>.dlx` (direct) and
 *   `x-dead-letter-routing-key` = `D.dlq`; `D.dlq` is bound to the DLX with that key (and, like
 *   every payq queue, to the topic exchange with `D.dlq.*.*` so it can be sent to directly).
 */
import { ConfigError } from '../../errors.js';
import type { DestinationSpec } from '../types.js';
import type { RabbitMqConfig } from './config.js';

/** AMQP short strings (routing keys, queue names) are at most 255 bytes. */
const MAX_SHORTSTR = 255;
/** Leaves room for `.dlq`, `.parked` and the two routing words. */
export const MAX_DESTINATION_BYTES = 200;

/** Header stamped on the copy `deadLetter` publishes; see subscriber.ts. */
export const DEAD_LETTER_MARKER = 'payq-dead-letter';

const byteLength = (text: string): number => Buffer.byteLength(text, 'utf8');

export function dlqName(destination: string): string {
  return `${destination}.dlq`;
}

export function bindingPattern(queue: string): string {
  return `${queue}.*.*`;
}

/** Throws ConfigError for names RabbitMQ would refuse or that would break the routing rule. */
export function validateDestination(name: string): void {
  let why: string | undefined;
  if (name === '') why = 'it is empty';
  else if (byteLength(name) > MAX_DESTINATION_BYTES) why = `it is longer than ${MAX_DESTINATION_BYTES} bytes`;
  else if (name.startsWith('amq.')) why = "the prefix 'amq.' is reserved by RabbitMQ";
  else if (name.split('.').some((w) => w === '*' || w === '#')) why = "'*' and '#' as whole words are topic wildcards";
  if (why) throw new ConfigError(`destination '${name}' cannot be a RabbitMQ queue: ${why}`);
}

/** Arguments a payq destination queue is declared with; redeclaring must use the same ones. */
export function queueArguments(spec: DestinationSpec, config: RabbitMqConfig): Record<string, string> {
  if (!spec.deadLetter) return {};
  return {
    'x-dead-letter-exchange': config.deadLetterExchange,
    'x-dead-letter-routing-key': dlqName(spec.name),
  };
}

export function encodeWord(text: string): string {
  return text.replace(/%/g, '%25').replace(/\./g, '%2E');
}

/** undefined when the word is not a complete encoding (e.g. truncated, ends with the `%` mark). */
export function decodeWord(word: string): string | undefined {
  if (/%(?!25|2E)/.test(word)) return undefined;
  return word.replace(/%(25|2E)/g, (_m, hex: string) => (hex === '25' ? '%' : '.'));
}

/** Cuts an encoded word to `max` bytes, marking the cut with a trailing lone `%`. */
function fitWord(word: string, max: number): string {
  if (byteLength(word) <= max) return word;
  let cut = word;
  while (cut.length > 0 && byteLength(cut) + 1 > max) cut = cut.slice(0, -1);
  cut = cut.replace(/%[0-9A-F]?$/, '');
  return `${cut}%`;
}

/**
 * `D.<type>.<key>`. Over-long type/key words are cut (the key only when it must be) so the key
 * fits 255 bytes; a cut word decodes to undefined rather than to a wrong value.
 */
export function routingKey(destination: string, type: string, key: string): string {
  const budget = MAX_SHORTSTR - byteLength(destination) - 2;
  let t = encodeWord(type);
  let k = encodeWord(key);
  if (byteLength(t) + byteLength(k) > budget) {
    const half = Math.floor(budget / 2);
    if (byteLength(k) <= budget - Math.min(byteLength(t), half)) {
      t = fitWord(t, budget - byteLength(k));
    } else {
      t = fitWord(t, Math.min(byteLength(t), half));
      k = fitWord(k, budget - byteLength(t));
    }
  }
  return `${destination}.${t}.${k}`;
}

/** The payment key of a message routed to `queue` by `routingKey(queue, …)`, else undefined. */
export function keyFromRoutingKey(queue: string, key: string): string | undefined {
  if (!key.startsWith(`${queue}.`)) return undefined;
  const words = key.slice(queue.length + 1).split('.');
  if (words.length !== 2) return undefined;
  return decodeWord(words[1]!);
}

/**
 * Which of a tap's destinations a message it received was routed for: through the DLX the routing
 * key is the DLQ's name; through the topic exchange it is `D.<type>.<key>`, so D is the key minus
 * its last two words (those are always single words, see routingKey).
 */
export function tapDestination(
  destinations: readonly string[],
  exchange: string,
  routingKey: string,
  config: Pick<RabbitMqConfig, 'exchange' | 'deadLetterExchange'>,
): string | undefined {
  if (exchange === config.deadLetterExchange) return destinations.includes(routingKey) ? routingKey : undefined;
  if (exchange !== config.exchange) return undefined;
  const words = routingKey.split('.');
  if (words.length < 3) return undefined;
  const destination = words.slice(0, -2).join('.');
  return destinations.includes(destination) ? destination : undefined;
}

/** A tap binds the DLX for this destination: it is where dead letters go (see the layout above). */
export function isDeadLetterQueueName(destination: string): boolean {
  return destination.endsWith('.dlq') && destination.length > '.dlq'.length;
}

/** How often RabbitMQ has dead-lettered this message out of `queue` (all reasons), from x-death. */
export function deathCount(headers: Record<string, unknown> | undefined, queue: string): number {
  const deaths = headers?.['x-death'];
  if (!Array.isArray(deaths)) return 0;
  let total = 0;
  for (const entry of deaths) {
    if (entry && typeof entry === 'object' && (entry as Record<string, unknown>)['queue'] === queue) {
      const count = Number((entry as Record<string, unknown>)['count']);
      if (Number.isFinite(count)) total += count;
    }
  }
  return total;
}

/**
 * What the dead-letter marker says: the copy is to be dead-lettered out of `queue` while its
 * x-death count for that queue is still `deaths` (afterwards it is a stale mark, ignored).
 * `key` carries the payment key through the DLX, which rewrites the routing key.
 */
export interface DeadLetterMark {
  queue: string;
  deaths: number;
  key?: string;
}

export function encodeMark(mark: DeadLetterMark): string {
  return JSON.stringify(mark);
}

export function decodeMark(value: unknown): DeadLetterMark | undefined {
  const text = Buffer.isBuffer(value) ? value.toString('utf8') : value;
  if (typeof text !== 'string') return undefined;
  try {
    const parsed: unknown = JSON.parse(text);
    if (!parsed || typeof parsed !== 'object') return undefined;
    const { queue, deaths, key } = parsed as Record<string, unknown>;
    if (typeof queue !== 'string' || typeof deaths !== 'number') return undefined;
    return typeof key === 'string' ? { queue, deaths, key } : { queue, deaths };
  } catch {
    return undefined;
  }
}

/** True when a delivery from `queue` is a marked copy that must now go to the DLX. */
export function isFreshMark(mark: DeadLetterMark | undefined, queue: string, headers: Record<string, unknown> | undefined): boolean {
  return mark !== undefined && mark.queue === queue && mark.deaths === deathCount(headers, queue);
}

/**
 * The payment key of a delivery: from its own routing key, else (a dead letter) from payq's
 * mark, else from the routing key it had when RabbitMQ dead-lettered it (x-death).
 */
export function deliveryKey(
  queue: string,
  key: string,
  mark: DeadLetterMark | undefined,
  headers: Record<string, unknown> | undefined,
): string | undefined {
  const direct = keyFromRoutingKey(queue, key);
  if (direct !== undefined) return direct;
  if (mark?.key !== undefined) return mark.key;
  const deaths = headers?.['x-death'];
  if (Array.isArray(deaths) && deaths[0] && typeof deaths[0] === 'object') {
    const latest = deaths[0] as Record<string, unknown>;
    const keys = latest['routing-keys'];
    if (typeof latest['queue'] === 'string' && Array.isArray(keys) && typeof keys[0] === 'string') {
      return keyFromRoutingKey(latest['queue'], keys[0]);
    }
  }
  return undefined;
}
