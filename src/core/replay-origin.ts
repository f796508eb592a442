/**
 * What a dead letter says about itself, from its headers alone: where it came from (its origin),
 * why it was dead-lettered, when, and how often payq has replayed it. Four header conventions are
 * read, in this order (the first that names an origin wins):
 *
 * 1. payq's own provenance (`payq-original-destination`, `payq-dlq-reason`, …, written by
 *    `payq worker`);
 * 2. RabbitMQ's dead-lettering: `x-death` (newest entry first; the driver hands it over as JSON
 *    text), then `x-last-death-queue` (3.13+), then `x-first-death-queue`. The queue is the
 *    origin, never the exchange: republishing to an exchange would deliver a second copy to every
 *    other queue bound to it, whose consumers had handled the message already;
 * 3. Kafka Connect's error reporter (`__connect.errors.topic` / `.partition` / `.offset`);
 * 4. Spring Kafka's DeadLetterPublishingRecoverer (`kafka_dlt-original-topic`).
 *
 * Replays are counted in payq's own `payq-replay-count` header on every broker: RabbitMQ 3.13+ no
 * longer updates x-death when a client republishes, so x-death cannot be the loop guard.
 * Pure: unit-tested without a broker.
 */
import type { Headers } from '../drivers/types.js';
import { PayqHeader } from '../events/headers.js';

/**
 * Headers replay-dlq itself writes (besides `payq-replay-count`). Defined once, here: only replay
 * reads or writes them.
 */
export const ReplayHeader = {
  /** On a copy replay-dlq put back at the end of a Kafka DLQ (a message it left): the run's id. */
  leftBy: 'payq-replay-left-by',
  /** On a parked message: why it was parked. */
  parkedReason: 'payq-parked-reason',
} as const;

export type OriginSource = 'to' | 'payq' | 'x-death' | 'x-last-death-queue' | 'x-first-death-queue' | 'kafka-connect' | 'spring';

/** The header (or flag) each source reads the origin from, for messages to users. */
export const ORIGIN_HEADER: Record<OriginSource, string> = {
  to: '--to',
  payq: PayqHeader.originalDestination,
  'x-death': 'x-death',
  'x-last-death-queue': 'x-last-death-queue',
  'x-first-death-queue': 'x-first-death-queue',
  'kafka-connect': '__connect.errors.topic',
  spring: 'kafka_dlt-original-topic',
};

export const CONNECT_PREFIX = '__connect.errors.';
export const SPRING_PREFIX = 'kafka_dlt-';

export interface DeadLetterInfo {
  /** Where the message came from; undefined when no header says. */
  origin: string | undefined;
  via: OriginSource | undefined;
  /** Why it was dead-lettered: payq's reason, RabbitMQ's (rejected, expired, maxlen, delivery_limit), an exception class; 'unknown'. */
  reason: string;
  /** When it was dead-lettered (ISO 8601), where a header says. */
  failedAt: string | undefined;
  /** How often payq replayed it before (payq-replay-count; 0 when absent). */
  replayCount: number;
  /** The origin partition and offset the convention recorded (Kafka Connect, Spring), for listings. */
  originPartition: string | undefined;
  originOffset: string | undefined;
}

interface DeathEntry {
  queue?: unknown;
  reason?: unknown;
  time?: unknown;
  exchange?: unknown;
}

/** x-death as the drivers hand it over: JSON text of an array of tables, newest first. */
export function parseXDeath(text: string | undefined): DeathEntry[] {
  if (text === undefined || text === '') return [];
  try {
    const parsed: unknown = JSON.parse(text);
    return Array.isArray(parsed) ? parsed.filter((e): e is DeathEntry => e !== null && typeof e === 'object') : [];
  } catch {
    return [];
  }
}

const nonEmpty = (v: unknown): string | undefined => (typeof v === 'string' && v.trim() !== '' ? v : undefined);

/** Reads the origin and provenance of a dead letter read from `dlq`. `to` (--to) overrides the origin. */
export function inspectDeadLetter(headers: Headers, dlq: string, to?: string): DeadLetterInfo {
  const deaths = parseXDeath(headers['x-death']);
  // The newest death that did not happen in the DLQ itself (a DLQ with its own DLX, a shovel).
  const death = deaths.find((e) => nonEmpty(e.queue) !== undefined && e.queue !== dlq);
  const notDlq = (q: string | undefined) => (q !== undefined && q !== dlq ? q : undefined);

  const candidates: Array<[OriginSource, string | undefined]> = [
    ['payq', nonEmpty(headers[PayqHeader.originalDestination])],
    ['x-death', nonEmpty(death?.queue)],
    ['x-last-death-queue', notDlq(nonEmpty(headers['x-last-death-queue']))],
    ['x-first-death-queue', notDlq(nonEmpty(headers['x-first-death-queue']))],
    ['kafka-connect', nonEmpty(headers[`${CONNECT_PREFIX}topic`])],
    ['spring', nonEmpty(headers[`${SPRING_PREFIX}original-topic`])],
  ];
  let origin: string | undefined;
  let via: OriginSource | undefined;
  if (to !== undefined) {
    origin = to;
    via = 'to';
  } else {
    const found = candidates.find(([, name]) => name !== undefined);
    if (found) [via, origin] = [found[0], found[1]!.trim()];
  }

  const reason =
    nonEmpty(headers[PayqHeader.dlqReason]) ??
    nonEmpty(death?.reason) ??
    nonEmpty(headers['x-last-death-reason']) ??
    nonEmpty(headers['x-first-death-reason']) ??
    nonEmpty(headers[`${CONNECT_PREFIX}exception.class.name`]) ??
    nonEmpty(headers[`${SPRING_PREFIX}exception-fqcn`]) ??
    'unknown';

  const failedAt = validTime(headers[PayqHeader.firstFailedAt]) ?? validTime(death?.time);
  const count = Number.parseInt(headers[PayqHeader.replayCount] ?? '', 10);
  const connect = via === 'kafka-connect';
  return {
    origin,
    via,
    reason,
    failedAt,
    replayCount: Number.isFinite(count) && count > 0 ? count : 0,
    originPartition: connect ? nonEmpty(headers[`${CONNECT_PREFIX}partition`]) : undefined,
    originOffset: connect ? nonEmpty(headers[`${CONNECT_PREFIX}offset`]) : undefined,
  };
}

function validTime(v: unknown): string | undefined {
  const text = nonEmpty(v);
  if (text === undefined) return undefined;
  const ms = Date.parse(text);
  return Number.isFinite(ms) ? new Date(ms).toISOString() : undefined;
}

/** Headers that describe a dead-lettering, not the message: a replayed message leaves them behind. */
export function isDeadLetterHeader(name: string): boolean {
  return (
    name === PayqHeader.dlqReason ||
    name === PayqHeader.dlqError ||
    name === PayqHeader.originalDestination ||
    name === PayqHeader.attempts ||
    name === PayqHeader.firstFailedAt ||
    name === PayqHeader.stage ||
    name === ReplayHeader.leftBy ||
    name === ReplayHeader.parkedReason ||
    name === 'x-death' ||
    name.startsWith('x-first-death-') ||
    name.startsWith('x-last-death-') ||
    name.startsWith(CONNECT_PREFIX) ||
    name.startsWith(SPRING_PREFIX)
  );
}

/**
 * The headers a replayed message goes back with: the original's, without the dead-letter
 * provenance (the broker or worker writes it afresh if the message fails again), with
 * `payq-replay-count` one up and payq's publish time set to this send (the event id stays).
 */
export function replayHeaders(headers: Headers, previousCount: number, nowUs: number): Headers {
  const out: Headers = {};
  for (const [name, value] of Object.entries(headers)) if (!isDeadLetterHeader(name)) out[name] = value;
  out[PayqHeader.replayCount] = String(previousCount + 1);
  if (out[PayqHeader.publishedUs] !== undefined) out[PayqHeader.publishedUs] = String(Math.round(nowUs));
  return out;
}

/** A parked message keeps its whole history, plus why it was parked. */
export function parkedHeaders(headers: Headers, why: string): Headers {
  const out: Headers = { ...headers };
  delete out[ReplayHeader.leftBy];
  out[ReplayHeader.parkedReason] = why;
  return out;
}

/** `payments.dlq` → `payments`; a DLQ named otherwise is its own base. */
export function dlqBase(dlq: string): string {
  return dlq.endsWith('.dlq') && dlq.length > 4 ? dlq.slice(0, -4) : dlq;
}

export function parkingDestination(base: string): string {
  return `${base}.parked`;
}
