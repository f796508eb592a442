/**
 * `replay-dlq`: puts dead-lettered messages back where they came from (README "`payq replay-dlq`"). Reads the
 * DLQs as the consumer group `payq-replay`, works out each message's origin from its headers
 * (replay-origin.ts), applies the selection (replay-select.ts), and then, per message:
 *
 *   replay  republish to the origin with `payq-replay-count` + 1 and the same event id; once the
 *           broker confirmed the republish (Kafka acks=all, RabbitMQ publisher confirms), ack it
 *           on the DLQ. A crash anywhere in between loses nothing: the DLQ message is still there
 *           and is replayed again (a duplicate with the same event id, at worst).
 *   park    replayed `--max-replays` times already (or unreplayable with `--park-unresolved`):
 *           republish to `<origin>.parked` (`<dlq base>.parked` without a usable origin), then ack.
 *   leave   filtered out, no origin, or unreplayable (body not a UTF-8 JSON object, larger than
 *           --max-bytes, origin missing on the broker): it stays in the DLQ. On RabbitMQ and
 *           memory it is simply not acked, and goes back to its place when the run ends. A Kafka
 *           partition cannot keep a hole (the committed offset is "everything before is done"),
 *           so there the message is copied to the end of its DLQ partition (confirmed), stamped
 *           with this run's id, and the original acked; when the run meets its own copies it has
 *           been round that partition once, and holds everything from there for the next run.
 *
 * `dryRun` changes nothing: every message is held unacked and given back when the run ends
 * (RabbitMQ returns them to the queue in order; Kafka commits no offset), nothing is sent.
 * Holding is bounded by `window` (the subscription's prefetch): a dry run looks at most that many
 * messages, and a run that leaves that many in place stops there; the result says so.
 *
 * The run ends by itself once no message arrived for `idleTimeoutMs` (the DLQs are drained), after
 * `limit` messages were replayed or parked, or on the abort signal (in-flight sends finish first).
 * Returns a ReplayResult; never prints.
 */
import { isUtf8 } from 'node:buffer';
import { randomBytes } from 'node:crypto';
import type { Delivery, Driver, Headers, OutgoingMessage, Subscription } from '../drivers/types.js';
import { messageOf, TopologyError } from '../errors.js';
import { decodeEvent, DEFAULT_DECODE, getPath, type DecodeOptions } from '../events/decode.js';
import type { Clock } from './clock.js';
import { RateLimiter } from './rate-limiter.js';
import {
  dlqBase,
  inspectDeadLetter,
  ORIGIN_HEADER,
  parkedHeaders,
  parkingDestination,
  ReplayHeader,
  replayHeaders,
  type DeadLetterInfo,
} from './replay-origin.js';
import { filterMismatch, type ReplayFilter } from './replay-select.js';
import { brokerAway } from '../drivers/common.js';

export interface ReplayOptions {
  /** The DLQs to read (they must exist). */
  dlqs: string[];
  /** Send everything here instead of each message's own origin (`--to`). */
  to?: string | undefined;
  dryRun: boolean;
  filter: ReplayFilter;
  /** Stop after this many messages were replayed or parked. */
  limit?: number | undefined;
  /** Republished messages per second; undefined: as fast as the broker confirms. */
  rate?: number | undefined;
  /** A message replayed this often already is parked instead. Default 3. */
  maxReplays?: number | undefined;
  /** Park what cannot be replayed (no origin, bad body, missing origin) instead of leaving it. */
  parkUnresolved?: boolean | undefined;
  /** Larger bodies are not replayed. Default 1 MiB (Kafka's default message.max.bytes). */
  maxBytes?: number | undefined;
  /** End once no message arrived for this long. Default 3 s. */
  idleTimeoutMs?: number | undefined;
  /** The consumer group reading the DLQs. Default payq-replay. */
  group?: string | undefined;
  /** Messages held unacked at once (the subscription's prefetch). Default 10 000. */
  window?: number | undefined;
  /** Keep a record of every message looked at (for `--dry-run --json`). */
  listMessages?: boolean | undefined;
  /** Stamped on copies a Kafka run leaves behind; default random. */
  runId?: string | undefined;
  decode?: DecodeOptions | undefined;
}

export const REPLAY_DEFAULTS = {
  maxReplays: 3,
  maxBytes: 1024 * 1024,
  idleTimeoutMs: 3000,
  group: 'payq-replay',
  window: 10_000,
} as const;

/** What happened (or, in a dry run, would happen) to a message. */
export type ReplayOutcome = 'replayed' | 'parked' | 'skipped' | 'unresolved' | 'invalid' | 'failed';

export interface ReplayMessage {
  dlq: string;
  partition: number | undefined;
  offset: string | undefined;
  key: string | undefined;
  event_id: string | undefined;
  type: string | undefined;
  payment_id: string | undefined;
  origin: string | undefined;
  /** The header (or --to) the origin came from. */
  origin_from: string | undefined;
  /** Kafka Connect / Spring: where in the origin it was read from. */
  origin_partition: string | undefined;
  origin_offset: string | undefined;
  reason: string;
  failed_at: string | undefined;
  replay_count: number;
  bytes: number;
  outcome: ReplayOutcome;
  /** Where it was (would be) sent: the origin or a parking destination. */
  destination: string | undefined;
  /** Why it is not replayed, for unresolved / invalid / parked / skipped ones. */
  problem: string | undefined;
}

export interface ReplayRow {
  origin: string;
  reason: string;
  type: string;
  outcome: ReplayOutcome;
  count: number;
}

export interface ReplayCounts {
  /** Messages looked at (not counting those held unread after the limit or a Kafka wrap). */
  seen: number;
  replayed: number;
  parked: number;
  /** Of the parked: because they had been replayed --max-replays times. */
  parked_over_max_replays: number;
  skipped: number;
  unresolved: number;
  invalid: number;
  failed: number;
}

export interface ReplayProgress extends ReplayCounts {
  elapsedMs: number;
}

export interface ReplayResult extends ReplayCounts {
  dry_run: boolean;
  dlqs: string[];
  /** Unresolved + invalid that stay in the DLQ (not parked), and failed ones. */
  left: number;
  rows: ReplayRow[];
  /** One line per unresolved or invalid message (the first 100). */
  problems: string[];
  problem_count: number;
  /** Distinct send errors (at most five). */
  errors: string[];
  messages: ReplayMessage[] | undefined;
  stopped_by: 'idle' | 'limit' | 'signal';
  /** The run held `window` messages and could not look further. */
  window_full: boolean;
  /** The whole run, the idle timeout at its end included. */
  elapsed_s: number;
  /** From the first message received to the last one handled. */
  active_s: number;
  /** Replayed + parked per second of active_s. */
  messages_per_s: number;
  interrupted: boolean;
  run_id: string;
}

export interface ReplayDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  /** About every 100 ms, and once at the end. */
  onProgress?: ((progress: ReplayProgress) => void) | undefined;
  /** Subscribed to the DLQs. */
  onReady?: (() => void) | undefined;
}

const MAX_PROBLEM_LINES = 100;
const PROGRESS_EVERY_MS = 100;

/** The names among `names` that exist (a passive check, types.ts). */
export async function existingDestinations(driver: Driver, names: string[]): Promise<Set<string>> {
  return driver.exists(names);
}

interface Send {
  delivery: Delivery;
  record: ReplayMessage;
  destination: string;
  message: OutgoingMessage;
  /** The outcome once confirmed. */
  outcome: ReplayOutcome;
  overMax: boolean;
}

/** Body check: undefined when it is a UTF-8 JSON object no larger than maxBytes. */
function bodyProblem(value: Buffer, maxBytes: number): string | undefined {
  if (value.length > maxBytes) return `the body of ${value.length.toLocaleString('en-US')} bytes is larger than --max-bytes ${maxBytes.toLocaleString('en-US')}`;
  if (value.length === 0) return 'the body is empty';
  if (!isUtf8(value)) return 'the body is not valid UTF-8';
  let parsed: unknown;
  try {
    parsed = JSON.parse(value.toString('utf8'));
  } catch {
    return 'the body is not JSON';
  }
  if (parsed === null || typeof parsed !== 'object' || Array.isArray(parsed)) return 'the body is JSON but not an object';
  return undefined;
}

function timeOf(info: DeadLetterInfo, headers: Headers, body: Record<string, unknown> | undefined): number | undefined {
  for (const text of [info.failedAt, headers['ce_time'], headers['cloudEvents_time'], getPath(body, 'occurred_at')]) {
    if (typeof text !== 'string') continue;
    const ms = Date.parse(text);
    if (Number.isFinite(ms)) return ms;
  }
  return undefined;
}

class ReplayRun {
  private readonly counts: ReplayCounts = { seen: 0, replayed: 0, parked: 0, parked_over_max_replays: 0, skipped: 0, unresolved: 0, invalid: 0, failed: 0 };
  private readonly rows = new Map<string, ReplayRow>();
  private readonly problems: string[] = [];
  private problemCount = 0;
  private readonly errors = new Set<string>();
  private readonly messages: ReplayMessage[] | undefined;
  /** Deliveries left unsettled on purpose: given back when the subscription closes. */
  private held = 0;
  private inFlight = 0;
  private stopping = false;
  private limitReached = false;
  lastActivityUs: number;
  /** From the first delivery to the end of the last handler call: the time spent moving messages. */
  private firstDeliveryUs: number | undefined;
  private lastHandledUs: number | undefined;
  /** Kafka partitions (`dlq\0partition`) in which this run met its own left-behind copies. */
  private readonly wrapped = new Set<string>();
  private readonly originChecks = new Map<string, Promise<boolean>>();
  /** Messages read per DLQ, and each record's place in that order: a position where there is no offset. */
  private readonly readFrom = new Map<string, number>();
  private readonly positions = new WeakMap<ReplayMessage, number>();
  private readonly parkingDeclared = new Map<string, Promise<void>>();
  private limiter: RateLimiter | undefined;
  /** Acting on a message decided to replay or park it (counts against --limit). */
  private selected = 0;
  private readonly maxReplays: number;
  private readonly maxBytes: number;
  private readonly window: number;
  /** Acks commit offsets (Kafka): leaving a message in place means copying it to the DLQ's end. */
  private readonly offsetCommits: boolean;
  readonly runId: string;

  constructor(
    private readonly options: ReplayOptions,
    private readonly deps: ReplayDeps,
  ) {
    this.maxReplays = options.maxReplays ?? REPLAY_DEFAULTS.maxReplays;
    this.maxBytes = options.maxBytes ?? REPLAY_DEFAULTS.maxBytes;
    this.window = options.window ?? REPLAY_DEFAULTS.window;
    this.messages = options.listMessages ? [] : undefined;
    this.offsetCommits = deps.driver.capabilities.partitions;
    this.runId = options.runId ?? randomBytes(6).toString('hex');
    this.lastActivityUs = deps.clock.nowUs();
  }

  get idle(): boolean {
    return this.inFlight === 0;
  }

  get done(): boolean {
    return this.limitReached && this.inFlight === 0;
  }

  get windowFull(): boolean {
    return this.held >= this.window;
  }

  stop(): void {
    this.stopping = true;
  }

  snapshot(elapsedMs: number): ReplayProgress {
    return { ...this.counts, elapsedMs };
  }

  /**
   * The DeliveryHandler: each delivery is acked once its send is confirmed, or held. It throws only
   * on a bug in payq; the driver then gives the unsettled deliveries back.
   */
  readonly handle = async (deliveries: Delivery[]): Promise<void> => {
    const n = deliveries.length;
    this.inFlight += n;
    this.lastActivityUs = this.deps.clock.nowUs();
    this.firstDeliveryUs ??= this.lastActivityUs;
    try {
      const sends: Send[] = [];
      for (const d of deliveries) {
        if (this.stopping || this.limitReached) {
          this.hold();
          continue;
        }
        if (this.offsetCommits && !this.options.dryRun) {
          const partitionKey = `${d.destination}\0${d.partition ?? ''}`;
          if (d.headers[ReplayHeader.leftBy] === this.runId) this.wrapped.add(partitionKey);
          if (this.wrapped.has(partitionKey)) {
            this.hold();
            continue;
          }
        }
        const send = await this.plan(d);
        if (send) sends.push(send);
      }
      await this.execute(sends);
    } catch (err) {
      // A bug, not a broker problem: what was not settled is given back (the driver nacks it).
      if (this.errors.size < 5) this.errors.add(messageOf(err));
      throw err;
    } finally {
      this.inFlight -= n;
      this.lastActivityUs = this.deps.clock.nowUs();
      this.lastHandledUs = this.lastActivityUs;
    }
  };

  private hold(): void {
    this.held++;
  }

  /** Decides what happens to one delivery; returns the send to make, or undefined (held). */
  private async plan(d: Delivery): Promise<Send | undefined> {
    const { options } = this;
    const tooLarge = d.value.length > this.maxBytes;
    // A body too large to replay is not parsed either; headers still give type and ids.
    const event = decodeEvent(tooLarge ? Buffer.alloc(0) : d.value, d.headers, d.key, options.decode ?? DEFAULT_DECODE);
    const info = inspectDeadLetter(d.headers, d.destination, options.to);
    const record: ReplayMessage = {
      dlq: d.destination,
      partition: d.partition,
      offset: d.offset,
      key: d.key,
      event_id: event.id,
      type: event.type,
      payment_id: event.paymentId,
      origin: info.origin,
      origin_from: info.via === undefined ? undefined : ORIGIN_HEADER[info.via],
      origin_partition: info.originPartition,
      origin_offset: info.originOffset,
      reason: info.reason,
      failed_at: info.failedAt,
      replay_count: info.replayCount,
      bytes: d.value.length,
      outcome: 'skipped',
      destination: undefined,
      problem: undefined,
    };
    const position = (this.readFrom.get(d.destination) ?? 0) + 1;
    this.readFrom.set(d.destination, position);
    this.positions.set(record, position);
    const mismatch = filterMismatch(options.filter, {
      type: event.type,
      reason: info.reason,
      paymentId: event.paymentId,
      origin: info.origin,
      timeMs: timeOf(info, d.headers, event.body),
    });
    if (mismatch !== undefined) {
      this.counts.seen++;
      record.problem = `not selected: ${mismatch}`;
      return this.leave(d, record, 'skipped');
    }
    this.counts.seen++;

    let problem = bodyProblem(d.value, this.maxBytes);
    let outcome: ReplayOutcome = 'invalid';
    let originUsable = false;
    if (problem === undefined && info.origin === undefined) {
      outcome = 'unresolved';
      problem = `no origin: none of ${Object.values(ORIGIN_HEADER).slice(1).join(', ')} is set (use --to DEST)`;
    } else if (info.origin !== undefined) {
      if (info.origin === d.destination) {
        problem ??= `its origin header (${record.origin_from}) names the DLQ itself`;
      } else {
        let exists: boolean;
        try {
          exists = await this.originExists(info.origin);
        } catch (err) {
          // The broker did not answer: nothing is decided, the message stays for the next run.
          if (this.errors.size < 5) this.errors.add(`${info.origin}: ${messageOf(err)}`);
          this.hold();
          this.count(record, 'failed');
          return undefined;
        }
        if (!exists) problem ??= `its origin '${info.origin}' (from ${record.origin_from}) does not exist on the broker`;
        else originUsable = true;
      }
    }

    if (problem !== undefined) {
      record.problem = problem;
      if (options.parkUnresolved) {
        const base = originUsable ? info.origin! : dlqBase(d.destination);
        return this.park(d, record, parkingDestination(base), `${outcome}: ${problem}`, false);
      }
      return this.leave(d, record, outcome);
    }
    const origin = info.origin!;
    if (info.replayCount >= this.maxReplays) {
      record.problem = `replayed ${info.replayCount} times already (--max-replays ${this.maxReplays})`;
      return this.park(d, record, parkingDestination(origin), record.problem, true);
    }
    this.selected++;
    if (options.limit !== undefined && this.selected >= options.limit) this.limitReached = true;
    record.destination = origin;
    record.outcome = 'replayed';
    if (options.dryRun) return this.simulate(record);
    return {
      delivery: d,
      record,
      destination: origin,
      outcome: 'replayed',
      overMax: false,
      message: {
        key: d.key ?? event.paymentId ?? event.id ?? '',
        type: event.type ?? 'unknown',
        value: d.value,
        headers: replayHeaders(d.headers, info.replayCount, this.deps.clock.nowUs()),
      },
    };
  }

  private park(d: Delivery, record: ReplayMessage, destination: string, why: string, overMax: boolean): Send | undefined {
    this.selected++;
    if (this.options.limit !== undefined && this.selected >= this.options.limit) this.limitReached = true;
    record.destination = destination;
    record.outcome = 'parked';
    if (this.options.dryRun) {
      this.hold();
      this.count(record, 'parked', overMax);
      return undefined;
    }
    const event = { type: record.type ?? 'unknown', key: d.key ?? record.payment_id ?? record.event_id ?? '' };
    return {
      delivery: d,
      record,
      destination,
      outcome: 'parked',
      overMax,
      message: { key: event.key, type: event.type, value: d.value, headers: parkedHeaders(d.headers, why) },
    };
  }

  /** The message stays in the DLQ: held (RabbitMQ, memory, dry runs) or copied to the end (Kafka). */
  private leave(d: Delivery, record: ReplayMessage, outcome: 'skipped' | 'unresolved' | 'invalid'): Send | undefined {
    record.outcome = outcome;
    if (this.options.dryRun || !this.offsetCommits) {
      this.hold();
      this.count(record, outcome);
      return undefined;
    }
    return {
      delivery: d,
      record,
      destination: d.destination,
      outcome,
      overMax: false,
      message: {
        key: d.key ?? '',
        type: record.type ?? 'unknown',
        value: d.value,
        headers: { ...d.headers, [ReplayHeader.leftBy]: this.runId },
      },
    };
  }

  /** Dry run: counted as what would happen; the delivery is held. */
  private simulate(record: ReplayMessage): undefined {
    this.hold();
    this.count(record, record.outcome);
    return undefined;
  }

  /** One line for a message that cannot be replayed (unresolved, invalid, parked for that). */
  private problem(record: ReplayMessage, parked: boolean): void {
    this.problemCount++;
    if (this.problems.length >= MAX_PROBLEM_LINES) return;
    // Kafka: partition and offset; elsewhere the message's place in the order read from its DLQ.
    const where =
      record.offset === undefined
        ? `${record.dlq} #${this.positions.get(record) ?? '?'}`
        : `${record.dlq}${record.partition === undefined ? '' : `[${record.partition}]`}@${record.offset}`;
    const what = record.event_id !== undefined ? `event ${record.event_id}` : record.key !== undefined && record.key !== '' ? `message with key ${record.key}` : 'a message without id or key';
    const would = this.options.dryRun ? 'would be ' : '';
    const fate = parked ? `${would}parked in ${record.destination}` : this.options.dryRun ? 'would stay in the DLQ' : 'left in the DLQ';
    this.problems.push(`${where} ${what}: ${record.problem}; ${fate}`);
  }

  private count(record: ReplayMessage, outcome: ReplayOutcome, overMax = false): void {
    record.outcome = outcome;
    this.counts[outcome]++;
    if (overMax) this.counts.parked_over_max_replays++;
    if (outcome === 'unresolved' || outcome === 'invalid') this.problem(record, false);
    else if (outcome === 'parked' && !overMax) this.problem(record, true);
    const origin = record.origin ?? '(unresolved)';
    const type = record.type ?? '(none)';
    const key = `${origin}\0${record.reason}\0${type}\0${outcome}`;
    const row = this.rows.get(key);
    if (row) row.count++;
    else this.rows.set(key, { origin, reason: record.reason, type, outcome, count: 1 });
    this.messages?.push(record);
  }

  private originExists(name: string): Promise<boolean> {
    let check = this.originChecks.get(name);
    if (!check) {
      check = existingDestinations(this.deps.driver, [name]).then((found) => found.has(name));
      this.originChecks.set(name, check);
      // A broker hiccup must not be remembered as "missing".
      check.catch(() => this.originChecks.delete(name));
    }
    return check;
  }

  private declareParking(name: string): Promise<void> {
    let declared = this.parkingDeclared.get(name);
    if (!declared) {
      declared = this.deps.driver.declare([{ name }]).then(() => undefined);
      this.parkingDeclared.set(name, declared);
      declared.catch(() => this.parkingDeclared.delete(name));
    }
    return declared;
  }

  /**
   * Sends in batches per destination (order kept within each), a few batches in flight, paced by
   * the rate; acks each delivery once its batch is confirmed. A failed batch's deliveries are
   * held: they stay in the DLQ for the next run.
   */
  private async execute(sends: Send[]): Promise<void> {
    if (sends.length === 0) return;
    const { driver, clock, signal } = this.deps;
    const rate = this.options.rate;
    const batchSize = Math.max(1, rate === undefined ? driver.capabilities.sendBatchSize : Math.min(driver.capabilities.sendBatchSize, Math.floor(rate / 10)));
    const maxInFlight = Math.max(1, driver.capabilities.sendMaxInFlight);
    const byDestination = new Map<string, Send[]>();
    for (const s of sends) {
      const list = byDestination.get(s.destination);
      if (list) list.push(s);
      else byDestination.set(s.destination, [s]);
    }
    const chunks: Send[][] = [];
    for (const list of byDestination.values()) for (let i = 0; i < list.length; i += batchSize) chunks.push(list.slice(i, i + batchSize));

    const running = new Set<Promise<void>>();
    for (const [i, chunk] of chunks.entries()) {
      while (running.size >= maxInFlight) await Promise.race(running);
      if (signal?.aborted) {
        // Interrupted: sends already started finish; the rest is not started and stays in the DLQ.
        for (const rest of chunks.slice(i)) for (let k = 0; k < rest.length; k++) this.hold();
        break;
      }
      if (rate !== undefined) {
        this.limiter ??= new RateLimiter(rate, clock.nowUs());
        let lastUs = 0;
        for (let i = 0; i < chunk.length; i++) lastUs = this.limiter.takeUs();
        const waitMs = (lastUs - clock.nowUs()) / 1000;
        if (waitMs > 0) await clock.sleep(waitMs, signal);
        if (signal?.aborted) {
          for (const rest of chunks.slice(i)) for (let k = 0; k < rest.length; k++) this.hold();
          break;
        }
      }
      const p = this.sendChunk(chunk).finally(() => running.delete(p));
      running.add(p);
    }
    await Promise.all(running);
  }

  private async sendChunk(chunk: Send[]): Promise<void> {
    const { driver } = this.deps;
    const destination = chunk[0]!.destination;
    try {
      if (chunk[0]!.outcome === 'parked') await this.declareParking(destination);
      await driver.send(
        destination,
        chunk.map((s) => s.message),
      );
    } catch (err) {
      if (this.errors.size < 5) this.errors.add(`${destination}: ${messageOf(err)}`);
      for (const s of chunk) {
        this.hold();
        s.record.destination = destination;
        this.count(s.record, 'failed');
      }
      return;
    }
    for (const s of chunk) {
      s.delivery.ack();
      this.count(s.record, s.outcome, s.overMax);
    }
  }

  result(stoppedBy: ReplayResult['stopped_by'], elapsedUs: number): ReplayResult {
    const c = this.counts;
    const left = (this.options.parkUnresolved ? 0 : c.unresolved + c.invalid) + c.failed;
    const elapsedS = elapsedUs / 1e6;
    const activeS = this.firstDeliveryUs === undefined ? 0 : Math.max(0, (this.lastHandledUs ?? this.firstDeliveryUs) - this.firstDeliveryUs) / 1e6;
    return {
      dry_run: this.options.dryRun,
      dlqs: this.options.dlqs,
      ...c,
      left,
      rows: [...this.rows.values()].sort((a, b) => a.origin.localeCompare(b.origin) || a.reason.localeCompare(b.reason) || a.type.localeCompare(b.type) || a.outcome.localeCompare(b.outcome)),
      problems: [...this.problems],
      problem_count: this.problemCount,
      errors: [...this.errors],
      messages: this.messages,
      stopped_by: stoppedBy,
      window_full: this.windowFull,
      elapsed_s: Math.round(elapsedS * 1000) / 1000,
      active_s: Math.round(activeS * 1000) / 1000,
      messages_per_s: Math.round((c.replayed + c.parked) / Math.max(activeS, 0.001)),
      interrupted: stoppedBy === 'signal',
      run_id: this.runId,
    };
  }
}

export async function replayDlq(options: ReplayOptions, deps: ReplayDeps): Promise<ReplayResult> {
  const { driver, clock, signal } = deps;
  if (options.dlqs.length === 0) throw new TopologyError('replay-dlq: no DLQ to read');
  const wanted = [...new Set(options.dlqs)];
  const found = await existingDestinations(driver, options.to === undefined ? wanted : [...wanted, options.to]);
  const missing = wanted.filter((d) => !found.has(d));
  if (missing.length > 0) {
    throw new TopologyError(`no such DLQ on ${driver.url.redacted}: ${missing.join(', ')}`, { hint: 'check the name (--dlq), or the broker URL' });
  }
  if (options.to !== undefined && !found.has(options.to)) {
    throw new TopologyError(`--to ${options.to}: no such destination on ${driver.url.redacted}`, { hint: 'replay-dlq never creates the destination it replays to' });
  }

  const run = new ReplayRun({ ...options, dlqs: wanted }, deps);
  const subscription: Subscription = await driver.subscribe(
    { destinations: wanted, group: options.group ?? REPLAY_DEFAULTS.group, fromBeginning: true, prefetch: options.window ?? REPLAY_DEFAULTS.window },
    run.handle,
  );
  deps.onReady?.();
  const startUs = clock.nowUs();
  run.lastActivityUs = startUs;
  const idleUs = (options.idleTimeoutMs ?? REPLAY_DEFAULTS.idleTimeoutMs) * 1000;
  const tickMs = Math.max(1, Math.min(PROGRESS_EVERY_MS, idleUs / 4000));
  let stoppedBy: ReplayResult['stopped_by'];
  try {
    for (;;) {
      const nowUs = clock.nowUs();
      if (signal?.aborted) {
        stoppedBy = 'signal';
        break;
      }
      if (run.done) {
        stoppedBy = 'limit';
        break;
      }
      // A broker away is not a drained DLQ: the idle timeout counts from when it is back.
      if (brokerAway(driver.link())) run.lastActivityUs = nowUs;
      if (run.idle && nowUs - run.lastActivityUs >= idleUs) {
        stoppedBy = 'idle';
        break;
      }
      deps.onProgress?.(run.snapshot((nowUs - startUs) / 1000));
      await clock.sleep(tickMs, signal);
    }
  } finally {
    run.stop();
    // Waits for the handler in flight (its sends finish and are acked); what is held goes back.
    await subscription.close();
  }
  const elapsedUs = Math.max(1, clock.nowUs() - startUs);
  deps.onProgress?.(run.snapshot(elapsedUs / 1000));
  return run.result(stoppedBy, elapsedUs);
}
