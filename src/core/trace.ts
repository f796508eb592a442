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
import { REQUEUE_DEFAULT_PREFETCH, subscribeMode, type ReadMode } from './read-mode.js';

export const DLQ_SUFFIX = '.dlq';

export interface TraceOptions {
  /** With a scenario, trace knows which events end a payment and how to name its class. */
  scenario: Scenario | undefined;
  destinations: string[];
  decode: DecodeOptions;
  /** A payment with no new event for this long is stuck. */
  stuckAfterMs: number;
  /** Event types every payment must reach, within `withinMs` of its start. */
  expect: string[] | undefined;
  withinMs: number | undefined;
  /** Keep the full timeline of this payment. */
  payment: string | undefined;
  /** Only events of this run (payq-run-id). */
  runId: string | undefined;
  fromBeginning: boolean;
  /** Stop after this long without any event (and nothing left in flight, or all of it stuck). */
  idleTimeoutMs: number | undefined;
  /** With an idle timeout: how long to wait for the first event before giving up. */
  startTimeoutMs?: number | undefined;
  durationMs: number | undefined;
  /** Stop once this many payments finished (tests, bench). */
  untilFinished: number | undefined;
  prefetch?: number;
  /** How to read (read-mode.ts); default a tap. Only a tap also reads each destination's DLQ. */
  mode?: ReadMode | undefined;
}

export interface TraceDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  onProgress?: ((p: TraceProgress) => void) | undefined;
  /** Called once the taps are subscribed: events published from now on will be seen. */
  onReady?: (() => void) | undefined;
}

export interface TraceProgress {
  events: number;
  inFlight: number;
  finished: number;
  elapsedMs: number;
}

export interface TimelineEntry {
  at: string;
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
    duplicates: number;
    out_of_order: number;
    missing_steps: number;
    undecodable: number;
    other_runs: number;
  };
  latency: {
    /** Published → seen by trace, per event. */
    transit: LatencySummary;
    /** Payment's start → its last event, per finished payment. */
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
  firstUs: number;
  startUs: number;
  lastUs: number;
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
/** How long a payment without parent headers must be quiet before it is taken as finished. */
const SETTLE_MS = 1000;
/** Finished payment ids remembered to recognise late duplicates: at most this many, at least 3/4 of it. */
const RECENT_FINISHED = 100_000;
const RECENT_GENERATIONS = 4;

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
  const byClass: Record<string, number> = {};
  for (const name of scenario?.classNames ?? []) byClass[name] = 0;
  byClass['dead-lettered'] = 0;
  const transit = createLatencyHistogram();
  const endToEnd = createLatencyHistogram();
  const hops = new Map<string, LatencyHistogram>();
  const stuck: PaymentIssue[] = [];
  const expectFailures: PaymentIssue[] = [];
  const undecodableSamples: string[] = [];
  const timeline: TimelineEntry[] | undefined = options.payment ? [] : undefined;
  let seenPayments = 0;
  let finished = 0;
  let stuckCount = 0;
  let expectPassed = 0;
  let expectFailed = 0;
  const counts = { seen: 0, duplicates: 0, out_of_order: 0, missing_steps: 0, undecodable: 0, other_runs: 0 };
  let lastEventUs: number | undefined;

  // Trace needs no body field of events whose headers say everything (payq's own): their bodies
  // are not parsed. A payq event with a broken body still counts as an event here; the worker
  // that consumes it dead-letters it, and trace sees that.
  const decode: DecodeOptions = { ...options.decode, headersFirst: true };
  const isTerminal = (type: string) => scenario?.terminalTypes.has(type) ?? false;

  const inferParent = (p: PaymentState, type: string): string | undefined => {
    for (const ev of p.events) {
      if (ev.hasChild || deadLettered(ev)) continue;
      if (scenario!.stageFor.get(ev.type)?.outcomes.some((o) => o.events.includes(type))) return ev.id;
    }
    return undefined;
  };

  const judge = (p: PaymentState, reached: boolean, reason: string) => {
    if (!options.expect || p.judged) return;
    p.judged = true;
    if (reached) expectPassed++;
    else {
      expectFailed++;
      if (expectFailures.length < MAX_LISTED) expectFailures.push(issue(p, reason));
    }
  };

  const issue = (p: PaymentState, reason: string): PaymentIssue => {
    const last = p.events.at(-1);
    return { payment_id: p.id, reason, last_type: last?.type, types: [...typesOf(p)], age_s: Math.round((clock.nowUs() - p.firstUs) / 1e5) / 10 };
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

  const expectationMet = (p: PaymentState) => options.expect!.every((t) => hasType(p, t));

  /** With a scenario: every non-terminal event has a child or was dead-lettered. */
  const settled = (p: PaymentState): boolean => {
    if (!scenario) return false;
    for (const e of p.events) {
      if (!deadLettered(e) && !e.hasChild && !isTerminal(e.type)) return false;
    }
    return true;
  };

  const finish = (p: PaymentState) => {
    inFlight.delete(p.id);
    recentFinished.add(p.id);
    finished++;
    let endedInDlq = false;
    for (const e of p.events) if (deadLettered(e) && !e.hasChild) endedInDlq = true;
    const cls = endedInDlq ? 'dead-lettered' : scenario ? (scenario.classify(typesOf(p)) ?? 'unclassified') : 'ended';
    byClass[cls] = (byClass[cls] ?? 0) + 1;
    counts.missing_steps += p.orphans;
    recordUs(endToEnd, p.lastUs - p.startUs);
    if (options.expect) {
      // A payment that ended on a branch the scenario allows (a decline) meets the expectation;
      // one that was dead-lettered does not.
      judge(p, !endedInDlq && (expectationMet(p) || scenario !== undefined), endedInDlq ? 'dead-lettered' : 'ended without reaching the expected events');
    }
  };

  const onEvent = (d: Delivery, nowUs: number) => {
    const isDlq = d.destination.endsWith(DLQ_SUFFIX);
    const destination = isDlq ? d.destination.slice(0, -DLQ_SUFFIX.length) : d.destination;
    const e = decodeEvent(d.value, d.headers, d.key, decode);
    if (e.problem !== undefined || e.type === undefined || e.paymentId === undefined) {
      counts.undecodable++;
      if (undecodableSamples.length < 10) undecodableSamples.push(`${d.destination}: ${e.problem ?? 'unreadable'}`);
      return;
    }
    if (options.runId !== undefined && e.runId !== options.runId) {
      counts.other_runs++;
      return;
    }
    counts.seen++;
    if (e.publishedUs !== undefined) recordUs(transit, nowUs - e.publishedUs);
    const eventId = e.id ?? `${destination}:${d.partition ?? ''}:${d.offset ?? counts.seen}`;
    let p = inFlight.get(e.paymentId);
    if (!p) {
      if (recentFinished.has(e.paymentId)) {
        // A late copy of a payment already accounted for.
        counts.duplicates++;
        return;
      }
      p = {
        id: e.paymentId,
        firstUs: nowUs,
        startUs: e.startUs ?? e.publishedUs ?? nowUs,
        lastUs: nowUs,
        events: [],
        orphans: 0,
        inferred: false,
        judged: false,
      };
      inFlight.set(e.paymentId, p);
      seenPayments++;
    }
    p.lastUs = nowUs;
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
          if (parent.publishedUs !== undefined && e.publishedUs !== undefined) {
            const stage = scenario?.stageFor.get(parent.type)?.name ?? parent.type;
            let h = hops.get(stage);
            if (!h) hops.set(stage, (h = createLatencyHistogram()));
            recordUs(h, e.publishedUs - parent.publishedUs);
          }
        } else p.orphans++;
      }
      // A parent seen after its children settles those orphans.
      for (const other of p.events) {
        if (other.parentId === eventId) {
          seen.children++;
          p.orphans--;
          if (seen.children >= (other.siblings ?? 1)) seen.hasChild = true;
        }
      }
      p.events.push(seen);
    }
    if (timeline && e.paymentId === options.payment) {
      timeline.push({
        at: new Date(nowUs / 1000).toISOString(),
        offset_ms: Math.round((nowUs - p.firstUs) / 100) / 10,
        destination: d.destination,
        type: e.type,
        event_id: e.id,
        dead_lettered: isDlq,
        duplicate,
      });
    }
    if (options.expect && !p.judged && expectationMet(p)) judge(p, true, '');
    if ((settled(p) && !p.inferred && !awaitingOriginal(p)) || (!scenario && p.judged)) finish(p);
  };

  /** Payments past --within, and payments without progress for --stuck-after. */
  const sweep = (nowUs: number, final: boolean) => {
    for (const p of inFlight.values()) {
      if (options.expect && !p.judged && options.withinMs !== undefined && nowUs - p.startUs > options.withinMs * 1000) {
        judge(p, false, `did not reach ${options.expect.filter((t) => !hasType(p, t)).join(', ')} within ${options.withinMs / 1000}s`);
      }
      // Inferred parents give no sibling counts, and a dead letter's original may be late: a
      // settled payment is finished once it is quiet.
      if ((p.inferred || awaitingOriginal(p)) && nowUs - p.lastUs > SETTLE_MS * 1000 && settled(p)) {
        finish(p);
        continue;
      }
      const idle = nowUs - p.lastUs > options.stuckAfterMs * 1000;
      if (idle && !scenario && (!options.expect || p.judged)) {
        // Without a scenario nothing says a payment ended: a quiet one is simply done.
        finish(p);
      } else if (idle) {
        if (options.expect && !p.judged) judge(p, false, 'stuck');
        stuckCount++;
        if (stuck.length < MAX_LISTED) stuck.push(issue(p, `no progress for ${Math.round((nowUs - p.lastUs) / 1e6)}s`));
        inFlight.delete(p.id);
      } else if (final && options.expect && !p.judged) {
        judge(p, false, 'unfinished when trace ended');
      }
    }
  };

  // Read-only: trace creates nothing (core/destinations.ts). A tap also reads the DLQs that exist;
  // the other modes read only what the user named (a group would take a DLQ's messages).
  const mode: ReadMode = options.mode ?? { kind: 'tap' };
  const requeue = mode.kind === 'group' && mode.requeue;
  const dlqs = mode.kind === 'tap' ? options.destinations.filter((d) => !d.endsWith(DLQ_SUFFIX)).map((d) => `${d}${DLQ_SUFFIX}`) : [];
  const waited =
    mode.kind === 'exchange'
      ? { present: [], createdWhileWaiting: false }
      : await awaitDestinations(driver, { required: options.destinations, optional: dlqs, startTimeoutMs: options.startTimeoutMs ?? 60_000, clock, signal });
  /** --requeue: held unacked until trace ends, then handed back (read-mode.ts). */
  const held: Delivery[] = [];

  let wake: (() => void) | undefined;
  const subscription = await driver.subscribe(
    {
      destinations: waited.present,
      // Destinations created while trace waited hold only what was written since it started.
      fromBeginning: options.fromBeginning || (waited.createdWhileWaiting && driver.capabilities.replayFromBeginning),
      prefetch: options.prefetch ?? (requeue ? REQUEUE_DEFAULT_PREFETCH : 1000),
      ...subscribeMode(mode, 'payq-trace'),
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
  try {
    for (;;) {
      if (signal?.aborted) {
        interrupted = true;
        break;
      }
      const nowUs = clock.nowUs();
      if (nowUs >= endUs) break;
      if (options.untilFinished !== undefined && finished >= options.untilFinished) break;
      sweep(nowUs, false);
      if (options.idleTimeoutMs !== undefined && lastEventUs === undefined && nowUs - startedUs > (options.startTimeoutMs ?? 60_000) * 1000) break;
      // Quiet for the idle timeout: nothing more is coming; the final sweep judges what is left.
      if (options.idleTimeoutMs !== undefined && lastEventUs !== undefined && nowUs - lastEventUs > options.idleTimeoutMs * 1000) break;
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
  sweep(clock.nowUs(), true);

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
    timeline,
    undecodable_samples: undecodableSamples,
    elapsed_s: Math.round((clock.nowUs() - startedUs) / 1000) / 1000,
    interrupted,
    histograms: { transit, endToEnd, hops },
  };
}
