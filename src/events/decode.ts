/**
 * Reading received messages, payq's own or anyone's. payq's events carry everything in headers;
 * other producers' events may only have a body, so type, correlation and business time fall back
 * to body fields (`--type-field event --correlate data.order_id --time-field data.at`).
 * CloudEvents written by other SDKs are recognised without flags: binary content mode (the
 * attributes in headers: `ce_*` in the Kafka binding, `cloudEvents_*` / `cloudEvents:*` in the
 * AMQP one, `ce-*` in the NATS and HTTP ones) and structured mode (a JSON body with
 * `specversion`, `type`, `id`, `data`, and optionally `subject` and `time`).
 * Never throws: what cannot be read is reported in `problem`, and the caller decides (consume
 * prints it, worker dead-letters it, trace counts it).
 */
import type { Headers } from '../drivers/types.js';
import { UsageError } from '../errors.js';
import { PayqHeader } from './headers.js';

export interface DecodeOptions {
  /** Body field with the event type; tried after the CloudEvents type. */
  typeField: string;
  /** Body field correlating a payment's events; tried after the CloudEvents subject. Default payment_id. */
  correlate: string;
  /**
   * Correlation fields by destination (`--correlate orders=data.order_id`), for pipelines whose
   * stages carry the id in different fields. A DLQ or parking destination uses its origin's.
   */
  correlateBy?: Readonly<Record<string, string>> | undefined;
  /** Body field with the business time; when set, it wins over the CloudEvents time. Default occurred_at, tried after it. */
  timeField?: string | undefined;
  /** When set, these body fields win over headers (events payq did not write). */
  preferBody?: boolean;
  /**
   * Parse the body only when the headers lack something (type, correlation id, event id,
   * sequence): for readers that need no body fields, such as trace. A message whose headers say
   * everything is then taken as an event without its body being read (`body` is undefined).
   */
  headersFirst?: boolean;
}

export const DEFAULT_TIME_FIELD = 'occurred_at';
export const DEFAULT_DECODE: DecodeOptions = { typeField: 'event', correlate: 'payment_id' };

export interface ReceivedEvent {
  id: string | undefined;
  type: string | undefined;
  /** The payment (correlation id). */
  paymentId: string | undefined;
  /** It came from the message key alone: no subject, no correlation field (trace says so). */
  paymentFromKey: boolean;
  sequence: number | undefined;
  parentId: string | undefined;
  /** How many events were emitted together with this one (payq-siblings). */
  siblings: number | undefined;
  /** Epoch µs, from payq's timing headers. */
  publishedUs: number | undefined;
  startUs: number | undefined;
  runId: string | undefined;
  /** The business time of the event (epoch ms): CloudEvents time, or the time field. */
  occurredMs: number | undefined;
  /** The parsed JSON body, or undefined when it is not JSON. */
  body: Record<string, unknown> | undefined;
  /** The body is a CloudEvents structured-mode envelope (its payload is `body.data`). */
  structured: boolean;
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

/** A field path: names of letters, digits, `_`, `$` or `-`, joined by dots (`data.order_id`). */
const FIELD_PATH = /^[A-Za-z0-9_$-]+(\.[A-Za-z0-9_$-]+)*$/;

/**
 * The path, or a UsageError saying what a path looks like. The parsers' messages do not name the
 * flag: the option resolver prefixes where the value came from (a flag, PAYQ_*, a config file).
 */
export function parseFieldPath(text: string): string {
  const path = text.trim();
  if (path === '') throw new UsageError('empty field path (expected a body field such as event or data.order_id)');
  if (!FIELD_PATH.test(path)) {
    throw new UsageError(`'${text}' is not a field path (expected names of letters, digits, _ $ - joined by dots, such as data.order_id)`);
  }
  return path;
}

export interface CorrelateSpec {
  /** The path for every destination not named; undefined: the default (payment_id). */
  path: string | undefined;
  byDestination: Record<string, string>;
}

/**
 * `--correlate PATH`, `--correlate DEST=PATH,DEST=PATH`, or both (`data.id,orders=data.order_id`):
 * a plain path applies to every destination not named.
 */
export function parseCorrelate(text: string): CorrelateSpec {
  const spec: CorrelateSpec = { path: undefined, byDestination: {} };
  const items = text.split(',').map((s) => s.trim());
  if (items.every((s) => s === '')) throw new UsageError('empty (expected PATH or DESTINATION=PATH,…, such as orders=data.order_id)');
  for (const item of items) {
    if (item === '') throw new UsageError(`an empty item in '${text}' (expected PATH or DESTINATION=PATH, separated by commas)`);
    const eq = item.indexOf('=');
    if (eq === -1) {
      if (spec.path !== undefined) throw new UsageError(`two paths for every destination ('${spec.path}' and '${item}'); name the destination of each (DESTINATION=PATH)`);
      spec.path = parseFieldPath(item);
      continue;
    }
    const destination = item.slice(0, eq).trim();
    if (destination === '') throw new UsageError(`'${item}' has no destination before '=' (expected DESTINATION=PATH)`);
    if (Object.hasOwn(spec.byDestination, destination)) throw new UsageError(`destination '${destination}' is named twice`);
    try {
      spec.byDestination[destination] = parseFieldPath(item.slice(eq + 1));
    } catch (err) {
      throw new UsageError(`destination '${destination}': ${(err as Error).message}`);
    }
  }
  return spec;
}

/** Every destination a per-destination correlation names must be one that is read. */
export function checkCorrelateDestinations(spec: CorrelateSpec, destinations: readonly string[]): void {
  const read = new Set(destinations.map(originOf));
  for (const name of Object.keys(spec.byDestination)) {
    if (!read.has(originOf(name))) {
      throw new UsageError(`--correlate: destination '${name}' is not one that is read (reading: ${destinations.join(', ')})`);
    }
  }
}

/** The decode options of `--type-field`, `--correlate` and `--time-field` (undefined: not given). */
export function decodeOptionsOf(flags: { typeField?: string | undefined; correlate?: CorrelateSpec | undefined; timeField?: string | undefined }): DecodeOptions {
  const c = flags.correlate;
  const byDestination = c && Object.keys(c.byDestination).length > 0 ? c.byDestination : undefined;
  return {
    typeField: flags.typeField ?? DEFAULT_DECODE.typeField,
    correlate: c?.path ?? DEFAULT_DECODE.correlate,
    ...(byDestination ? { correlateBy: byDestination } : {}),
    ...(flags.timeField !== undefined ? { timeField: flags.timeField } : {}),
    preferBody: flags.typeField !== undefined || c !== undefined,
  };
}

const DERIVED_SUFFIXES = ['.dlq', '.parked'];

/** A DLQ's or parking destination's origin; other names as they are. */
function originOf(destination: string): string {
  for (const suffix of DERIVED_SUFFIXES) if (destination.endsWith(suffix)) return destination.slice(0, -suffix.length);
  return destination;
}

function correlatePath(options: DecodeOptions, destination: string | undefined): string {
  const by = options.correlateBy;
  if (by === undefined || destination === undefined) return options.correlate;
  return by[destination] ?? by[originOf(destination)] ?? options.correlate;
}

function scalar(v: unknown): string | undefined {
  return typeof v === 'string' ? v : typeof v === 'number' && Number.isFinite(v) ? String(v) : undefined;
}

function num(v: string | undefined): number | undefined {
  if (v === undefined || v === '') return undefined;
  const n = Number(v);
  return Number.isFinite(n) ? n : undefined;
}

const ISO_TIME = /^\d{4}-\d{2}-\d{2}([Tt ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?([Zz]|[+-]\d{2}(:?\d{2})?)?)?$/;
/** Epoch numbers below this are seconds, above it milliseconds (1e11 s is the year 5138). */
const SECONDS_BELOW = 1e11;
const MAX_DATE_MS = 8.64e15;

/** Epoch ms of a time value: an RFC 3339 / ISO 8601 text, or epoch seconds or ms; else undefined. */
export function timeMs(v: unknown): number | undefined {
  let ms: number | undefined;
  if (typeof v === 'number') ms = v;
  else if (typeof v === 'string') {
    if (/^\d{1,16}(\.\d+)?$/.test(v)) ms = Number(v);
    else if (ISO_TIME.test(v)) return finiteDate(Date.parse(v));
  }
  if (ms === undefined || !Number.isFinite(ms) || ms < 0) return undefined;
  return finiteDate(ms < SECONDS_BELOW ? ms * 1000 : ms);
}

function finiteDate(ms: number): number | undefined {
  return Number.isFinite(ms) && Math.abs(ms) <= MAX_DATE_MS ? ms : undefined;
}

/** The CloudEvents attributes in binary content mode, whichever binding wrote them. */
interface CeAttributes {
  type: string | undefined;
  id: string | undefined;
  subject: string | undefined;
  time: string | undefined;
}

const NONE: CeAttributes = { type: undefined, id: undefined, subject: undefined, time: undefined };

function percentDecoded(v: string): string {
  if (!v.includes('%')) return v;
  try {
    return decodeURIComponent(v);
  } catch {
    return v;
  }
}

function ceAttributes(headers: Headers): CeAttributes {
  // payq's own bindings, spelled exactly: the common case, looked up without a scan.
  const type = headers['ce_type'] ?? headers['cloudEvents_type'];
  if (type !== undefined) {
    return {
      type,
      id: headers['ce_id'] ?? headers['cloudEvents_id'],
      subject: headers['ce_subject'] ?? headers['cloudEvents_subject'],
      time: headers['ce_time'] ?? headers['cloudEvents_time'],
    };
  }
  // Other SDKs: `cloudEvents:` (AMQP 1.0 binding), `ce-` (NATS and HTTP bindings, whose
  // values are percent-encoded), in any letter case.
  let found: Record<string, string> | undefined;
  for (const name in headers) {
    const lower = name.toLowerCase();
    let attr: string | undefined;
    let value = headers[name]!;
    if (lower.startsWith('ce_')) attr = lower.slice(3);
    else if (lower.startsWith('cloudevents_') || lower.startsWith('cloudevents:')) attr = lower.slice(12);
    else if (lower.startsWith('ce-')) {
      attr = lower.slice(3);
      value = percentDecoded(value);
    }
    if (attr !== undefined) (found ??= {})[attr] = value;
  }
  return found ? { type: found['type'], id: found['id'], subject: found['subject'], time: found['time'] } : NONE;
}

/** A CloudEvents structured-mode envelope: specversion, type and id as strings. */
function isStructured(body: Record<string, unknown>): boolean {
  return typeof body['specversion'] === 'string' && typeof body['type'] === 'string' && typeof body['id'] === 'string';
}

function first<T>(...values: (T | undefined)[]): T | undefined {
  for (const v of values) if (v !== undefined) return v;
  return undefined;
}

export function decodeEvent(
  value: Buffer,
  headers: Headers,
  key: string | undefined,
  options: DecodeOptions = DEFAULT_DECODE,
  destination?: string | undefined,
): ReceivedEvent {
  const ce = ceAttributes(headers);
  const headerSequence = num(headers[PayqHeader.sequence]);
  const skipBody =
    options.headersFirst === true &&
    options.preferBody !== true &&
    options.timeField === undefined &&
    ce.type !== undefined &&
    ce.subject !== undefined &&
    ce.id !== undefined &&
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
  const structured = body !== undefined && ce.type === undefined && isStructured(body);
  const envelope = structured ? body! : undefined;
  const data = envelope?.['data'];
  const correlate = correlatePath(options, destination);
  const timeField = options.timeField ?? DEFAULT_TIME_FIELD;
  const preferBodyTime = options.preferBody === true || options.timeField !== undefined;

  const bodyType = body ? scalar(getPath(body, options.typeField)) : undefined;
  const ceType = first(ce.type, scalar(envelope?.['type']));
  const type = options.preferBody ? first(bodyType, ceType) : first(ceType, bodyType);

  const bodyPayment = body ? scalar(getPath(body, correlate)) : undefined;
  const ceSubject = first(ce.subject, scalar(envelope?.['subject']));
  // A structured envelope wraps the payload: payq's default field is looked for inside `data` too.
  const dataPayment = structured && !options.preferBody ? scalar(getPath(data, correlate)) : undefined;
  const paymentId = options.preferBody ? first(bodyPayment, ceSubject, key) : first(ceSubject, bodyPayment, dataPayment, key);
  const paymentFromKey = key !== undefined && first(ceSubject, bodyPayment, dataPayment) === undefined;

  const id = first(ce.id, scalar(envelope?.['id']), body && !structured ? scalar(body['id']) : undefined);

  const bodyTime = body ? timeMs(getPath(body, timeField)) : undefined;
  const ceTime = first(timeMs(ce.time), timeMs(envelope?.['time']));
  const dataTime = structured && !preferBodyTime ? timeMs(getPath(data, timeField)) : undefined;
  const occurredMs = preferBodyTime ? first(bodyTime, ceTime) : first(ceTime, bodyTime, dataTime);

  if (problem === undefined && type === undefined) problem = `the message has no event type (no CloudEvents type, no '${options.typeField}' field)`;
  if (problem === undefined && paymentId === undefined) problem = `the message has no correlation id (no CloudEvents subject, no '${correlate}' field)`;
  const seq = first(headerSequence, body?.['sequence'], structured ? getPath(data, 'sequence') : undefined);
  return {
    id,
    type,
    paymentId,
    paymentFromKey,
    sequence: typeof seq === 'number' ? seq : undefined,
    parentId: headers[PayqHeader.parentId],
    siblings: num(headers[PayqHeader.siblings]),
    publishedUs: num(headers[PayqHeader.publishedUs]),
    startUs: num(headers[PayqHeader.startUs]),
    runId: headers[PayqHeader.runId],
    occurredMs,
    body,
    structured,
    problem,
  };
}
