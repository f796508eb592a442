/**
 * Which dead letters a replay takes: `--filter KEY=VALUE` (repeatable; all must match) and the
 * time range `--since` / `--until`. Parsed once into a ReplayFilter; pure and unit-tested.
 *
 *   type=payment_authorized,order_placed   event type is one of these
 *   reason=^permanent                       dead-letter reason matches this regular expression
 *   payment=pay_123,pay_456                 payment (correlation) id is one of these
 *   origin=checkout.orders                  resolved origin is one of these
 *
 * A message's time is when it was dead-lettered (payq-first-failed-at, RabbitMQ x-death time),
 * else its event's own time (CloudEvents time, the body's occurred_at). A message without any
 * time does not match a time range.
 */
import { UsageError } from '../errors.js';
import { parseDurationMs } from './clock.js';

export interface ReplayFilter {
  types?: ReadonlySet<string> | undefined;
  reason?: RegExp | undefined;
  payments?: ReadonlySet<string> | undefined;
  origins?: ReadonlySet<string> | undefined;
  /** Epoch ms, inclusive. */
  sinceMs?: number | undefined;
  /** Epoch ms, exclusive. */
  untilMs?: number | undefined;
}

/** What a filter looks at, for one message. */
export interface FilterSubject {
  type: string | undefined;
  reason: string;
  paymentId: string | undefined;
  origin: string | undefined;
  timeMs: number | undefined;
}

export const FILTER_KEYS = ['type', 'reason', 'payment', 'origin'] as const;

function list(value: string): Set<string> {
  return new Set(value.split(',').map((v) => v.trim()).filter((v) => v !== ''));
}

/** Parses `--filter` values; UsageError names the bad one. */
export function parseFilters(specs: readonly string[], range: { since?: string | undefined; until?: string | undefined } = {}, nowMs = Date.now()): ReplayFilter {
  const filter: ReplayFilter = {};
  for (const spec of specs) {
    const eq = spec.indexOf('=');
    const key = eq === -1 ? spec.trim() : spec.slice(0, eq).trim();
    const value = eq === -1 ? '' : spec.slice(eq + 1).trim();
    if (!(FILTER_KEYS as readonly string[]).includes(key)) {
      throw new UsageError(`--filter '${spec}': unknown key '${key}'`, { hint: `use ${FILTER_KEYS.map((k) => `${k}=…`).join(', ')}; --since/--until for time` });
    }
    if (value === '') throw new UsageError(`--filter '${spec}': no value after '${key}='`);
    const seen = key === 'type' ? filter.types : key === 'reason' ? filter.reason : key === 'payment' ? filter.payments : filter.origins;
    if (seen !== undefined) throw new UsageError(`--filter ${key}=… is given twice`, { hint: 'list several values comma-separated (reason takes one regular expression)' });
    if (key === 'type') filter.types = list(value);
    else if (key === 'payment') filter.payments = list(value);
    else if (key === 'origin') filter.origins = list(value);
    else {
      try {
        filter.reason = new RegExp(value);
      } catch (err) {
        throw new UsageError(`--filter '${spec}': not a regular expression (${(err as Error).message})`);
      }
    }
  }
  if (range.since !== undefined) filter.sinceMs = parseTime(range.since, '--since', nowMs);
  if (range.until !== undefined) filter.untilMs = parseTime(range.until, '--until', nowMs);
  if (filter.sinceMs !== undefined && filter.untilMs !== undefined && filter.sinceMs >= filter.untilMs) {
    throw new UsageError('--since must be before --until');
  }
  return filter;
}

/** An ISO 8601 time (`2024-05-01T12:00:00Z`, `2024-05-01`), or a duration ago (`90m`, `2h`). */
export function parseTime(text: string, flag: string, nowMs: number): number {
  const ago = parseDurationMs(text);
  if (ago !== undefined && /[a-z]$/i.test(text.trim())) return nowMs - ago;
  if (/^\d{4}-\d{2}-\d{2}/.test(text.trim())) {
    const ms = Date.parse(text.trim());
    if (Number.isFinite(ms)) return ms;
  }
  throw new UsageError(`${flag} '${text}': expected an ISO 8601 time (2024-05-01T12:00:00Z) or a duration ago (30m, 2h)`);
}

/** Why the message does not match, or undefined when it does. */
export function filterMismatch(filter: ReplayFilter, m: FilterSubject): string | undefined {
  if (filter.types && (m.type === undefined || !filter.types.has(m.type))) return `type ${m.type ?? '(none)'}`;
  if (filter.reason && !filter.reason.test(m.reason)) return `reason ${m.reason}`;
  if (filter.payments && (m.paymentId === undefined || !filter.payments.has(m.paymentId))) return `payment ${m.paymentId ?? '(none)'}`;
  if (filter.origins && (m.origin === undefined || !filter.origins.has(m.origin))) return `origin ${m.origin ?? '(none)'}`;
  if (filter.sinceMs !== undefined || filter.untilMs !== undefined) {
    if (m.timeMs === undefined) return 'no time';
    if (filter.sinceMs !== undefined && m.timeMs < filter.sinceMs) return 'before --since';
    if (filter.untilMs !== undefined && m.timeMs >= filter.untilMs) return 'not before --until';
  }
  return undefined;
}
