/**
 * Body and headers of payq's events on the wire: CloudEvents 1.0 binary content mode (the
 * driver's binding), a W3C traceparent, and payq's timing headers.
 */
import type { Headers, OutgoingMessage } from '../drivers/types.js';
import type { GeneratedEvent } from './generator.js';
import { CONTENT_TYPE, JSON_CONTENT_TYPE, PayqHeader, TRACEPARENT, type HeaderBinding } from './headers.js';

/** Timing headers, already as decimal strings (a batch shares them, so they're rendered once). */
export interface EventTiming {
  /** Epoch µs of the send. */
  publishedUs: string;
  /** Epoch µs the rate limiter intended; omitted when sending flat out. */
  intendedUs?: string | undefined;
  /** Epoch µs the payment started (its first event's publish time). */
  startUs: string;
}

const KEYS = {
  kafka: { specversion: 'ce_specversion', id: 'ce_id', type: 'ce_type', source: 'ce_source', time: 'ce_time', subject: 'ce_subject' },
  amqp: {
    specversion: 'cloudEvents_specversion',
    id: 'cloudEvents_id',
    type: 'cloudEvents_type',
    source: 'cloudEvents_source',
    time: 'cloudEvents_time',
    subject: 'cloudEvents_subject',
  },
} as const;

export interface EncodeContext {
  binding: HeaderBinding;
  /** CloudEvents source prefix, e.g. /payq/checkout */
  sourcePrefix: string;
  runId: string;
}

export function encodeHeaders(event: GeneratedEvent, ctx: EncodeContext, timing: EventTiming): Headers {
  const k = KEYS[ctx.binding];
  const headers: Headers = {
    [k.specversion]: '1.0',
    [k.id]: event.id,
    [k.type]: event.type,
    [k.source]: `${ctx.sourcePrefix}/${event.source}`,
    [k.time]: event.occurredAt,
    [k.subject]: event.paymentId,
    [TRACEPARENT]: `00-${event.traceId}-${event.spanId}-01`,
    [PayqHeader.runId]: ctx.runId,
    [PayqHeader.publishedUs]: timing.publishedUs,
    [PayqHeader.startUs]: timing.startUs,
  };
  // The AMQP binding carries the content type in the message's content-type property.
  if (ctx.binding === 'kafka') headers[CONTENT_TYPE] = JSON_CONTENT_TYPE;
  if (timing.intendedUs !== undefined) headers[PayqHeader.intendedUs] = timing.intendedUs;
  if (event.parentId !== undefined) {
    headers[PayqHeader.parentId] = event.parentId;
    headers[PayqHeader.siblings] = String(event.siblings ?? 1);
  }
  return headers;
}

export function toMessage(event: GeneratedEvent, ctx: EncodeContext, timing: EventTiming): OutgoingMessage {
  return {
    key: event.paymentId,
    type: event.type,
    value: Buffer.from(event.body, 'utf8'),
    headers: encodeHeaders(event, ctx, timing),
  };
}

/** The CloudEvents type of a received message, in either binding. */
export function ceType(headers: Headers): string | undefined {
  return headers['ce_type'] ?? headers['cloudEvents_type'];
}

/** The CloudEvents id of a received message, in either binding. */
export function ceId(headers: Headers): string | undefined {
  return headers['ce_id'] ?? headers['cloudEvents_id'];
}
