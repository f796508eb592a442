/**
 * `consume`: read messages from destinations, as a tap (observe, take nothing) or as a member of
 * a group (take them), decode them, and hand the ones to show to the caller, one delivery batch
 * at a time. A message is acked only after the caller's `onMessages` resolved (its line was
 * written); what arrives past `--limit` or while stopping is nacked, i.e. given back. Never prints.
 *
 * Ending: by the limit, by an idle timeout (which does not count while the broker is away), by
 * the abort signal (Ctrl-C), by `onMessages` failing (stdout gone), or by the broker staying away
 * past the reconnect timeout (the link is `gone`: the subscription gets nothing more). A handler
 * may not await its own subscription's close() (close waits for the handler), so the handler only
 * signals, and the loop here closes.
 */
import { isUtf8 } from 'node:buffer';
import { brokerAway } from '../drivers/common.js';
import type { Delivery, Driver, Headers } from '../drivers/types.js';
import { decodeEvent, DEFAULT_DECODE, type DecodeOptions, type ReceivedEvent } from '../events/decode.js';
import { systemClock, type Clock } from './clock.js';
import { DEFAULT_START_TIMEOUT_MS } from './defaults.js';
import { awaitDestinations } from './destinations.js';
import { REQUEUE_DEFAULT_PREFETCH, subscribeMode, type ReadMode } from './read-mode.js';

export interface ConsumeOptions {
  destinations: string[];
  /** Join this group and take the messages; undefined observes (a tap) and takes nothing. */
  group?: string | undefined;
  /** How to read (read-mode.ts); wins over `group`. */
  mode?: ReadMode | undefined;
  /** How long to wait for missing destinations before a TopologyError (default 60 s). */
  startTimeoutMs?: number | undefined;
  fromBeginning: boolean;
  /** Only these event types are handed to `onMessages` (the others are still acked); empty: all. */
  types?: ReadonlySet<string> | undefined;
  /** Stop after this many messages were handed out; later deliveries are nacked. */
  limit?: number | undefined;
  /** Stop after this long (ms) without a delivery. */
  idleTimeoutMs?: number | undefined;
  /** Unacked messages held at once (capped at `limit`). */
  prefetch?: number | undefined;
  decode?: DecodeOptions | undefined;
}

/** One received message, decoded. */
export interface ConsumedMessage {
  destination: string;
  key: string | undefined;
  partition: number | undefined;
  offset: string | undefined;
  redelivered: boolean;
  headers: Headers;
  value: Buffer;
  /** Type, payment id and the parsed body when it is a JSON object (see decodeEvent). */
  event: ReceivedEvent;
  /** The parsed JSON body, whatever JSON value it is; undefined when `problem` is set. */
  json: unknown;
  /** Why the body is not JSON ('the body is not JSON', 'the body is empty', '… not valid UTF-8'). */
  problem: string | undefined;
}

export interface ConsumeDeps {
  driver: Driver;
  /**
   * Writes the messages of one delivery batch; they are acked once it resolves. Resolving with a
   * number n says that only the first n were written, a limit the writer keeps (shared with other
   * consumers: consume --procs) being reached: the rest are given back and consume ends ('limit').
   */
  onMessages(messages: ConsumedMessage[]): Promise<void | number>;
  signal?: AbortSignal | undefined;
  clock?: Clock | undefined;
  /** Subscribed: from now on nothing published is missed (a tap sees what is published after this). */
  onReady?: (() => void) | undefined;
  /**
   * True for an `onMessages` failure that is the reader leaving (stdout closed: `| head -1`):
   * consume then ends normally ('output-closed'), the batch given back, instead of throwing.
   */
  isOutputClosed?: ((err: unknown) => boolean) | undefined;
}

export type ConsumeEnd = 'limit' | 'idle' | 'interrupted' | 'output-closed' | 'failed' | 'broker-gone';

export interface TypeCount {
  consumed: number;
  printed: number;
}

export interface ConsumeResult {
  /** Messages read and acked (printed or filtered out). */
  consumed: number;
  /** Messages handed to onMessages (and acked). */
  printed: number;
  /** Read but not of a requested type (acked). */
  filtered: number;
  /** Given back with nack: past the limit, arrived while stopping, or read with --requeue. */
  returned: number;
  /** --requeue: read and handed back when consume ended (counted in `returned` too). */
  requeued: number;
  /** Bodies that are not JSON (printed as problems, never dropped). */
  not_json: number;
  /** Per event type (`(not JSON)` and `(no type)` for what has none). */
  by_type: Record<string, TypeCount>;
  elapsed_s: number;
  ended_by: ConsumeEnd;
  /** True when taken as a tap (no group). */
  tap: boolean;
}

export const NOT_JSON_TYPE = '(not JSON)';
export const NO_TYPE = '(no type)';
const DEFAULT_PREFETCH = 500;
/** How often the run looks whether its broker is gone (LinkStatus `gone`). */
const LINK_CHECK_MS = 250;
export { DEFAULT_START_TIMEOUT_MS };
/** The group name passed with a tap; drivers ignore it (a tap gets a group or queue of its own). */
const TAP_GROUP = 'payq-consume-tap';

const JSON_NOT_OBJECT = 'the body is JSON but not an object';

/** Decodes one delivery. Never throws: a body that is not JSON is reported in `problem`. */
export function decodeDelivery(d: Delivery, decode: DecodeOptions = DEFAULT_DECODE): ConsumedMessage {
  const event = decodeEvent(d.value, d.headers, d.key, decode, d.destination);
  let json: unknown = event.body;
  let problem: string | undefined;
  if (!isUtf8(d.value)) {
    // JSON text is UTF-8; what parsed here parsed replacement characters, not the bytes sent.
    json = undefined;
    problem = 'the body is not JSON (not valid UTF-8)';
  } else if (event.body === undefined) {
    if (event.problem === JSON_NOT_OBJECT) json = JSON.parse(d.value.toString('utf8')) as unknown;
    else problem = event.problem ?? 'the body is not JSON';
  }
  return {
    destination: d.destination,
    key: d.key,
    partition: d.partition,
    offset: d.offset,
    redelivered: d.redelivered,
    headers: d.headers,
    value: d.value,
    event,
    json,
    problem,
  };
}

export function typeOf(m: ConsumedMessage): string {
  if (m.problem !== undefined) return NOT_JSON_TYPE;
  return m.event.type ?? NO_TYPE;
}

/** Counts per type, the most consumed first. */
function sortedByType(byType: Map<string, TypeCount>): Record<string, TypeCount> {
  return Object.fromEntries([...byType.entries()].sort((a, b) => b[1].consumed - a[1].consumed || a[0].localeCompare(b[0])));
}

/**
 * The runs of several members of one group (consume --procs) as one: counts added, the longest
 * elapsed time, ended as `endedBy` says (the caller knows why it stopped them all).
 */
export function mergeConsumeResults(parts: ConsumeResult[], endedBy: ConsumeEnd): ConsumeResult {
  const sum = (f: (r: ConsumeResult) => number) => parts.reduce((n, r) => n + f(r), 0);
  const byType = new Map<string, TypeCount>();
  for (const p of parts) {
    for (const [type, n] of Object.entries(p.by_type)) {
      const into = byType.get(type) ?? { consumed: 0, printed: 0 };
      byType.set(type, { consumed: into.consumed + n.consumed, printed: into.printed + n.printed });
    }
  }
  return {
    consumed: sum((r) => r.consumed),
    printed: sum((r) => r.printed),
    filtered: sum((r) => r.filtered),
    returned: sum((r) => r.returned),
    requeued: sum((r) => r.requeued),
    not_json: sum((r) => r.not_json),
    by_type: sortedByType(byType),
    elapsed_s: Math.max(...parts.map((r) => r.elapsed_s)),
    ended_by: endedBy,
    tap: parts.every((r) => r.tap),
  };
}

export async function consume(options: ConsumeOptions, deps: ConsumeDeps): Promise<ConsumeResult> {
  const { driver, signal } = deps;
  const clock = deps.clock ?? systemClock;
  const decode = options.decode ?? DEFAULT_DECODE;
  const types = options.types && options.types.size > 0 ? options.types : undefined;
  const limit = options.limit;
  const mode: ReadMode = options.mode ?? (options.group === undefined ? { kind: 'tap' } : { kind: 'group', group: options.group, requeue: false });
  const tap = mode.kind === 'tap' || mode.kind === 'exchange';
  const requeue = mode.kind === 'group' && mode.requeue;
  const prefetch = Math.max(1, Math.min(options.prefetch ?? (requeue ? REQUEUE_DEFAULT_PREFETCH : DEFAULT_PREFETCH), limit ?? Infinity));
  /** --requeue: what was read, held unacked until the end (see read-mode.ts). */
  const held: Delivery[] = [];

  let consumed = 0;
  let printed = 0;
  let filtered = 0;
  let returned = 0;
  let notJson = 0;
  const byType = new Map<string, TypeCount>();

  const stop = new AbortController();
  let endedBy: ConsumeEnd | undefined;
  let failure: unknown;
  const requestStop = (why: ConsumeEnd, err?: unknown) => {
    if (endedBy !== undefined) return;
    endedBy = why;
    failure = err;
    stop.abort();
  };
  const onAbort = () => requestStop('interrupted');

  let busy = 0;
  let lastActivityUs = clock.nowUs();

  const giveBack = (deliveries: Iterable<Delivery>) => {
    for (const d of deliveries) {
      d.nack();
      returned++;
    }
  };

  const handler = async (deliveries: Delivery[]): Promise<void> => {
    busy++;
    lastActivityUs = clock.nowUs();
    try {
      if (stop.signal.aborted) return giveBack(deliveries);
      const room = limit === undefined ? Infinity : limit - printed;
      let show: ConsumedMessage[] = [];
      let taken: Delivery[] = [];
      let seen: ConsumedMessage[] = [];
      let i = 0;
      for (; i < deliveries.length && show.length < room; i++) {
        const d = deliveries[i]!;
        const m = decodeDelivery(d, decode);
        taken.push(d);
        seen.push(m);
        if (types === undefined || (m.problem === undefined && m.event.type !== undefined && types.has(m.event.type))) show.push(m);
      }
      let beyond = deliveries.slice(i);
      let written: number | void = undefined;
      try {
        if (show.length > 0) written = await deps.onMessages(show);
      } catch (err) {
        giveBack(deliveries);
        requestStop(deps.isOutputClosed?.(err) ? 'output-closed' : 'failed', err);
        return;
      }
      if (typeof written === 'number' && written < show.length) {
        // The writer's limit: what follows the last line written goes back.
        const cut = seen.indexOf(show[written]!);
        beyond = [...taken.slice(cut), ...beyond];
        taken = taken.slice(0, cut);
        seen = seen.slice(0, cut);
        show = show.slice(0, written);
        requestStop('limit');
      }
      // Counted only now: what could not be written was not consumed.
      if (requeue) held.push(...taken);
      else for (const d of taken) d.ack();
      giveBack(beyond);
      const shown = new Set(show);
      for (const m of seen) {
        const type = typeOf(m);
        let count = byType.get(type);
        if (count === undefined) byType.set(type, (count = { consumed: 0, printed: 0 }));
        count.consumed++;
        if (m.problem !== undefined) notJson++;
        if (shown.has(m)) count.printed++;
        else filtered++;
      }
      consumed += taken.length;
      printed += show.length;
      if (limit !== undefined && printed >= limit) requestStop('limit');
    } finally {
      busy--;
      lastActivityUs = clock.nowUs();
    }
  };

  const startUs = clock.nowUs();
  if (signal?.aborted) requestStop('interrupted');
  signal?.addEventListener('abort', onAbort, { once: true });
  try {
    if (limit === 0) requestStop('limit');
    // Readers never create: what is missing is waited for, then reported (destinations.ts).
    const waited =
      mode.kind === 'exchange'
        ? undefined
        : await awaitDestinations(driver, { required: options.destinations, startTimeoutMs: options.startTimeoutMs ?? DEFAULT_START_TIMEOUT_MS, clock, signal });
    if (!stop.signal.aborted) {
      const subscription = await driver.subscribe(
        {
          destinations: mode.kind === 'exchange' ? [] : options.destinations,
          // Destinations created while consume waited hold only what was written since it started.
          fromBeginning: options.fromBeginning || (waited?.createdWhileWaiting === true && driver.capabilities.replayFromBeginning),
          prefetch,
          ...subscribeMode(mode, TAP_GROUP),
        },
        handler,
      );
      try {
        // The idle clock starts once subscribed: joining a Kafka group can take seconds.
        lastActivityUs = clock.nowUs();
        deps.onReady?.();
        while (!stop.signal.aborted) {
          const link = driver.link();
          if (link.gone) {
            requestStop('broker-gone');
            break;
          }
          // A broker away is not idleness: the idle clock counts from when it is back (README "Failure drills").
          if (brokerAway(link)) lastActivityUs = clock.nowUs();
          const idleMs = options.idleTimeoutMs ?? Infinity;
          const quietMs = (clock.nowUs() - lastActivityUs) / 1000;
          if (busy === 0 && quietMs >= idleMs) {
            requestStop('idle');
            break;
          }
          await clock.sleep(Math.min(LINK_CHECK_MS, busy > 0 ? idleMs : idleMs - quietMs), stop.signal);
        }
      } finally {
        // --requeue: everything read goes back now, each message once (read-mode.ts).
        giveBack(held.splice(0));
        await subscription.close();
      }
    }
  } finally {
    signal?.removeEventListener('abort', onAbort);
  }
  if (endedBy === 'failed') throw failure;

  const elapsedS = Math.max(0, clock.nowUs() - startUs) / 1e6;
  return {
    consumed,
    printed,
    filtered,
    returned,
    requeued: requeue ? consumed : 0,
    not_json: notJson,
    by_type: sortedByType(byType),
    elapsed_s: Math.round(elapsedS * 1000) / 1000,
    ended_by: endedBy ?? 'interrupted',
    tap,
  };
}
