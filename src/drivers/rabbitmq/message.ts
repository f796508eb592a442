/**
 * payq message ↔ AMQP properties. payq headers are strings; AMQP header tables hold typed
 * values (x-death is an array of tables with timestamps), which are flattened to text here.
 */
import type { Options } from 'amqplib';
import type { Headers, OutgoingMessage } from '../types.js';
import { DEAD_LETTER_MARKER } from './topology.js';

/** amqplib writes typed field values as `{ '!': type, value }` (timestamps, decimals). */
function plain(value: unknown): unknown {
  if (Buffer.isBuffer(value)) return value.toString('utf8');
  if (Array.isArray(value)) return value.map(plain);
  if (value instanceof Date) return value.toISOString();
  if (value && typeof value === 'object') {
    const obj = value as Record<string, unknown>;
    if (typeof obj['!'] === 'string' && 'value' in obj) {
      // AMQP timestamps are whole seconds since the epoch.
      if (obj['!'] === 'timestamp' && typeof obj['value'] === 'number') return new Date(obj['value'] * 1000).toISOString();
      return plain(obj['value']);
    }
    const out: Record<string, unknown> = {};
    for (const [k, v] of Object.entries(obj)) out[k] = plain(v);
    return out;
  }
  if (typeof value === 'bigint') return value.toString();
  return value;
}

/**
 * AMQP headers → payq headers: strings kept, numbers/booleans as text, Buffers as UTF-8,
 * timestamps as ISO 8601, tables and arrays (x-death) as JSON. The dead-letter mark is internal
 * and dropped, so a replayed message never carries it back.
 */
export function headersFromAmqp(raw: Record<string, unknown> | undefined): Headers {
  const out: Headers = {};
  if (!raw) return out;
  for (const [name, value] of Object.entries(raw)) {
    if (value === undefined || value === null || name === DEAD_LETTER_MARKER) continue;
    const flat = plain(value);
    out[name] = typeof flat === 'string' ? flat : typeof flat === 'object' ? JSON.stringify(flat) : String(flat);
  }
  return out;
}

/** The caller's headers, minus the internal mark (only `deadLetter` may set it). */
export function headersToAmqp(headers: Headers): Headers {
  if (!(DEAD_LETTER_MARKER in headers)) return headers;
  const copy = { ...headers };
  delete copy[DEAD_LETTER_MARKER];
  return copy;
}

let fallbackIds = 0;
const idPrefix = `payq-${process.pid.toString(36)}-${Date.now().toString(36)}-`;

/**
 * AMQP properties of a sent message. message-id is the CloudEvents id when there is one (the
 * publisher also matches basic.return frames by it), else a process-unique id.
 */
export function publishOptions(message: OutgoingMessage, timestampSeconds: number): Options.Publish {
  const headers = message.headers;
  const ceId = headers['ce_id'];
  const contentType = headers['content-type'];
  const options: Options.Publish = {
    persistent: true,
    mandatory: true,
    contentType: contentType !== undefined && fitsShortString(contentType) ? contentType : 'application/json',
    messageId: ceId !== undefined && ceId !== '' && fitsShortString(ceId) ? ceId : `${idPrefix}${(fallbackIds++).toString(36)}`,
    timestamp: timestampSeconds,
    appId: 'payq',
    headers: headersToAmqp(headers),
  };
  if (fitsShortString(message.type)) options.type = message.type;
  return options;
}

/** AMQP properties are short strings (≤ 255 bytes); a longer one would make amqplib throw. */
function fitsShortString(text: string): boolean {
  return text.length <= 85 || Buffer.byteLength(text, 'utf8') <= 255;
}

/**
 * Properties of the copy `deadLetter` publishes: the original's, with its raw headers (x-death
 * stays an AMQP array), but never user-id (the broker checks it against the login) nor the
 * original expiration.
 */
export function copyOptions(properties: Record<string, unknown>, headers: Record<string, unknown>): Options.Publish {
  const opts: Options.Publish = { persistent: true, mandatory: true, headers };
  const str = (v: unknown): string | undefined => (typeof v === 'string' ? v : Buffer.isBuffer(v) ? v.toString('utf8') : undefined);
  const contentType = str(properties['contentType']);
  if (contentType !== undefined) opts.contentType = contentType;
  const contentEncoding = str(properties['contentEncoding']);
  if (contentEncoding !== undefined) opts.contentEncoding = contentEncoding;
  const correlationId = str(properties['correlationId']);
  if (correlationId !== undefined) opts.correlationId = correlationId;
  const replyTo = str(properties['replyTo']);
  if (replyTo !== undefined) opts.replyTo = replyTo;
  const messageId = str(properties['messageId']);
  if (messageId !== undefined) opts.messageId = messageId;
  const type = str(properties['type']);
  if (type !== undefined) opts.type = type;
  const appId = str(properties['appId']);
  if (appId !== undefined) opts.appId = appId;
  if (typeof properties['timestamp'] === 'number') opts.timestamp = properties['timestamp'];
  if (typeof properties['priority'] === 'number') opts.priority = properties['priority'];
  return opts;
}
