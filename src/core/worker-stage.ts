/**
 * One running stage of `payq worker`: the delivery handler and its statistics. Each delivery is
 * worked on as soon as it arrives, concurrently with the others (up to `prefetch` at once), and
 * acked only once the broker confirmed its outputs; a failed send nacks it, and the redelivery
 * emits the same child ids again (worker-plan.ts), which trace counts as duplicates. A message is
 * never dropped: whatever cannot be handled is dead-lettered with provenance headers.
 *
 * A handler call does not wait for its deliveries' processing times and retries: the driver hands
 * out the next deliveries while these are still working (it waits for the handler before handing
 * out more), so a delivery never queues behind a slower one that arrived before it (a batch waiting
 * for its slowest member added ~15 ms to bench's end-to-end p99 at 100 payments/s on memory://).
 * Handlings that finish on the same turn of the event loop send their outputs together, one batch
 * per destination. drain() switches back to waiting inside the handler call, so closing the
 * subscription (which waits for the running handler) finishes every handling under way.
 */
import { brokerAway } from '../drivers/common.js';
import type { Delivery, Driver, Headers, OutgoingMessage } from '../drivers/types.js';
import { messageOf } from '../errors.js';
import { toMessage, type EncodeContext } from '../events/codec.js';
import { decodeEvent, type ReceivedEvent } from '../events/decode.js';
import { hashSeed } from '../events/derive.js';
import type { GeneratedEvent } from '../events/generator.js';
import { PayqHeader, TRACEPARENT } from '../events/headers.js';
import { Prng } from '../events/prng.js';
import type { Scenario, Stage } from '../events/scenario.js';
import { createLatencyHistogram, recordUs, type LatencyHistogram } from '../metrics/histogram.js';
import type { Clock } from './clock.js';
import {
  businessMs,
  childrenOf,
  DEAD_LETTER_REASONS,
  DeadLetterReason,
  failureText,
  planHandling,
  type AttemptPlan,
  type DecisionPolicy,
  type HandlingPlan,
} from './worker-plan.js';

/** Live counters of one stage (also the body of its final statistics). */
export interface StageCounters {
  stage: string;
  destination: string;
  group: string;
  /** Deliveries handed to the handler, redeliveries included. */
  received: number;
  /** Of those, the ones the broker flagged as delivered before. */
  redelivered: number;
  /** Successful handlings: outputs confirmed by the broker, input acked. */
  handled: number;
  attempts: number;
  transient_failures: number;
  /** Attempts that followed a transient failure. */
  retries: number;
  dead_lettered: Record<DeadLetterReason, number>;
  dead_lettered_total: number;
  /** Events the broker confirmed, by type (a redelivered input's outputs count again). */
  emitted: number;
  emitted_by_type: Record<string, number>;
  /** Dead-lettered because they could not be read as events (also in dead_lettered). */
  undecodable: number;
  /** Inputs given back for redelivery because a send or a dead-letter failed. */
  nacked: number;
}

/** Distinct error texts (a few) and how many errors there were in all. */
export class ErrorLog {
  readonly texts = new Set<string>();
  count = 0;
  add(err: unknown): void {
    this.count++;
    if (this.texts.size < 5) this.texts.add(messageOf(err));
  }
}

export interface StageRunnerContext {
  scenario: Scenario;
  /**
   * When set, only events of this run (payq-run-id) count in the statistics; the others are
   * handled exactly the same but counted apart (bench's warm-up runs under another run id).
   */
  countRunId?: string | undefined;
  stage: Stage;
  group: string;
  driver: Driver;
  clock: Clock;
  policy: DecisionPolicy;
  errors: ErrorLog;
  /** Cuts the pause after a failed send short; in-flight handling itself is always finished. */
  signal: AbortSignal | undefined;
  /** Deliveries worked on at once, at most (the subscription's prefetch). Default: no bound of its own. */
  prefetch?: number | undefined;
}

/** A handling that succeeded; its outputs still have to be sent before the input is acked. */
interface Success {
  delivery: Delivery;
  processingUs: number;
  /** The processing time the plan gave the successful attempt (µs): what the handler was to spend. */
  plannedUs: number;
  children: PendingChild[];
  tally: StageTally;
}

/**
 * What bench measures of a stage beyond its counters. Kept apart from StageCounters so the
 * worker's own statistics (and its JSON) stay as they are.
 */
export interface StageMeasures {
  bytes_received: number;
  /** Bytes of the inputs handled successfully. */
  bytes_handled: number;
  /** Bytes of the emitted events the broker confirmed. */
  bytes_emitted: number;
  /** Processing time the plan gave each successful attempt, µs (timers may overshoot it). */
  planned: LatencyHistogram;
  /** Publish time (the intended send time when the event has one) → handed to this stage, µs. */
  delivery: LatencyHistogram;
}

/** Counters and histograms of one population of events (counted, or another run's). */
class StageTally {
  readonly processing: LatencyHistogram = createLatencyHistogram();
  readonly measures: StageMeasures = {
    bytes_received: 0,
    bytes_handled: 0,
    bytes_emitted: 0,
    planned: createLatencyHistogram(),
    delivery: createLatencyHistogram(),
  };
  constructor(readonly counters: StageCounters) {}
}

interface PendingChild {
  destination: string;
  event: GeneratedEvent;
  runId: string | undefined;
  /** Epoch µs the payment started, carried from the input; undefined: this send starts it. */
  startUs: number | undefined;
}

/** Events of one payment beyond this sequence emit nothing (guards cyclic scenarios, as the generator does). */
const MAX_SEQUENCE = 64;
const MAX_SEND_PAUSE_MS = 5000;
const HEX32 = /^[0-9a-f]{32}$/;
const ZEROS32 = '0'.repeat(32);
/** The last millisecond a Date can hold (ECMA-262: 8.64e15 ms from the epoch). */
const MAX_DATE_MS = 8.64e15;

/** The W3C trace id of the input, or one derived from the payment id (the same every time). */
export function traceIdOf(headers: Headers, paymentId: string): string {
  // version "-" trace-id "-" parent-id "-" flags: 2 + 1 + 32 + 1 + 16 + 1 + 2 characters.
  const tp = headers[TRACEPARENT];
  if (tp !== undefined && tp.length === 55 && tp[2] === '-' && tp[35] === '-' && tp[52] === '-') {
    const id = tp.slice(3, 35);
    if (id !== ZEROS32 && HEX32.test(id)) return id;
  }
  return new Prng(hashSeed(paymentId, 0x7472)).hex(16);
}

function emptyReasons(): Record<DeadLetterReason, number> {
  const out = {} as Record<DeadLetterReason, number>;
  for (const r of DEAD_LETTER_REASONS) out[r] = 0;
  return out;
}

/** A stage's counters at zero (also the starting point of the worker's totals). */
export function zeroCounts(): Omit<StageCounters, 'stage' | 'destination' | 'group'> {
  return {
    received: 0,
    redelivered: 0,
    handled: 0,
    attempts: 0,
    transient_failures: 0,
    retries: 0,
    dead_lettered: emptyReasons(),
    dead_lettered_total: 0,
    emitted: 0,
    emitted_by_type: {},
    undecodable: 0,
    nacked: 0,
  };
}

export class StageRunner {
  private readonly counted: StageTally;
  /** Events of other runs than countRunId: handled, not counted. Created when first needed. */
  private uncounted: StageTally | undefined;
  /** Deliveries in the handler right now. */
  inFlight = 0;
  /**
   * Deliveries acked or given back while the broker was away: it never heard of it, and delivers
   * them again (counted for a run that ends with the broker gone, README "Failure drills").
   */
  unsettled = 0;
  lastActivityUs: number;
  private sendFailures = 0;
  private readonly encode: Omit<EncodeContext, 'runId'>;

  constructor(private readonly ctx: StageRunnerContext) {
    const { driver, scenario } = ctx;
    this.counted = new StageTally(this.newCounters());
    this.encode = { binding: driver.headerBinding, sourcePrefix: `/payq/${scenario.name}` };
    this.lastActivityUs = ctx.clock.nowUs();
  }

  get counters(): StageCounters {
    return this.counted.counters;
  }

  /** Processing time of successful attempts, µs (tᵢ of APT). One value per handled event. */
  get processing(): LatencyHistogram {
    return this.counted.processing;
  }

  /** Bytes, planned processing times and delivery latency of the counted events (bench). */
  get measures(): StageMeasures {
    return this.counted.measures;
  }

  private newCounters(): StageCounters {
    const { stage, group } = this.ctx;
    return { stage: stage.name, destination: stage.destination, group, ...zeroCounts() };
  }

  private tallyOf(delivery: Delivery): StageTally {
    const runId = this.ctx.countRunId;
    if (runId === undefined || delivery.headers[PayqHeader.runId] === runId) return this.counted;
    return (this.uncounted ??= new StageTally(this.newCounters()));
  }

  /** Handlings that outlived their handler call (processing, backoffs, their sends). */
  private readonly detached = new Set<Promise<void>>();
  /** Set by drain(): handler calls wait for their deliveries again. */
  private draining = false;
  /** Handler calls waiting for a handling to end, so they may return (at most prefetch at once). */
  private roomWaiters: (() => void)[] = [];
  /** Successes that finished on this turn of the event loop, sent together on the next one. */
  private pendingEmit: { successes: Success[]; done: Promise<void> } | undefined;
  /** The pause after a failed send: new handler calls wait for it (no spinning on redeliveries). */
  private sendPause: Promise<void> | undefined;

  /** The DeliveryHandler. Never throws: every delivery is settled (ack, nack or dead letter). */
  readonly handle = async (deliveries: Delivery[]): Promise<void> => {
    if (this.sendPause) await this.sendPause;
    const n = deliveries.length;
    this.inFlight += n;
    const nowUs = this.ctx.clock.nowUs();
    this.lastActivityUs = nowUs;
    /** Deliveries settled within this call (the others end in their detached handling). */
    let settledHere = n;
    try {
      // Handlings that need no waiting (no processing time, no retry, no dead letter) finish
      // here, synchronously; the others run concurrently, detached from this call unless draining.
      const successes: Success[] = [];
      let waiting: Promise<Success | undefined>[] | undefined;
      for (let i = 0; i < n; i++) {
        const d = deliveries[i]!;
        const t = this.tallyOf(d);
        t.counters.received++;
        if (d.redelivered) t.counters.redelivered++;
        t.measures.bytes_received += d.value.length;
        const sentUs = Number(d.headers[PayqHeader.intendedUs] ?? d.headers[PayqHeader.publishedUs]);
        if (sentUs > 0) recordUs(t.measures.delivery, nowUs - sentUs);
        const r = this.process(d, t);
        if (r === undefined) continue;
        if (r instanceof Promise) (waiting ??= []).push(r);
        else successes.push(r);
      }
      if (waiting && this.draining) {
        for (const r of await Promise.all(waiting)) if (r !== undefined) successes.push(r);
      } else if (waiting) {
        settledHere -= waiting.length;
        for (const r of waiting) this.detach(r);
      }
      if (successes.length > 0) await this.emit(successes);
    } finally {
      this.inFlight -= settledHere;
      this.lastActivityUs = this.ctx.clock.nowUs();
    }
    // The driver hands out more once this returns: not before fewer than prefetch are at work.
    const bound = this.ctx.prefetch ?? Infinity;
    while (!this.draining && this.inFlight >= bound && this.detached.size > 0) {
      await new Promise<void>((resolve) => this.roomWaiters.push(resolve));
    }
  };

  /**
   * From now on every handler call waits for its own deliveries, and this resolves once the
   * handlings detached before are done: then closing the subscription finishes all work under way.
   */
  async drain(): Promise<void> {
    this.draining = true;
    while (this.detached.size > 0) await Promise.allSettled([...this.detached]);
  }

  private detach(work: Promise<Success | undefined>): void {
    const done = work
      .then((s) => (s === undefined ? undefined : this.emitSoon(s)))
      .catch((err: unknown) => this.ctx.errors.add(err))
      .finally(() => {
        this.detached.delete(done);
        this.inFlight--;
        this.lastActivityUs = this.ctx.clock.nowUs();
        const waiters = this.roomWaiters;
        this.roomWaiters = [];
        for (const wake of waiters) wake();
      });
    this.detached.add(done);
  }

  /** Sends a success's outputs with the others that finished on this turn (one batch per destination). */
  private emitSoon(success: Success): Promise<void> {
    let batch = this.pendingEmit;
    if (batch === undefined) {
      const successes: Success[] = [];
      const done = new Promise<void>((resolve) =>
        setImmediate(() => {
          this.pendingEmit = undefined;
          this.emit(successes).then(resolve, (err: unknown) => {
            this.ctx.errors.add(err);
            resolve();
          });
        }),
      );
      this.pendingEmit = batch = { successes, done };
    }
    batch.successes.push(success);
    return batch.done;
  }

  /**
   * Decodes and plans one delivery. Returns its Success at once when the plan needs no waiting,
   * undefined when the delivery was settled here, or a promise of either.
   */
  private process(delivery: Delivery, tally: StageTally): Success | undefined | Promise<Success | undefined> {
    const { stage, policy } = this.ctx;
    try {
      const event = decodeEvent(delivery.value, delivery.headers, delivery.key);
      const problem =
        event.problem ?? (event.id === undefined ? "the message has no event id (no CloudEvents id header, no 'id' field)" : undefined);
      if (problem !== undefined) {
        tally.counters.undecodable++;
        return this.deadLetter(delivery, tally, DeadLetterReason.undecodable, problem, 1, this.ctx.clock.nowUs()).then(() => undefined);
      }
      const id = event.id!;
      if (!stage.input.includes(event.type!)) {
        const text = `event type '${event.type}' is not an input of stage ${stage.name} (inputs: ${stage.input.join(', ')})`;
        return this.deadLetter(delivery, tally, DeadLetterReason.unexpectedType, text, 1, this.ctx.clock.nowUs()).then(() => undefined);
      }
      const plan = planHandling(stage, id, policy);
      const first = plan.attempts[0]!;
      if (plan.kind === 'success' && plan.attempts.length === 1 && first.processingMs <= 0) {
        tally.counters.attempts++;
        return { delivery, processingUs: 0, plannedUs: 0, tally, children: this.children(event, id, plan.outcome, delivery.headers, plan.attempts) };
      }
      return this.work(delivery, tally, event, id, plan).catch((err: unknown) => this.failed(delivery, tally, err));
    } catch (err) {
      return this.failed(delivery, tally, err);
    }
  }

  /** A bug, not a broker problem: give the message back rather than lose it. */
  private failed(delivery: Delivery, tally: StageTally, err: unknown): undefined {
    this.ctx.errors.add(err);
    tally.counters.nacked++;
    delivery.nack();
    this.settledNow(1);
    return undefined;
  }

  /** Works through a plan that waits: processing times, retries with backoff, a dead letter. */
  private async work(delivery: Delivery, tally: StageTally, event: ReceivedEvent, id: string, plan: HandlingPlan): Promise<Success | undefined> {
    const { stage, clock } = this.ctx;
    const c = tally.counters;
    let firstFailedUs: number | undefined;
    let processingUs = 0;
    let plannedUs = 0;
    const last = plan.attempts.length - 1;
    for (let i = 0; i <= last; i++) {
      const attempt = plan.attempts[i]!;
      const startUs = clock.nowUs();
      if (attempt.processingMs > 0) await clock.sleep(attempt.processingMs);
      const endUs = clock.nowUs();
      c.attempts++;
      if (attempt.result === 'success') {
        processingUs = endUs - startUs;
        plannedUs = attempt.processingMs * 1000;
        break;
      }
      firstFailedUs ??= endUs;
      if (attempt.result === 'transient') c.transient_failures++;
      if (i < last) {
        c.retries++;
        if (attempt.backoffMs > 0) await clock.sleep(attempt.backoffMs);
      }
    }
    if (plan.kind === 'dead-letter') {
      await this.deadLetter(delivery, tally, plan.reason, failureText(stage, plan), plan.attempts.length, firstFailedUs!);
      return undefined;
    }
    return { delivery, processingUs, plannedUs, tally, children: this.children(event, id, plan.outcome, delivery.headers, plan.attempts) };
  }

  private children(input: ReceivedEvent, inputId: string, outcome: number, headers: Headers, attempts: readonly AttemptPlan[]): PendingChild[] {
    const { stage, scenario, clock } = this.ctx;
    const sequenceBase = input.sequence ?? 0;
    if (sequenceBase + 1 >= MAX_SEQUENCE) return [];
    const plans = childrenOf(stage, inputId, outcome);
    if (plans.length === 0) return [];
    const paymentId = input.paymentId!;
    const occurredAt = this.occurredAfter(input.occurredMs, businessMs(attempts), clock.nowUs());
    const traceId = traceIdOf(headers, paymentId);
    // The input's data, as JSON text once for all its children. Key order as in the generator's
    // bodies: event, id, payment_id, sequence, occurred_at, data (ids and times need no escaping).
    const head = `,"payment_id":${JSON.stringify(paymentId)},"sequence":`;
    const tail = `,"occurred_at":"${occurredAt}","data":${JSON.stringify(input.body?.['data'] ?? {})}}`;
    return plans.map((p) => {
      const sequence = sequenceBase + 1 + p.index;
      const body = `{"event":${JSON.stringify(p.type)},"id":"${p.id}"${head}${sequence}${tail}`;
      return {
        destination: scenario.destinationFor(p.type),
        runId: input.runId,
        startUs: input.startUs ?? input.publishedUs,
        event: {
          id: p.id,
          type: p.type,
          paymentId,
          sequence,
          source: stage.name,
          occurredAt,
          traceId,
          // Derived from the child id, so a re-emitted child has the same span too.
          spanId: p.id.slice(0, 8) + p.id.slice(24, 32),
          body,
          // The codec writes payq-parent-id and payq-siblings (trace waits for all siblings).
          parentId: inputId,
          siblings: plans.length,
        },
      };
    });
  }

  /**
   * When an emitted event occurs: on its payment's business clock, the input's time plus the
   * handling's (drawn processing times and backoffs, the same on every redelivery); only an
   * input with no time of its own (no CloudEvents time, no occurred_at) gets the wall clock.
   */
  private occurredAfter(inputMs: number | undefined, spentMs: number, nowUs: number): string {
    if (inputMs !== undefined) {
      const ms = Math.floor(inputMs) + Math.round(spentMs);
      if (ms <= MAX_DATE_MS) return new Date(ms).toISOString();
    }
    return this.isoNow(nowUs);
  }

  private isoMs = -1;
  private isoText = '';

  /** The time as ISO 8601, rendered once per millisecond. */
  private isoNow(nowUs: number): string {
    const ms = Math.floor(nowUs / 1000);
    if (ms !== this.isoMs) {
      this.isoMs = ms;
      this.isoText = new Date(ms).toISOString();
    }
    return this.isoText;
  }

  private async deadLetter(
    delivery: Delivery,
    tally: StageTally,
    reason: DeadLetterReason,
    error: string,
    attempts: number,
    firstFailedUs: number,
  ): Promise<void> {
    const headers: Headers = {
      [PayqHeader.dlqReason]: reason,
      [PayqHeader.dlqError]: error,
      [PayqHeader.originalDestination]: delivery.destination,
      [PayqHeader.attempts]: String(attempts),
      [PayqHeader.firstFailedAt]: new Date(firstFailedUs / 1000).toISOString(),
      [PayqHeader.stage]: this.ctx.stage.name,
    };
    try {
      await delivery.deadLetter(headers);
      tally.counters.dead_lettered[reason]++;
      tally.counters.dead_lettered_total++;
    } catch (err) {
      // Not stored in the DLQ, so not settled: it comes back and is decided again, identically.
      this.ctx.errors.add(err);
      tally.counters.nacked++;
      delivery.nack();
      this.settledNow(1);
    }
  }

  /** `count` deliveries were just acked or given back: unsettled if the broker is away now. */
  private settledNow(count: number): void {
    if (brokerAway(this.ctx.driver.link())) this.unsettled += count;
  }

  /** Sends the outputs of every success in this handler call, then acks (or nacks) each input. */
  private async emit(successes: Success[]): Promise<void> {
    const { driver, clock } = this.ctx;
    const sendUs = clock.nowUs();
    const sendText = String(Math.round(sendUs));
    const byDestination = new Map<string, { messages: OutgoingMessage[]; owners: number[] }>();
    // Outputs count where their input counts (a child carries its input's run id).
    successes.forEach((s, owner) => {
      for (const child of s.children) {
        const message = this.toOutgoing(child, sendText);
        let group = byDestination.get(child.destination);
        if (!group) byDestination.set(child.destination, (group = { messages: [], owners: [] }));
        group.messages.push(message);
        group.owners.push(owner);
      }
    });

    const failed = new Set<number>();
    const batchSize = Math.max(1, driver.tuning.sendBatchSize);
    const sends: Promise<void>[] = [];
    for (const [destination, { messages, owners }] of byDestination) {
      for (let i = 0; i < messages.length; i += batchSize) {
        const chunk = messages.slice(i, i + batchSize);
        const chunkOwners = owners.slice(i, i + batchSize);
        sends.push(
          driver.send(destination, chunk).then(
            () => {
              chunk.forEach((m, j) => {
                const t = successes[chunkOwners[j]!]!.tally;
                t.counters.emitted++;
                t.counters.emitted_by_type[m.type] = (t.counters.emitted_by_type[m.type] ?? 0) + 1;
                t.measures.bytes_emitted += m.value.length;
              });
            },
            (err: unknown) => {
              this.ctx.errors.add(err);
              for (const o of chunkOwners) failed.add(o);
            },
          ),
        );
      }
    }
    await Promise.all(sends);

    this.settledNow(successes.length);
    successes.forEach((s, owner) => {
      const t = s.tally;
      if (failed.has(owner)) {
        t.counters.nacked++;
        s.delivery.nack();
        return;
      }
      s.delivery.ack();
      t.counters.handled++;
      recordUs(t.processing, s.processingUs);
      recordUs(t.measures.planned, s.plannedUs);
      t.measures.bytes_handled += s.delivery.value.length;
    });

    if (failed.size === 0) {
      this.sendFailures = 0;
      return;
    }
    // The broker refused or is gone: don't spin on redeliveries. Cut short by the abort signal.
    this.sendFailures++;
    const pause = clock.sleep(Math.min(MAX_SEND_PAUSE_MS, 100 * 2 ** (this.sendFailures - 1)), this.ctx.signal);
    this.sendPause = pause;
    await pause;
    if (this.sendPause === pause) this.sendPause = undefined;
  }

  /** Encoding contexts by run id (a worker sees one or two runs: bench's warm-up and its run). */
  private readonly encodeByRun = new Map<string, EncodeContext>();

  private toOutgoing(child: PendingChild, sendText: string): OutgoingMessage {
    const timing = { publishedUs: sendText, startUs: child.startUs === undefined ? sendText : String(Math.round(child.startUs)) };
    const runId = child.runId ?? '';
    let encode = this.encodeByRun.get(runId);
    if (encode === undefined) {
      if (this.encodeByRun.size >= 64) this.encodeByRun.clear();
      this.encodeByRun.set(runId, (encode = { ...this.encode, runId }));
    }
    const message = toMessage(child.event, encode, timing);
    // The run id is carried, never invented: events of no run stay so.
    if (child.runId === undefined) delete message.headers[PayqHeader.runId];
    return message;
  }
}
