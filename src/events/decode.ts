/**
 * Reading received messages, payq's own or anyone's. payq's events carry everything in headers;
 * users' events may only have a body, so type and correlation fall back to body fields
 * (`--type-field event --correlate data.order_id`). Never throws: what cannot be read is reported
 * in `problem`, and the caller decides (consume prints it, worker dead-letters it, trace counts it).
 */
import type { Headers } from '../drivers/types.js';
import { PayqHeader } from './headers.js';

export interface DecodeOptions {
  /** Body field with the event type; tried after the CloudEvents type header. */
  typeField: string;
  /** Body field correlating a payment's events; tried after ce_subject. Default payment_id. */
  correlate: string;
  /** When set, these body fields win over headers (events payq did not write). */
  preferBody?: boolean;
  /**
   * Parse the body only when the headers lack something (type, correlation id, event id,
   * sequence): for readers that need no body fields, such as trace. A message whose headers say
   * everything is then taken as an event without its body being read (`body` is undefined).
   */
  headersFirst?: boolean;
}

export const DEFAULT_DECODE: DecodeOptions = { typeField: 'event', correlate: 'payment_id' };

export interface ReceivedEvent {
  id: string | undefined;
  type: string | undefined;
  /** The payment (correlation id). */
  paymentId: string | undefined;
  sequence: number | undefined;
  parentId: string | undefined;
  /** How many events were emitted together with this one (payq-siblings). */
  siblings: number | undefined;
  /** Epoch µs, from payq's timing headers. */
  publishedUs: number | undefined;
  startUs: number | undefined;
  runId: string | undefined;
  /** The parsed JSON body, or undefined when it is not JSON. */
  body: Record<string, unknown> | undefined;
  /** Why the message cannot be handled as an event, if it cannot. */
  problem: string | undefined;
}

export function getPath(obj: unknown, path: string): unknown {
  if (!path.includes('.')) return obj !== null && typeof obj === 'object' ? (obj as Record<string, unknown>)[path] : undefined;
  let cur: unknown = obj;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return cur;
}

function scalar(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

export function decodeEvent(value: Buffer, headers: Headers, key: string | undefined, options: DecodeOptions = DEFAULT_DECODE): ReceivedEvent {
  const headerType = headers['ce_type'] ?? headers['cloudEvents_type'];
  const headerSubject = headers['ce_subject'] ?? headers['cloudEvents_subject'];
  const headerId = headers['ce_id'] ?? headers['cloudEvents_id'];
  const headerSequence = num(headers[PayqHeader.sequence]);
  const skipBody =
    options.headersFirst === true &&
    options.preferBody !== true &&
    headerType !== undefined &&
    headerSubject !== undefined &&
    headerId !== undefined &&
    headerSequence !== undefined;
  let body: Record<string, unknown> | undefined;
  let problem: string | undefined;
  if (!skipBody) {
    try {
      const parsed: unknown = JSON.parse(value.toString('utf8'));
      if (parsed !== null && typeof parsed === 'object' && !Array.isArray(parsed)) body = parsed as Record<string, unknown>;
      else problem = 'the body is JSON but not an object';
    } catch {
      problem = value.length === 0 ? 'the body is empty' : 'the body is not JSON';
    }
  }
  const bodyType = body ? scalar(getPath(body, options.typeField)) : undefined;
  const type = options.preferBody ? (bodyType ?? headerType) : (headerType ?? bodyType);
  const bodyPayment = body ? scalar(getPath(body, options.correlate)) : undefined;
  const paymentId = options.preferBody ? (bodyPayment ?? headerSubject ?? key) : (headerSubject ?? bodyPayment ?? key);
  const id = headerId ?? (body ? scalar(body['id']) : undefined);
  if (problem === undefined && type === undefined) problem = `the message has no event type (no ce_type header, no '${options.typeField}' field)`;
  if (problem === undefined && paymentId === undefined) problem = `the message has no correlation id (no ce_subject header, no '${options.correlate}' field)`;
  const seq = headerSequence ?? (body ? body['sequence'] : undefined);
  return {
    id,
    type,
    paymentId,
    sequence: typeof seq === 'number' ? seq : undefined,
    parentId: headers[PayqHeader.parentId],
    siblings: num(headers[PayqHeader.siblings]),
    publishedUs: num(headers[PayqHeader.publishedUs]),
    startUs: num(headers[PayqHeader.startUs]),
    runId: headers[PayqHeader.runId],
    body,
    problem,
  };
}
