/**
 * Body and headers of payq's events on the wire: CloudEvents 1.0 binary content mode (the
 * driver's binding), a W3C traceparent, and payq's timing headers.
 */
import type { Headers, OutgoingMessage } from '../drivers/types.js';
import type { GeneratedEvent } from './generator.js';
import { JSON_CONTENT_TYPE, PayqHeader, type HeaderBinding } from './headers.js';

/** Timing headers, already as decimal strings (a batch shares them, so they're rendered once). */
export interface EventTiming {
  /** Epoch µs of the send. */
  publishedUs: string;
  /** Epoch µs the rate limiter intended; omitted when sending flat out. */
  intendedUs?: string | undefined;
  /** Epoch µs the payment started (its first event's publish time). */
  startUs: string;
}

export interface EncodeContext {
  binding: HeaderBinding;
  /** CloudEvents source prefix, e.g. /payq/checkout */
  sourcePrefix: string;
  runId: string;
}

/**
 * The headers of one event. Each binding is one object literal with literal keys (the names of
 * headers.ts, spelled out: computed keys would make V8 build every object key by key), so all
 * events share one shape; test/unit/codec.test.ts checks the spellings against headers.ts.
 */
export function encodeHeaders(event: GeneratedEvent, ctx: EncodeContext, timing: EventTiming): Headers {
  const source = `${ctx.sourcePrefix}/${event.source}`;
  const traceparent = `00-${event.traceId}-${event.spanId}-01`;
  const headers: Headers =
    ctx.binding === 'kafka'
      ? {
          ce_specversion: '1.0',
          ce_id: event.id,
          ce_type: event.type,
          ce_source: source,
          ce_time: event.occurredAt,
          ce_subject: event.paymentId,
          'content-type': JSON_CONTENT_TYPE,
          traceparent,
          'payq-run-id': ctx.runId,
          'payq-published-us': timing.publishedUs,
          'payq-start-us': timing.startUs,
        }
      : {
          // The AMQP binding carries the content type in the message's content-type property.
          cloudEvents_specversion: '1.0',
          cloudEvents_id: event.id,
          cloudEvents_type: event.type,
          cloudEvents_source: source,
          cloudEvents_time: event.occurredAt,
          cloudEvents_subject: event.paymentId,
          traceparent,
          'payq-run-id': ctx.runId,
          'payq-published-us': timing.publishedUs,
          'payq-start-us': timing.startUs,
        };
  if (event.sequence !== undefined) headers[PayqHeader.sequence] = String(event.sequence);
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
    value: event.value ?? Buffer.from(event.body, 'utf8'),
    headers: encodeHeaders(event, ctx, timing),
  };
}

/** The CloudEvents id of a received message, in either binding. */
export function ceId(headers: Headers): string | undefined {
  return headers['ce_id'] ?? headers['cloudEvents_id'];
}
