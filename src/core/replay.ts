/**
 * `replay-dlq`: puts dead-lettered messages back where they came from (README "`payq replay-dlq`"). Reads the
 * DLQs as the consumer group `payq-replay`, works out each message's origin from its headers
 * (replay-origin.ts), applies the selection (replay-select.ts), decides (replay-decide.ts) and then,
 * per message (sent by paced-sender.ts, counted by replay-tally.ts):
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
 * A link lost mid-run (README "Failure drills"): a delivery the broker takes back by itself with
 * the link (RabbitMQ requeues what a lost channel held; Delivery.settleable is false) comes again,
 * so it is not republished now, and what was counted for it (seen, held, failed) is taken back: it
 * is counted when it comes again, once. A republish confirmed just after its delivery's link went
 * cannot be removed from the DLQ, so it is sent once more when the message comes back: counted as
 * `duplicates`; a republish whose confirm was pending at the loss is `unconfirmed` (maybe stored).
 * Both are bounded by what was in flight at the loss (batch size × sends in flight).
 *
 * `dryRun` changes nothing: every message is held unacked and given back when the run ends
 * (RabbitMQ returns them to the queue in order; Kafka commits no offset), nothing is sent.
 * Holding is bounded by `window` (the subscription's prefetch): a dry run looks at most that many
 * messages, and a run that leaves that many in place stops there; the result says so.
 *
 * The run ends by itself once no message arrived for `idleTimeoutMs` (the DLQs are drained), after
 * `limit` messages were replayed or parked, on the abort signal (in-flight sends finish first), or
 * when the broker stayed away past the reconnect timeout (the link is `gone`: what was not
 * republished stays in the DLQ).
 * Returns a ReplayResult; never prints.
 */
import { randomBytes } from 'node:crypto';
import type { Delivery, Driver, Headers, OutgoingMessage, Subscription } from '../drivers/types.js';
import { isPayqError, messageOf, TopologyError } from '../errors.js';
import type { DecodeOptions } from '../events/decode.js';
import type { Clock } from './clock.js';
import { REPLAY_DEFAULTS } from './defaults.js';
import { PacedSender } from './paced-sender.js';
import { ReplayDecider } from './replay-decide.js';
import { parkedHeaders, ReplayHeader, replayHeaders } from './replay-origin.js';
import type { ReplayFilter } from './replay-select.js';
import { ReplayTally, type ReplayMessage, type ReplayOutcome, type ReplayProgress, type ReplayResult } from './replay-tally.js';

export type { ReplayCounts, ReplayMessage, ReplayOutcome, ReplayProgress, ReplayResult, ReplayRow } from './replay-tally.js';
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

export { REPLAY_DEFAULTS };

export interface ReplayDeps {
  driver: Driver;
  clock: Clock;
  signal?: AbortSignal | undefined;
  /** About every 100 ms, and once at the end. */
  onProgress?: ((progress: ReplayProgress) => void) | undefined;
  /** Subscribed to the DLQs. */
  onReady?: (() => void) | undefined;
}

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

/** A delivery left unsettled on purpose, and what the run counted for it. */
interface Hold {
  delivery: Delivery;
  /** Looked at (counted as seen), when it was. */
  record: ReplayMessage | undefined;
  /** Its outcome was counted (failed, or what a dry run would do). */
  counted: boolean;
  /** Chosen to replay or park: it counted against --limit. */
  selected: boolean;
}

/** The message a delivery is sent on as: its body, these headers. */
function resend(d: Delivery, record: ReplayMessage, headers: Headers, key = d.key ?? record.payment_id ?? record.event_id ?? ''): OutgoingMessage {
  return { key, type: record.type ?? 'unknown', value: d.value, headers };
}

class ReplayRun {
  readonly tally: ReplayTally;
  private readonly decider: ReplayDecider;
  private readonly sender: PacedSender;
  private inFlight = 0;
  private stopping = false;
  private limitReached = false;
  lastActivityUs: number;
  /** From the first delivery to the end of the last handler call: the time spent moving messages. */
  private firstDeliveryUs: number | undefined;
  private lastHandledUs: number | undefined;
  /** Kafka partitions (`dlq\0partition`) in which this run met its own left-behind copies. */
  private readonly wrapped = new Set<string>();
  private readonly parkingDeclared = new Map<string, Promise<void>>();
  /** Acting on a message decided to replay or park it (counts against --limit). */
  private selected = 0;
  /** What is held, to take back what was counted for the deliveries the broker takes back itself. */
  private holds: Hold[] = [];
  private readonly batchSize: number;
  /** Acks commit offsets (Kafka): leaving a message in place means copying it to the DLQ's end. */
  private readonly offsetCommits: boolean;
  readonly runId: string;

  constructor(
    private readonly options: ReplayOptions,
    private readonly deps: ReplayDeps,
  ) {
    const { driver, clock, signal } = deps;
    const parkUnresolved = options.parkUnresolved ?? false;
    this.tally = new ReplayTally({
      dlqs: options.dlqs,
      dryRun: options.dryRun,
      parkUnresolved,
      listMessages: options.listMessages ?? false,
      window: options.window ?? REPLAY_DEFAULTS.window,
    });
    this.decider = new ReplayDecider(
      {
        to: options.to,
        filter: options.filter,
        maxReplays: options.maxReplays ?? REPLAY_DEFAULTS.maxReplays,
        maxBytes: options.maxBytes ?? REPLAY_DEFAULTS.maxBytes,
        parkUnresolved,
        decode: options.decode,
      },
      driver,
    );
    const rate = options.rate;
    const { sendBatchSize, sendMaxInFlight } = driver.tuning;
    this.batchSize = Math.max(1, rate === undefined ? sendBatchSize : Math.min(sendBatchSize, Math.floor(rate / 10)));
    this.sender = new PacedSender({ clock, signal, rate, maxInFlight: Math.max(1, sendMaxInFlight) });
    this.offsetCommits = driver.capabilities.partitions;
    this.runId = options.runId ?? randomBytes(6).toString('hex');
    this.lastActivityUs = clock.nowUs();
  }

  get idle(): boolean {
    return this.inFlight === 0;
  }

  get done(): boolean {
    return this.limitReached && this.inFlight === 0;
  }

  stop(): void {
    this.stopping = true;
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
      // Something came back: what the broker took back by itself (a lost link) is counted again when it comes.
      if (deliveries.some((d) => d.redelivered || !d.settleable)) this.reconcile();
      const sends: Send[] = [];
      for (const d of deliveries) {
        // Its link is gone: the broker hands it out again (types.ts, settleable); acting on it now would be done twice.
        if (!d.settleable) continue;
        if (this.stopping || this.limitReached) {
          this.hold(d);
          continue;
        }
        if (this.offsetCommits && !this.options.dryRun) {
          const partitionKey = `${d.destination}\0${d.partition ?? ''}`;
          if (d.headers[ReplayHeader.leftBy] === this.runId) this.wrapped.add(partitionKey);
          if (this.wrapped.has(partitionKey)) {
            this.hold(d);
            continue;
          }
        }
        const send = await this.plan(d);
        if (send) sends.push(send);
      }
      await this.execute(sends);
    } catch (err) {
      // A bug, not a broker problem: what was not settled is given back (the driver nacks it).
      this.tally.error(messageOf(err));
      throw err;
    } finally {
      this.inFlight -= n;
      this.lastActivityUs = this.deps.clock.nowUs();
      this.lastHandledUs = this.lastActivityUs;
    }
  };

  /** Carries out the decision on one delivery; returns the send to make, or undefined (held). */
  private async plan(d: Delivery): Promise<Send | undefined> {
    const inspected = this.decider.inspect(d);
    const { record } = inspected;
    this.tally.look(record);
    const decision = await this.decider.decide(d, inspected);
    switch (decision.action) {
      case 'undecided':
        this.tally.error(decision.error);
        this.hold(d, record, { counted: true });
        this.tally.count(record, 'failed');
        return undefined;
      case 'leave':
        return this.leave(d, record, decision.outcome);
      case 'park':
        this.select(record, decision.destination, 'parked');
        if (this.options.dryRun) return this.simulate(d, record, decision.overMax, true);
        return { delivery: d, record, destination: decision.destination, outcome: 'parked', overMax: decision.overMax, message: resend(d, record, parkedHeaders(d.headers, decision.why)) };
      case 'replay':
        this.select(record, decision.destination, 'replayed');
        if (this.options.dryRun) return this.simulate(d, record, false, true);
        return {
          delivery: d,
          record,
          destination: decision.destination,
          outcome: 'replayed',
          overMax: false,
          message: resend(d, record, replayHeaders(d.headers, decision.replayCount, this.deps.clock.nowUs())),
        };
    }
  }

  /** A message to replay or park: it counts against --limit. */
  private select(record: ReplayMessage, destination: string, outcome: 'replayed' | 'parked'): void {
    this.selected++;
    if (this.options.limit !== undefined && this.selected >= this.options.limit) this.limitReached = true;
    record.destination = destination;
    record.outcome = outcome;
  }

  /**
   * A looked-at message whose delivery the broker took back by itself (its link was lost): it
   * comes again and is looked at, chosen and counted then, once.
   */
  private comesBack(selected: boolean): void {
    this.tally.unlook();
    if (!selected) return;
    this.selected--;
    this.limitReached = this.options.limit !== undefined && this.selected >= this.options.limit;
  }

  private hold(delivery: Delivery, record?: ReplayMessage, how: { counted?: boolean; selected?: boolean } = {}): void {
    this.tally.hold();
    this.holds.push({ delivery, record, counted: how.counted ?? false, selected: how.selected ?? false });
  }

  /** Forgets the holds whose delivery is no longer settleable (the broker has it back), and what was counted for them. */
  reconcile(): void {
    if (this.holds.every((h) => h.delivery.settleable)) return;
    const kept: Hold[] = [];
    for (const h of this.holds) {
      if (h.delivery.settleable) {
        kept.push(h);
        continue;
      }
      this.tally.unhold();
      if (h.record === undefined) continue;
      if (h.counted) this.tally.retract(h.record);
      this.comesBack(h.selected);
    }
    this.holds = kept;
  }

  /** The message stays in the DLQ: held (RabbitMQ, memory, dry runs) or copied to the end (Kafka). */
  private leave(d: Delivery, record: ReplayMessage, outcome: 'skipped' | 'unresolved' | 'invalid'): Send | undefined {
    record.outcome = outcome;
    if (this.options.dryRun || !this.offsetCommits) return this.simulate(d, record);
    return {
      delivery: d,
      record,
      destination: d.destination,
      outcome,
      overMax: false,
      message: resend(d, record, { ...d.headers, [ReplayHeader.leftBy]: this.runId }, d.key ?? ''),
    };
  }

  /** Held and counted as what happens (or, in a dry run, would happen) to it. */
  private simulate(d: Delivery, record: ReplayMessage, overMax = false, selected = false): undefined {
    this.hold(d, record, { counted: true, selected });
    this.tally.count(record, record.outcome, overMax);
    return undefined;
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
    const { sender, batchSize } = this;
    const { signal } = this.deps;
    const byDestination = new Map<string, Send[]>();
    for (const s of sends) {
      const list = byDestination.get(s.destination);
      if (list) list.push(s);
      else byDestination.set(s.destination, [s]);
    }
    const chunks: Send[][] = [];
    for (const list of byDestination.values()) for (let i = 0; i < list.length; i += batchSize) chunks.push(list.slice(i, i + batchSize));

    // Interrupted: sends already started finish; the rest is not started and stays in the DLQ.
    const holdAll = (rest: Send[][]) => {
      for (const chunk of rest) for (const s of chunk) this.hold(s.delivery, s.record, { selected: true });
    };
    for (const [i, planned] of chunks.entries()) {
      if (sender.full) await sender.room();
      // The link may have gone while this waited: what the broker took back is not republished now (nor paced).
      let chunk = this.stillSettleable(planned);
      if (signal?.aborted) {
        holdAll([chunk, ...chunks.slice(i + 1)]);
        break;
      }
      if (chunk.length === 0) continue;
      if (sender.paced) {
        await sender.takeAll(chunk.length);
        chunk = this.stillSettleable(chunk);
        if (signal?.aborted) {
          holdAll([chunk, ...chunks.slice(i + 1)]);
          break;
        }
      }
      if (chunk.length > 0) sender.track(this.sendChunk(chunk));
    }
    await sender.settle();
  }

  /** The sends whose delivery can still be settled; the others come back (comesBack). */
  private stillSettleable(sends: Send[]): Send[] {
    const live: Send[] = [];
    for (const s of sends) {
      if (s.delivery.settleable) live.push(s);
      else this.comesBack(true);
    }
    return live;
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
      this.tally.error(`${destination}: ${messageOf(err)}`);
      // Pending when the connection was lost: maybe stored, and sent again when the message comes round again.
      if (isPayqError(err) && err.unconfirmed) this.tally.unconfirmed(chunk.length);
      for (const s of chunk) {
        // The broker took it back with its link: it comes again and is sent then; not a failure.
        if (!s.delivery.settleable) {
          this.comesBack(true);
          continue;
        }
        this.hold(s.delivery, s.record, { counted: true, selected: true });
        s.record.destination = destination;
        this.tally.count(s.record, 'failed');
      }
      return;
    }
    for (const s of chunk) {
      // Confirmed, but the ack cannot reach the broker any more: it comes back and is sent once
      // more (a duplicate, counted), and counted as replayed or parked then.
      if (!s.delivery.settleable) {
        this.tally.duplicate();
        this.comesBack(true);
        continue;
      }
      s.delivery.ack();
      this.tally.count(s.record, s.outcome, s.overMax);
    }
  }

  result(stoppedBy: ReplayResult['stopped_by'], elapsedUs: number): ReplayResult {
    const activeUs = this.firstDeliveryUs === undefined ? 0 : Math.max(0, (this.lastHandledUs ?? this.firstDeliveryUs) - this.firstDeliveryUs);
    return this.tally.result({ stoppedBy, elapsedUs, activeUs, runId: this.runId });
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
      const link = driver.link();
      if (link.gone) {
        stoppedBy = 'broker-gone';
        break;
      }
      // A broker away is not a drained DLQ: the idle timeout counts from when it is back.
      if (brokerAway(link)) run.lastActivityUs = nowUs;
      if (run.idle && nowUs - run.lastActivityUs >= idleUs) {
        stoppedBy = 'idle';
        break;
      }
      deps.onProgress?.(run.tally.snapshot((nowUs - startUs) / 1000));
      await clock.sleep(tickMs, signal);
    }
  } finally {
    run.stop();
    // What the broker took back by itself (a link lost for good) is not counted as held or failed.
    run.reconcile();
    // Waits for the handler in flight (its sends finish and are acked); what is held goes back.
    await subscription.close();
  }
  const elapsedUs = Math.max(1, clock.nowUs() - startUs);
  deps.onProgress?.(run.tally.snapshot(elapsedUs / 1000));
  return run.result(stoppedBy, elapsedUs);
}
