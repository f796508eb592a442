/**
 * `trace`: taps every destination of a pipeline and rebuilds each payment from what passes:
 * its timeline, per-hop and end-to-end latency, and its class (completed, declined, refunded,
 * dead-lettered, stuck), with duplicates, out-of-order events and missing steps counted.
 * Only in-flight payments are held in memory; finished ones become counters and histograms.
 * Returns a TraceResult; never prints.
 */
import type { Delivery, Driver } from '../drivers/types.js';
import { decodeEvent, type DecodeOptions } from '../events/decode.js';
import { PayqHeader } from '../events/headers.js';
import type { Scenario } from '../events/scenario.js';
import { createLatencyHistogram, recordUs, summarize, type LatencyHistogram, type LatencySummary } from '../metrics/histogram.js';
import type { Clock } from './clock.js';
import { awaitDestinations } from './destinations.js';
import { UsageError } from '../errors.js';
import { REQUEUE_DEFAULT_PREFETCH, subscribeMode, type ReadMode } from './read-mode.js';
import { brokerAway } from '../drivers/common.js';

export const DLQ_SUFFIX = '.dlq';

export interface TraceOptions {
  /** With a scenario, trace knows which events end a payment and how to name its class. */
  scenario: Scenario | undefined;
  destinations: string[];
  decode: DecodeOptions;
  /** A payment with no new event for this long is stuck. */
  stuckAfterMs: number;
  /**
   * What every payment must reach, within `withinMs` of its start: each item is an event type, or
   * alternatives joined by `|` (`order_completed|payment_declined`), of which one must be seen.
   */
  expect: string[] | undefined;
  withinMs: number | undefined;
  /** Keep the full timeline of this payment. */
  payment: string | undefined;
  /** Only events of this run (payq-run-id). */
  runId: string | undefined;
  fromBeginning: boolean;
  /** Stop after this long without any event (and nothing left in flight, or all of it stuck). */
  idleTimeoutMs: number | undefined;
  /**
   * With --expect: stop sooner, after this long without any event, once every payment in flight
   * has been judged (passed or failed): none is still waiting for an event that could change it.
   */
  judgedIdleTimeoutMs?: number | undefined;
  /** With an idle timeout: how long to wait for the first event before giving up. */
  startTimeoutMs?: number | undefined;
  durationMs: number | undefined;
  /** Stop once this many payments finished (tests, bench). */
  untilFinished: number | undefined;
  prefetch?: number;
  /** How to read (read-mode.ts); default a tap. Only a tap also reads each destination's DLQ. */
  mode?: ReadMode | undefined;
  /**
   * Trace only shard `index` of `count` of the payments (README "Tracer shards"): on a driver
   * with partitions, the partitions p with p mod count = index − 1 (a payment's events share its
   * key, so its partition number); elsewhere every event is read and those of payments whose id
   * hashes to another shard are skipped. The shards' figures add up to one tracer's.
   */
  shard?: TraceShard | undefined;
}

export interface TraceShard {
  index: number;
  count: number;
}

/** A stable hash of a payment id (FNV-1a, 32 bits), the same in every process and on every machine. */
export function paymentHash(paymentId: string): number {
  let h = 0x811c9dc5;
  for (let i = 0; i < paymentId.length; i++) {
    h ^= paymentId.charCodeAt(i);
    h = Math.imul(h, 0x01000193);
  }
  return h >>> 0;
}

/** The shard (1 … count) whose tracer follows this payment on a broker without partitions. */
export function paymentShard(paymentId: string, count: number): number {
  return (paymentHash(paymentId) % count) + 1;
}

export interface TraceDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: TraceProgress) => void) | undefined;
  /** Called once the taps are subscribed: events published from now on will be seen. */
  onReady?: (() => void) | undefined;
  /** Hands out the live latency histograms once (for --metrics-port); read them, never write. */
  onHistograms?: ((h: LiveTraceHistograms) => void) | undefined;
}

export interface LiveTraceHistograms {
  endToEnd: LatencyHistogram;
  hops: ReadonlyMap<string, LatencyHistogram>;
}

export interface TraceProgress {
  events: number;
  inFlight: number;
  finished: number;
  elapsedMs: number;
}

export interface TimelineEntry {
  at: string;
  /** The event's business time (CloudEvents time or --time-field), when it has one. */
  occurred_at: string | null;
  offset_ms: number;
  destination: string;
  type: string;
  event_id: string | undefined;
  dead_lettered: boolean;
  duplicate: boolean;
}

export interface PaymentIssue {
  payment_id: string;
  reason: string;
  last_type: string | undefined;
  types: string[];
  age_s: number;
}

export interface TraceResult {
  payments: {
    seen: number;
    finished: number;
    in_flight: number;
    stuck: number;
    by_class: Record<string, number>;
  };
  events: {
    seen: number;
    /** Published before trace subscribed (read with --from-beginning): no transit for them. */
    from_history: number;
    /** Events that carry no correlation id (ce_subject or the --correlate field): tied by their message key. */
    correlated_by_key: number;
    duplicates: number;
    out_of_order: number;
    missing_steps: number;
    undecodable: number;
    other_runs: number;
    /** --shard on a broker without partitions: events of payments another shard traces, skipped. */
    other_shards: number;
  };
  latency: {
    /** Published → seen by trace, per event published after trace subscribed (none from history). */
    transit: LatencySummary;
    /** Payment's start → its last event's publish, per finished payment. */
    end_to_end: LatencySummary;
    /** Parent published → child published, by the stage that emitted the child. */
    hops: Record<string, LatencySummary>;
  };
  expectation:
    | { types: string[]; within_ms: number | undefined; passed: number; failed: number; failures: PaymentIssue[]; no_events: boolean }
    | undefined;
  stuck: PaymentIssue[];
  timeline: TimelineEntry[] | undefined;
  undecodable_samples: string[];
  elapsed_s: number;
  interrupted: boolean;
  /**
   * Stopped because the broker stayed away longer than the reconnect timeout: the payments in
   * flight were not judged (neither passed, failed nor stuck: their events may still come).
   */
  broker_gone: boolean;
  histograms: { transit: LatencyHistogram; endToEnd: LatencyHistogram; hops: Map<string, LatencyHistogram> };
}

interface SeenEvent {
  id: string;
  type: string;
  destination: string;
  /** Its sequence, when it counts for the order check (not for events first seen in a DLQ). */
  orderSeq: number | undefined;
  parentId: string | undefined;
  siblings: number | undefined;
  publishedUs: number | undefined;
  /** When trace saw it first (wall clock). */
  seenUs: number;
  /**
   * The highest round seen on its destination and in its DLQ; -1: none yet. A round is one pass
   * through its destination: 0 for the original, k for the k-th replay (payq-replay-count, which
   * its dead letter carries too).
   */
  destRound: number;
  dlqRound: number;
  /** All the events its handling emitted have been seen. */
  hasChild: boolean;
  children: number;
}

interface PaymentState {
  id: string;
  /** When trace saw its first and its latest event (wall clock: quietness, age). */
  firstUs: number;
  lastUs: number;
  /**
   * The payment's own clock, from its events' headers: its start (payq-start-us, else the earliest
   * publish) and its latest publish. Latency and --within use these, so reading history gives the
   * figures watching live gives.
   */
  startUs: number | undefined;
  endUs: number | undefined;
  /** Some of its events were published before trace subscribed. */
  fromHistory: boolean;
  /**
   * In arrival order. payq's payments have a handful of events (64 at most, by the generator's
   * and the worker's guard), so an array scanned by id beats a Map and keeps what trace holds
   * per payment small. (Every new event scans them anyway: settled(), the orphan check.)
   */
  events: SeenEvent[];
  /** Child events whose parent has not been seen (yet). */
  orphans: number;
  /** A parent was inferred from the scenario: wait a little before calling it finished. */
  inferred: boolean;
  judged: boolean;
}

/** Its latest round ended in its DLQ (and was not replayed since). */
function deadLettered(e: SeenEvent): boolean {
  return e.dlqRound >= 0 && e.dlqRound >= e.destRound;
}

function findEvent(p: PaymentState, id: string): SeenEvent | undefined {
  const events = p.events;
  for (let i = 0; i < events.length; i++) if (events[i]!.id === id) return events[i];
  return undefined;
}

function typesOf(p: PaymentState): Set<string> {
  const types = new Set<string>();
  for (const e of p.events) types.add(e.type);
  return types;
}

function hasType(p: PaymentState, type: string): boolean {
  for (const e of p.events) if (e.type === type) return true;
  return false;
}

/** The highest sequence of the payment's events on `destination` that count for the order check. */
function maxSequence(p: PaymentState, destination: string): number | undefined {
  let max: number | undefined;
  for (const e of p.events) {
    if (e.orderSeq !== undefined && e.destination === destination && (max === undefined || e.orderSeq > max)) max = e.orderSeq;
  }
  return max;
}

const MAX_LISTED = 50;
/**
 * How long a payment must be quiet before it is taken as finished when its structure is not known
 * for sure: parents inferred from the scenario, a dead letter whose original is not seen yet, or
 * a child whose parent is not seen yet (a tap started mid-run, or destinations read unevenly).
 */
const SETTLE_MS = 1000;
/**
 * With --from-beginning, trace is reading history until no event published before it subscribed
 * has come for this long: until then no payment is finished by a timer, judged stuck or past
 * --within, since a parent on another destination may still be on its way.
 */
const HISTORY_QUIET_MS = 3000;
/** Finished payment ids remembered to recognise late duplicates: at most this many, at least 3/4 of it. */
const RECENT_FINISHED = 100_000;
const RECENT_GENERATIONS = 4;

/**
 * Payments finished with missing steps: the ids of the events seen, and of the missing parents
 * with how many seen events wait for each. A parent that comes later after all (a tap catching up
 * unevenly after a broker restart reads one partition seconds after another) is a late step, not
 * a missing one. Kept in generations like RecentIds, and only for such payments.
 */
class LateParents {
  private readonly generations: Map<string, { seen: Set<string>; waiting: Map<string, number> }>[] = [new Map()];
  add(paymentId: string, seen: Set<string>, waiting: Map<string, number>): void {
    let newest = this.generations[this.generations.length - 1]!;
    if (newest.size >= RECENT_FINISHED / RECENT_GENERATIONS) {
      if (this.generations.length === RECENT_GENERATIONS) this.generations.shift();
      this.generations.push((newest = new Map()));
    }
    newest.set(paymentId, { seen, waiting });
  }
  /**
   * A late event of a finished payment: the change to its missing steps (0 when it is not one of
   * them: a duplicate). Its own parent, when not seen either, is missing in its place.
   */
  arrived(paymentId: string, eventId: string, parentId: string | undefined): number {
    let entry: { seen: Set<string>; waiting: Map<string, number> } | undefined;
    for (let i = this.generations.length - 1; i >= 0 && !entry; i--) entry = this.generations[i]!.get(paymentId);
    const children = entry?.waiting.get(eventId);
    if (!entry || children === undefined) return 0;
    entry.waiting.delete(eventId);
    entry.seen.add(eventId);
    let change = -children;
    if (parentId !== undefined && !entry.seen.has(parentId)) {
      entry.waiting.set(parentId, (entry.waiting.get(parentId) ?? 0) + 1);
      change++;
    }
    return change;
  }
}

/** `--expect` items: an event type, or alternatives joined by `|`. */
export function parseExpectation(items: readonly string[]): string[][] {
  return items.map((item) => item.split('|').map((t) => t.trim()));
}

/** Every event type a scenario can produce: its entry and every event a stage emits. */
export function producibleTypes(scenario: Scenario): string[] {
  const types = new Set<string>([scenario.entry]);
  for (const stage of scenario.stages) for (const o of stage.outcomes) for (const t of o.events) types.add(t);
  return [...types];
}

/** The expected types the scenario can never produce (with a scenario, --expect on them is a usage error). */
export function unproducibleExpected(scenario: Scenario, expect: readonly string[]): string[] {
  const producible = new Set(producibleTypes(scenario));
  return [...new Set(parseExpectation(expect).flat())].filter((t) => !producible.has(t));
}

/**
 * The ids of recently finished payments, in generations: when the newest is full, the oldest is
 * dropped whole. (Deleting a Set's oldest entry one by one leaves holes that every later
 * `values().next()` walks over again.) Four generations keep the count between 75% and 100% of
 * the bound, so trace's memory stays low however long it runs.
 */
class RecentIds {
  private readonly generations: Set<string>[] = [new Set()];
  add(id: string): void {
    let newest = this.generations[this.generations.length - 1]!;
    if (newest.size >= RECENT_FINISHED / RECENT_GENERATIONS) {
      if (this.generations.length === RECENT_GENERATIONS) this.generations.shift();
      this.generations.push((newest = new Set()));
    }
    newest.add(id);
  }
  has(id: string): boolean {
    for (let i = this.generations.length - 1; i >= 0; i--) if (this.generations[i]!.has(id)) return true;
    return false;
  }
}

export async function trace(options: TraceOptions, deps: TraceDeps): Promise<TraceResult> {
  const { driver, clock, signal } = deps;
  const scenario = options.scenario;
  const startedUs = clock.nowUs();
  const inFlight = new Map<string, PaymentState>();
  const recentFinished = new RecentIds();
  const lateParents = new LateParents();
  const byClass: Record<string, number> = {};
  for (const name of scenario?.classNames ?? []) byClass[name] = 0;
  byClass['dead-lettered'] = 0;
  const transit = createLatencyHistogram();
  const endToEnd = createLatencyHistogram();
  const hops = new Map<string, LatencyHistogram>();
  deps.onHistograms?.({ endToEnd, hops });
  const stuck: PaymentIssue[] = [];
  const expectFailures: PaymentIssue[] = [];
  const undecodableSamples: string[] = [];
  const timeline: (TimelineEntry & { atUs: number })[] | undefined = options.payment ? [] : undefined;
  const expected = options.expect ? parseExpectation(options.expect) : undefined;
  let seenPayments = 0;
  let finished = 0;
  let stuckCount = 0;
  let expectPassed = 0;
  let expectFailed = 0;
  const counts = { seen: 0, from_history: 0, correlated_by_key: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0, other_runs: 0, other_shards: 0 };
  let lastEventUs: number | undefined;
  /** When trace subscribed: events published before it are history. */
  let readyUs = startedUs;
  /** When the latest history event arrived (--from-beginning). */
  let lastHistoryUs: number | undefined;
  /**
   * History was caught up once: from then on an event without a publish time is taken as live
   * (otherwise a steady stream of users' events would keep every timer off for good).
   */
  let caughtUp = false;

  // Trace needs no body field of events whose headers say everything (payq's own): their bodies
  // are not parsed. A payq event with a broken body still counts as an event here; the worker
  // that consumes it dead-letters it, and trace sees that.
  const decode: DecodeOptions = { ...options.decode, headersFirst: true };
  // Sharded: by partition where the driver has partitions (it reads only the shard's), else here.
  const partitionShard = options.shard !== undefined && options.shard.count > 1 && driver.capabilities.partitions ? options.shard : undefined;
  const hashShard = options.shard !== undefined && options.shard.count > 1 && !driver.capabilities.partitions ? options.shard : undefined;
  const isTerminal = (type: string) => scenario?.terminalTypes.has(type) ?? false;

  const inferParent = (p: PaymentState, type: string): string | undefined => {
    for (const ev of p.events) {
      if (ev.hasChild || deadLettered(ev)) continue;
      if (scenario!.stageFor.get(ev.type)?.outcomes.some((o) => o.events.includes(type))) return ev.id;
    }
    return undefined;
  };

  const issue = (p: PaymentState, reason: string): PaymentIssue => {
    // Its latest event on its own clock: history may bring a child before its parent.
    let last: SeenEvent | undefined;
    for (const e of p.events) if (!last || (e.publishedUs ?? e.seenUs) >= (last.publishedUs ?? last.seenUs)) last = e;
    return { payment_id: p.id, reason, last_type: last?.type, types: [...typesOf(p)], age_s: Math.round((clock.nowUs() - p.firstUs) / 1e5) / 10 };
  };

  const judge = (p: PaymentState, reached: boolean, reason: string) => {
    if (!expected || p.judged) return;
    p.judged = true;
    if (reached) expectPassed++;
    else {
      expectFailed++;
      if (expectFailures.length < MAX_LISTED) expectFailures.push(issue(p, reason));
    }
  };

  /** The payment's start on its own clock; the first sighting for events without timing headers. */
  const startOf = (p: PaymentState) => p.startUs ?? p.firstUs;

  /** The expected items the payment has not reached (an item is met by any of its alternatives). */
  const missingExpected = (p: PaymentState): string[] => expected!.filter((alts) => !alts.some((t) => hasType(p, t))).map((alts) => alts.join('|'));

  /**
   * When the payment reached the last of the expected items, on its own clock: for each item the
   * earliest publish of an event that meets it, the latest of those. Undefined if one is missing.
   */
  const metAtUs = (p: PaymentState): number | undefined => {
    let at = -Infinity;
    for (const alts of expected!) {
      let first = Infinity;
      for (const e of p.events) if (alts.includes(e.type)) first = Math.min(first, e.publishedUs ?? e.seenUs);
      if (first === Infinity) return undefined;
      at = Math.max(at, first);
    }
    return at;
  };

  /** Every expected item seen, and within --within of the payment's start. */
  const expectationMet = (p: PaymentState): boolean => {
    const at = metAtUs(p);
    return at !== undefined && (options.withinMs === undefined || at - startOf(p) <= options.withinMs * 1000);
  };

  const notMetReason = (p: PaymentState, how: string): string => {
    const missing = missingExpected(p);
    return missing.length > 0 ? `${how} without ${missing.join(', ')}` : `reached ${options.expect!.join(', ')} later than ${options.withinMs! / 1000}s after its start`;
  };

  /**
   * Some event was seen only as a dead letter so far: its own copy may still be on the way (trace
   * reads each destination on its own). Such a payment is finished once it has been quiet a moment,
   * so the late copy is not taken for a duplicate of a finished payment.
   */
  const awaitingOriginal = (p: PaymentState): boolean => {
    for (const e of p.events) if (e.destRound < 0) return true;
    return false;
  };

  /** With a scenario: every non-terminal event has a child or was dead-lettered. */
  const settled = (p: PaymentState): boolean => {
    if (!scenario) return false;
    for (const e of p.events) {
      if (!deadLettered(e) && !e.hasChild && !isTerminal(e.type)) return false;
    }
    return true;
  };

  /**
   * Settled and nothing can still be on its way: every event's parent was seen (a child read
   * before its parent, as from history, leaves the payment open), parents came from headers, and
   * every dead letter's original was seen.
   */
  const complete = (p: PaymentState): boolean => p.orphans === 0 && !p.inferred && !awaitingOriginal(p) && settled(p);

  const finish = (p: PaymentState) => {
    inFlight.delete(p.id);
    recentFinished.add(p.id);
    finished++;
    let endedInDlq = false;
    for (const e of p.events) if (deadLettered(e) && !e.hasChild) endedInDlq = true;
    const cls = endedInDlq ? 'dead-lettered' : scenario ? (scenario.classify(typesOf(p)) ?? 'unclassified') : 'ended';
    byClass[cls] = (byClass[cls] ?? 0) + 1;
    counts.missing_steps += p.orphans;
    if (p.orphans > 0) {
      const seen = new Set(p.events.map((e) => e.id));
      const waiting = new Map<string, number>();
      for (const e of p.events) if (e.parentId !== undefined && !seen.has(e.parentId)) waiting.set(e.parentId, (waiting.get(e.parentId) ?? 0) + 1);
      if (waiting.size > 0) lateParents.add(p.id, seen, waiting);
    }
    // On the payment's own clock; a payment without timing headers only when it was watched live.
    if (p.startUs !== undefined && p.endUs !== undefined) recordUs(endToEnd, p.endUs - p.startUs);
    else if (!p.fromHistory) recordUs(endToEnd, p.lastUs - p.firstUs);
    // Every expected item must have been seen for the payment, whatever branch it took: a
    // declined payment fails `--expect order_completed` (README: `payq trace`).
    if (expected) judge(p, expectationMet(p), notMetReason(p, endedInDlq ? 'dead-lettered' : 'ended'));
  };

  const onEvent = (d: Delivery, nowUs: number) => {
    const isDlq = d.destination.endsWith(DLQ_SUFFIX);
    const destination = isDlq ? d.destination.slice(0, -DLQ_SUFFIX.length) : d.destination;
    const e = decodeEvent(d.value, d.headers, d.key, decode, d.destination);
    if (e.problem !== undefined || e.type === undefined || e.paymentId === undefined) {
      // Every hash shard reads it: the first one counts it, so the shards add up to one tracer.
      if (hashShard !== undefined && hashShard.index !== 1) return;
      counts.undecodable++;
      if (undecodableSamples.length < 10) undecodableSamples.push(`${d.destination}: ${e.problem ?? 'unreadable'}`);
      return;
    }
    if (hashShard !== undefined && paymentShard(e.paymentId, hashShard.count) !== hashShard.index) {
      counts.other_shards++;
      return;
    }
    if (options.runId !== undefined && e.runId !== options.runId) {
      counts.other_runs++;
      return;
    }
    counts.seen++;
    // Published before trace subscribed (or, reading history, of unknown age): history.
    const fromHistory = options.fromBeginning && (e.publishedUs === undefined ? !caughtUp : e.publishedUs < readyUs);
    if (fromHistory) {
      counts.from_history++;
      lastHistoryUs = nowUs;
    } else if (e.publishedUs !== undefined) recordUs(transit, nowUs - e.publishedUs);
    if (e.paymentFromKey) counts.correlated_by_key++;
    const eventId = e.id ?? `${destination}:${d.partition ?? ''}:${d.offset ?? counts.seen}`;
    const atUs = e.publishedUs ?? nowUs;
    const onTimeline = (duplicate: boolean) => {
      if (timeline && e.paymentId === options.payment) {
        timeline.push({
          atUs,
          at: '',
          occurred_at: e.occurredMs === undefined ? null : new Date(e.occurredMs).toISOString(),
          offset_ms: 0,
          destination: d.destination,
          type: e.type!,
          event_id: e.id,
          dead_lettered: isDlq,
          duplicate,
        });
      }
    };
    let p = inFlight.get(e.paymentId);
    if (!p) {
      if (recentFinished.has(e.paymentId)) {
        // A step the payment was finished without, come late after all; or else a late copy.
        const change = isDlq ? 0 : lateParents.arrived(e.paymentId, eventId, e.parentId);
        if (change !== 0) {
          counts.missing_steps += change;
          onTimeline(false);
          return;
        }
        counts.duplicates++;
        onTimeline(true);
        return;
      }
      p = {
        id: e.paymentId,
        firstUs: nowUs,
        lastUs: nowUs,
        startUs: undefined,
        endUs: undefined,
        fromHistory: false,
        events: [],
        orphans: 0,
        inferred: false,
        judged: false,
      };
      inFlight.set(e.paymentId, p);
      seenPayments++;
    }
    p.lastUs = nowUs;
    if (fromHistory) p.fromHistory = true;
    if (e.startUs !== undefined) p.startUs = e.startUs;
    else if (e.publishedUs !== undefined && (p.startUs === undefined || e.publishedUs < p.startUs)) p.startUs = e.publishedUs;
    if (e.publishedUs !== undefined && (p.endUs === undefined || e.publishedUs > p.endUs)) p.endUs = e.publishedUs;
    const known = findEvent(p, eventId);
    const round = Number(d.headers[PayqHeader.replayCount] ?? 0) || 0;
    let duplicate = false;
    if (known) {
      // Trace reads each destination on its own, so a dead letter may be seen before the event
      // it copies: rounds, not arrival order, say whether the event is in the DLQ or back in play.
      if (isDlq ? round > known.dlqRound : round > known.destRound) {
        if (isDlq) known.dlqRound = round;
        else known.destRound = round;
      } else {
        counts.duplicates++;
        duplicate = true;
      }
    } else {
      // The order check: a sequence below the highest one seen on the same destination.
      const orderSeq = e.sequence !== undefined && !isDlq ? e.sequence : undefined;
      if (orderSeq !== undefined) {
        const max = maxSequence(p, destination);
        if (max !== undefined && orderSeq < max) counts.out_of_order++;
      }
      const seen: SeenEvent = {
        id: eventId,
        type: e.type,
        destination,
        orderSeq,
        parentId: e.parentId,
        siblings: e.siblings,
        publishedUs: e.publishedUs,
        seenUs: nowUs,
        destRound: isDlq ? -1 : round,
        dlqRound: isDlq ? round : -1,
        hasChild: false,
        children: 0,
      };
      // Events payq did not write have no parent header: the scenario says which earlier event
      // of the payment could have caused this one.
      const parentId = e.parentId ?? (scenario ? inferParent(p, e.type) : undefined);
      if (e.parentId === undefined && parentId !== undefined) p.inferred = true;
      if (parentId !== undefined) {
        const parent = findEvent(p, parentId);
        if (parent) {
          parent.children++;
          if (parent.children >= (e.siblings ?? 1)) parent.hasChild = true;
          if (parent.publishedUs !== undefined && e.publishedUs !== undefined) recordHop(parent, e.publishedUs);
        } else p.orphans++;
      }
      // A parent seen after its children settles those orphans.
      for (const other of p.events) {
        if (other.parentId === eventId) {
          seen.children++;
          p.orphans--;
          if (seen.children >= (other.siblings ?? 1)) seen.hasChild = true;
          if (other.publishedUs !== undefined && seen.publishedUs !== undefined) recordHop(seen, other.publishedUs);
        }
      }
      p.events.push(seen);
    }
    onTimeline(duplicate);
    if (expected && !p.judged && expectationMet(p)) judge(p, true, '');
    if (complete(p) || (!scenario && p.judged)) finish(p);
  };

  /** Parent published → child published, by the stage that emitted the child. */
  const recordHop = (parent: SeenEvent, childPublishedUs: number) => {
    const stage = scenario?.stageFor.get(parent.type)?.name ?? parent.type;
    let h = hops.get(stage);
    if (!h) hops.set(stage, (h = createLatencyHistogram()));
    recordUs(h, childPublishedUs - parent.publishedUs!);
  };

  /** Still reading history: a parent on another destination may be on its way. */
  const readingHistory = (nowUs: number): boolean => {
    if (lastHistoryUs === undefined) return false;
    if (nowUs - lastHistoryUs < HISTORY_QUIET_MS * 1000) return true;
    caughtUp = true;
    return false;
  };

  /** With --expect: no payment in flight still waits for its verdict. */
  const everyPaymentJudged = (): boolean => {
    if (!expected) return false;
    for (const p of inFlight.values()) if (!p.judged) return false;
    return true;
  };

  /** Payments past --within, and payments without progress for --stuck-after. */
  const sweep = (nowUs: number, final: boolean) => {
    if (!final && readingHistory(nowUs)) return;
    for (const p of inFlight.values()) {
      if (expected && !p.judged && options.withinMs !== undefined && nowUs - startOf(p) > options.withinMs * 1000) {
        const missing = missingExpected(p);
        judge(p, false, missing.length > 0 ? `did not reach ${missing.join(', ')} within ${options.withinMs / 1000}s` : notMetReason(p, 'in time'));
      }
      // Inferred parents give no sibling counts, a dead letter's original or a child's parent may
      // be late: a settled payment is finished once it is quiet (missing parents count as missing steps).
      if ((p.inferred || awaitingOriginal(p) || p.orphans > 0) && nowUs - p.lastUs > SETTLE_MS * 1000 && settled(p)) {
        finish(p);
        continue;
      }
      // Progress on the payment's own clock when it was read from history: one that stopped an
      // hour ago is stuck as soon as history is read, as a live trace would have found it.
      const progressUs = p.fromHistory && p.endUs !== undefined ? Math.min(p.endUs, p.lastUs) : p.lastUs;
      const idle = nowUs - progressUs > options.stuckAfterMs * 1000;
      if (idle && !scenario && (!expected || p.judged)) {
        // Without a scenario nothing says a payment ended: a quiet one is simply done.
        finish(p);
      } else if (idle) {
        if (expected && !p.judged) judge(p, false, notMetReason(p, 'stuck'));
        stuckCount++;
        if (stuck.length < MAX_LISTED) stuck.push(issue(p, `no progress for ${Math.round((nowUs - progressUs) / 1e6)}s`));
        inFlight.delete(p.id);
      } else if (final && expected && !p.judged) {
        judge(p, false, notMetReason(p, 'unfinished when trace ended'));
      }
    }
  };

  // Read-only: trace creates nothing (core/destinations.ts). A tap also reads the DLQs that exist;
  // the other modes read only what the user named (a group would take a DLQ's messages).
  const mode: ReadMode = options.mode ?? { kind: 'tap' };
  // A shard skips other shards' payments: only a reader that takes nothing may skip.
  if (options.shard !== undefined && mode.kind === 'group') {
    throw new UsageError(`--shard goes with a tap (no --group): a member of group ${mode.group} would take the messages it skips`);
  }
  const requeue = mode.kind === 'group' && mode.requeue;
  const dlqs = mode.kind === 'tap' ? options.destinations.filter((d) => !d.endsWith(DLQ_SUFFIX)).map((d) => `${d}${DLQ_SUFFIX}`) : [];
  const waited =
    mode.kind === 'exchange'
      ? { present: [], createdWhileWaiting: false }
      : await awaitDestinations(driver, { required: options.destinations, optional: dlqs, startTimeoutMs: options.startTimeoutMs ?? 60_000, clock, signal });
  /** --requeue: held unacked until trace ends, then handed back (read-mode.ts). */
  const held: Delivery[] = [];

  let wake: (() => void) | undefined;
  readyUs = clock.nowUs();
  const subscription = await driver.subscribe(
    {
      destinations: waited.present,
      // Destinations created while trace waited hold only what was written since it started.
      fromBeginning: options.fromBeginning || (waited.createdWhileWaiting && driver.capabilities.replayFromBeginning),
      prefetch: options.prefetch ?? (requeue ? REQUEUE_DEFAULT_PREFETCH : 1000),
      ...subscribeMode(mode, 'payq-trace'),
      ...(partitionShard !== undefined ? { shard: partitionShard } : {}),
    },
    (deliveries) => {
      const nowUs = clock.nowUs();
      lastEventUs = nowUs;
      for (const d of deliveries) {
        onEvent(d, nowUs);
        if (requeue) held.push(d);
        else d.ack();
      }
      if (options.untilFinished !== undefined && finished >= options.untilFinished) wake?.();
    },
  );

  deps.onReady?.();
  const endUs = options.durationMs === undefined ? Infinity : startedUs + options.durationMs * 1000;
  let interrupted = false;
  let brokerGone = false;
  try {
    for (;;) {
      if (signal?.aborted) {
        interrupted = true;
        break;
      }
      const nowUs = clock.nowUs();
      if (nowUs >= endUs) break;
      if (options.untilFinished !== undefined && finished >= options.untilFinished) break;
      const link = driver.link();
      if (link.gone) {
        brokerGone = true;
        break;
      }
      // A broker away is neither quiet nor a payment stuck: the idle timeout and the sweep wait
      // for it to be back (README "Failure drills").
      const away = brokerAway(link);
      if (!away) sweep(nowUs, false);
      if (lastEventUs !== undefined && away) lastEventUs = nowUs;
      if (options.idleTimeoutMs !== undefined && lastEventUs === undefined && nowUs - startedUs > (options.startTimeoutMs ?? 60_000) * 1000) break;
      // Quiet for the idle timeout: nothing more is coming; the final sweep judges what is left.
      if (options.idleTimeoutMs !== undefined && lastEventUs !== undefined && nowUs - lastEventUs > options.idleTimeoutMs * 1000) break;
      // Quiet, and no payment is waiting for an event that could still change its verdict.
      if (
        options.judgedIdleTimeoutMs !== undefined &&
        lastEventUs !== undefined &&
        nowUs - lastEventUs > options.judgedIdleTimeoutMs * 1000 &&
        !away &&
        !readingHistory(nowUs) &&
        everyPaymentJudged()
      ) {
        break;
      }
      deps.onProgress?.({ events: counts.seen, inFlight: inFlight.size, finished, elapsedMs: (nowUs - startedUs) / 1000 });
      await new Promise<void>((resolve) => {
        wake = resolve;
        void clock.sleep(100, signal).then(resolve);
      });
      wake = undefined;
    }
  } finally {
    for (const d of held.splice(0)) d.nack();
    await subscription.close();
  }
  // Interrupted, the run did not end: what is unfinished stays in flight, not judged against --expect.
  // Gone for good, what is in flight was cut off, not lost: not even swept (the outage is no
  // payment's want of progress).
  if (!brokerGone) sweep(clock.nowUs(), !interrupted);

  const hopSummaries: Record<string, LatencySummary> = {};
  for (const [stage, h] of hops) hopSummaries[stage] = summarize(h);
  return {
    payments: { seen: seenPayments, finished, in_flight: inFlight.size, stuck: stuckCount, by_class: byClass },
    events: counts,
    latency: { transit: summarize(transit), end_to_end: summarize(endToEnd), hops: hopSummaries },
    expectation: options.expect
      ? { types: options.expect, within_ms: options.withinMs, passed: expectPassed, failed: expectFailed, failures: expectFailures, no_events: counts.seen === 0 }
      : undefined,
    stuck,
    timeline: timeline && orderTimeline(timeline),
    undecodable_samples: undecodableSamples,
    elapsed_s: Math.round((clock.nowUs() - startedUs) / 1000) / 1000,
    interrupted,
    broker_gone: brokerGone,
    histograms: { transit, endToEnd, hops },
  };
}

/** In publish order (history is read destination by destination), offsets from the first event. */
function orderTimeline(entries: (TimelineEntry & { atUs: number })[]): TimelineEntry[] {
  entries.sort((a, b) => a.atUs - b.atUs);
  const firstUs = entries[0]?.atUs ?? 0;
  return entries.map(({ atUs, ...t }) => ({ ...t, at: new Date(atUs / 1000).toISOString(), offset_ms: Math.round((atUs - firstUs) / 100) / 10 }));
}
