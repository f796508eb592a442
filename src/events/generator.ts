/**
 * The seeded payment generator. Same seed, scenario and settings → the same bytes, on any
 * machine. Bodies are written by hand as JSON text: every string in them comes from a validated
 * alphabet (ids, event names, ISO codes, method names), so nothing needs escaping, and this is
 * several times faster than building objects and calling JSON.stringify.
 */
import { CURRENCY_EXPONENT } from './currencies.js';
import { sampleMs } from './distributions.js';
import { Prng } from './prng.js';
import type { Scenario } from './scenario.js';

/** Payments start this far apart in the simulated clock of `occurred_at` (ms). */
const DEFAULT_SPACING_MS = 1;
/** Fixed origin of the simulated business clock, so bodies are byte-identical across runs. */
export const DEFAULT_EPOCH_MS = Date.UTC(2026, 0, 1);
/** How many payments are in progress at once in lifecycle mode (their events interleave). */
const LIFECYCLE_WINDOW = 32;
const MAX_EVENTS_PER_PAYMENT = 64;

export interface GeneratorOptions {
  scenario: Scenario;
  seed: number;
  /** Number of payments; Infinity for a run bounded by time. */
  payments: number;
  /** Every event of each payment (true) or only each payment's entry event (false). */
  lifecycle: boolean;
  /** Pad bodies to at least this many bytes. */
  size?: number;
  epochMs?: number;
  spacingMs?: number;
  /**
   * Emit only shard `index` of `count` (1 ≤ index ≤ count): the payments whose position in the
   * whole stream (0-based) ≡ index − 1 mod count, each with all its events in the same order as
   * unsharded. Every payment is still drawn, so the PRNG stays in step and the shards together
   * are exactly the unsharded stream (README: "payq produce", --shard).
   */
  shard?: Shard | undefined;
}

export interface Shard {
  index: number;
  count: number;
}

export interface GeneratedEvent {
  id: string;
  type: string;
  paymentId: string;
  /** Position of the event within its payment, from 0; undefined when unknown (users' events without one). */
  sequence: number | undefined;
  /** The stage that emitted it, or 'producer' for entry events. */
  source: string;
  occurredAt: string;
  /** W3C trace id of the payment (32 hex) and span id of this event (16 hex). */
  traceId: string;
  spanId: string;
  /** The JSON body (UTF-8 text; ASCII in practice). */
  body: string;
  /** The body already encoded as UTF-8, when the source has it so (a generator thread). */
  value?: Buffer | undefined;
  /** Lifecycle mode: the event whose (simulated) handling emitted this one, and how many it emitted. */
  parentId?: string | undefined;
  siblings?: number | undefined;
}

/**
 * An event still to be emitted, and when it occurs on the payment's business clock: the entry at
 * the payment's start, every other one when its parent's handling ended (the parent's time plus
 * the stage's drawn processing time), as the worker stamps them (worker-stage.ts) — siblings
 * occur together.
 */
interface PendingEvent {
  type: string;
  source: string;
  atMs: number;
  parentId?: string;
  siblings?: number;
}

interface Payment {
  paymentId: string;
  traceId: string;
  fixed: string;
  sequence: number;
  pending: PendingEvent[];
  /** In this generator's shard (always, unsharded): its events are emitted, the others only drawn. */
  mine: boolean;
}

function cumulative(weights: Record<string, number>): { keys: string[]; cum: number[] } {
  const keys = Object.keys(weights);
  let total = 0;
  return { keys, cum: keys.map((k) => (total += weights[k]!)) };
}

function merchantId(index: number): string {
  return `mer_${String(index + 1).padStart(5, '0')}`;
}

export class EventGenerator implements Iterable<GeneratedEvent> {
  private readonly prng: Prng;
  private readonly scenario: Scenario;
  private readonly total: number;
  private readonly lifecycle: boolean;
  private readonly size: number;
  private readonly epochMs: number;
  private readonly spacingMs: number;
  private readonly currencies: { keys: string[]; cum: number[] };
  private readonly methods: { keys: string[]; cum: number[] };
  private readonly active: Payment[] = [];
  private readonly amountScale: number[];
  private readonly merchantIds: string[] | undefined;
  private readonly shardIndex: number;
  private readonly shardCount: number;
  private started = 0;
  private startedMine = 0;
  /** Payments of this shard (all, unsharded) begun so far. */
  get paymentsStarted(): number {
    return this.startedMine;
  }

  constructor(options: GeneratorOptions) {
    this.prng = new Prng(options.seed);
    this.scenario = options.scenario;
    this.total = options.payments;
    this.lifecycle = options.lifecycle;
    this.size = options.size ?? 0;
    this.epochMs = options.epochMs ?? DEFAULT_EPOCH_MS;
    this.spacingMs = options.spacingMs ?? DEFAULT_SPACING_MS;
    this.shardIndex = (options.shard?.index ?? 1) - 1;
    this.shardCount = options.shard?.count ?? 1;
    this.currencies = cumulative(options.scenario.payments.currencies);
    this.methods = cumulative(options.scenario.payments.methods);
    this.amountScale = this.currencies.keys.map((c) => 10 ** ((CURRENCY_EXPONENT[c] ?? 2) - 2));
    const merchants = options.scenario.payments.merchants;
    this.merchantIds = merchants <= 100_000 ? Array.from({ length: merchants }, (_, i) => merchantId(i)) : undefined;
  }

  [Symbol.iterator](): Iterator<GeneratedEvent> {
    return { next: () => {
      const value = this.next();
      return value === undefined ? { done: true, value: undefined } : { done: false, value };
    } };
  }

  /** The next event of this shard, or undefined when every payment is done. */
  next(): GeneratedEvent | undefined {
    for (;;) {
      const event = this.step();
      // null: an event of another shard's payment, drawn only to keep the PRNG in step.
      if (event !== null) return event;
    }
  }

  private step(): GeneratedEvent | undefined | null {
    if (!this.lifecycle) {
      if (this.started >= this.total) return undefined;
      const payment = this.newPayment();
      return this.emit(payment, this.scenario.entry, 'producer', payment.pending[0]!.atMs);
    }
    while (this.active.length < LIFECYCLE_WINDOW && this.started < this.total) this.active.push(this.newPayment());
    if (this.active.length === 0) return undefined;
    const slot = this.prng.int(this.active.length);
    const payment = this.active[slot]!;
    const step = payment.pending.shift()!;
    const event = this.emit(payment, step.type, step.source, step.atMs);
    const id = event === null ? this.skippedId : event.id;
    if (event !== null) {
      event.parentId = step.parentId;
      event.siblings = step.siblings;
    }
    this.advance(payment, step, id);
    if (payment.pending.length === 0) {
      // Swap-remove keeps the window O(1); the PRNG picks slots, so order stays deterministic.
      this.active[slot] = this.active[this.active.length - 1]!;
      this.active.pop();
    }
    return event;
  }

  /** The id of the last event drawn for another shard (its children's parentId, also skipped). */
  private skippedId = '';

  private newPayment(): Payment {
    const index = this.started++;
    const mine = this.shardCount === 1 || index % this.shardCount === this.shardIndex;
    if (mine) this.startedMine++;
    const p = this.prng;
    const { amount: amountConfig, users, merchants } = this.scenario.payments;
    const currencyIndex = p.pickCumulative(this.currencies.cum);
    const currency = this.currencies.keys[currencyIndex]!;
    const method = this.methods.keys[p.pickCumulative(this.methods.cum)]!;
    // Amount is drawn for a 2-decimal currency, then scaled to the currency's exponent.
    const raw = amountConfig.median * Math.exp(amountConfig.sigma * p.normal());
    const clamped = Math.min(amountConfig.max, Math.max(amountConfig.min, Math.round(raw)));
    const amount = Math.max(1, Math.round(clamped * this.amountScale[currencyIndex]!));
    const orderId = 10_000_000 + index;
    const userId = 1 + p.int(users);
    const m = p.int(merchants);
    const merchant = this.merchantIds ? this.merchantIds[m]! : merchantId(m);
    const paymentId = `pay_${p.hex(8)}`;
    const traceId = p.hex(16);
    // Another shard's payment: drawn, not written.
    const fixed = !mine
      ? ''
      : `"data":{"order_id":${orderId},"user_id":${userId},"merchant_id":"${merchant}",` +
      `"payment_id":"${paymentId}","amount":${amount},"currency":"${currency}","method":"${method}"}`;
    return {
      paymentId,
      traceId,
      fixed,
      sequence: 0,
      mine,
      pending: [{ type: this.scenario.entry, source: 'producer', atMs: this.epochMs + index * this.spacingMs }],
    };
  }

  /** Queues the events the consuming stage would emit after `event`, when its handling ends. */
  private advance(payment: Payment, event: PendingEvent, eventId: string): void {
    const stage = this.scenario.stageFor.get(event.type);
    if (!stage || payment.sequence >= MAX_EVENTS_PER_PAYMENT) return;
    const atMs = event.atMs + sampleMs(stage.processing, this.prng);
    const pick = this.prng.next();
    const i = stage.outcomeCumulative.findIndex((c) => pick < c);
    if (i === -1) return;
    const events = stage.outcomes[i]!.events;
    for (const next of events) payment.pending.push({ type: next, source: stage.name, atMs, parentId: eventId, siblings: events.length });
  }

  private isoSecond = NaN;
  private isoPrefix = '';

  /** toISOString, with the part up to the second cached: events come in time order mostly. */
  private isoTime(ms: number): string {
    const second = Math.floor(ms / 1000);
    if (second !== this.isoSecond) {
      this.isoSecond = second;
      this.isoPrefix = new Date(second * 1000).toISOString().slice(0, 20);
    }
    const millis = ms - second * 1000;
    return `${this.isoPrefix}${millis < 10 ? '00' : millis < 100 ? '0' : ''}${millis}Z`;
  }

  /** The event, or null for another shard's payment (its draws made, nothing built). */
  private emit(payment: Payment, type: string, source: string, atMs: number): GeneratedEvent | null {
    const id = this.prng.uuid();
    if (!payment.mine) {
      payment.sequence++;
      this.skippedId = id;
      return null;
    }
    const spanId = id.slice(0, 8) + id.slice(24, 32);
    const sequence = payment.sequence++;
    const occurredAt = this.isoTime(Math.round(atMs));
    let body =
      `{"event":"${type}","id":"${id}","payment_id":"${payment.paymentId}","sequence":${sequence},` +
      `"occurred_at":"${occurredAt}",${payment.fixed}}`;
    if (body.length < this.size) {
      const room = this.size - body.length - ',"pad":""'.length;
      body = `${body.slice(0, -1)},"pad":"${'x'.repeat(Math.max(0, room))}"}`;
    }
    return { id, type, paymentId: payment.paymentId, sequence, source, occurredAt, traceId: payment.traceId, spanId, body };
  }
}
