/**
 * The books of a `replay-dlq` run (replay.ts): what happened to each message, counted, by origin,
 * reason, type and outcome, the lines for messages that cannot be replayed, the distinct errors,
 * and the run's ReplayResult built from them.
 */

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
  /**
   * Republished (confirmed) while the link its DLQ delivery came on was lost, so its removal from
   * the DLQ could not reach the broker: the DLQ hands it out again and it is republished once
   * more, so the origin holds it twice (same event id). Counted once, under `replayed` or `parked`.
   */
  duplicates: number;
  /**
   * Republishes whose confirm was pending when the connection was lost: the broker may have
   * stored them (README "Failure drills"); the message stays in the DLQ and is republished again,
   * so the origin may hold it once more.
   */
  unconfirmed: number;
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
  stopped_by: 'idle' | 'limit' | 'signal' | 'broker-gone';
  /** The run held `window` messages and could not look further. */
  window_full: boolean;
  /** The whole run, the idle timeout at its end included. */
  elapsed_s: number;
  /** From the first message received to the last one handled. */
  active_s: number;
  /** Replayed + parked per second of active_s. */
  messages_per_s: number;
  interrupted: boolean;
  /** Stopped because the broker stayed away longer than the reconnect timeout. */
  broker_gone: boolean;
  run_id: string;
}

export interface ReplayTallyOptions {
  dlqs: string[];
  dryRun: boolean;
  parkUnresolved: boolean;
  /** Keep every record counted (for `--dry-run --json`). */
  listMessages: boolean;
  /** Deliveries held at once, at most (the subscription's prefetch). */
  window: number;
}

const MAX_PROBLEM_LINES = 100;
const MAX_ERRORS = 5;

export class ReplayTally {
  private readonly counts: ReplayCounts = {
    seen: 0,
    replayed: 0,
    parked: 0,
    parked_over_max_replays: 0,
    skipped: 0,
    unresolved: 0,
    invalid: 0,
    failed: 0,
    duplicates: 0,
    unconfirmed: 0,
  };
  private readonly rows = new Map<string, ReplayRow>();
  /** The first problem lines, each with its record (a retracted count takes its line back). */
  private readonly problems: Array<{ record: ReplayMessage; line: string }> = [];
  private problemCount = 0;
  private readonly problemRecords = new WeakSet<ReplayMessage>();
  private readonly overMax = new WeakSet<ReplayMessage>();
  private readonly errors = new Set<string>();
  private readonly messages: ReplayMessage[] | undefined;
  /** Deliveries left unsettled on purpose: given back when the subscription closes. */
  private held = 0;
  /** Messages read per DLQ, and each record's place in that order: a position where there is no offset. */
  private readonly readFrom = new Map<string, number>();
  private readonly positions = new WeakMap<ReplayMessage, number>();

  constructor(private readonly options: ReplayTallyOptions) {
    this.messages = options.listMessages ? [] : undefined;
  }

  get windowFull(): boolean {
    return this.held >= this.options.window;
  }

  /** A delivery left unsettled on purpose. */
  hold(): void {
    this.held++;
  }

  /** A held delivery the broker took back by itself (its link was lost): no longer held by the run. */
  unhold(): void {
    this.held--;
  }

  /** Notes a distinct error (the first few). */
  error(text: string): void {
    if (this.errors.size < MAX_ERRORS) this.errors.add(text);
  }

  /** A message looked at: counted as seen, and given its place in the order read from its DLQ. */
  look(record: ReplayMessage): void {
    const position = (this.readFrom.get(record.dlq) ?? 0) + 1;
    this.readFrom.set(record.dlq, position);
    this.positions.set(record, position);
    this.counts.seen++;
  }

  /** A message looked at whose delivery went back to the DLQ by itself: it is looked at again when it comes back. */
  unlook(): void {
    this.counts.seen--;
  }

  /** A republish confirmed after its DLQ delivery could no longer be settled (ReplayCounts.duplicates). */
  duplicate(): void {
    this.counts.duplicates++;
  }

  /** Republishes whose confirm was pending when the connection was lost (ReplayCounts.unconfirmed). */
  unconfirmed(n: number): void {
    this.counts.unconfirmed += n;
  }

  snapshot(elapsedMs: number): ReplayProgress {
    return { ...this.counts, elapsedMs };
  }

  count(record: ReplayMessage, outcome: ReplayOutcome, overMax = false): void {
    record.outcome = outcome;
    this.counts[outcome]++;
    if (overMax) {
      this.counts.parked_over_max_replays++;
      this.overMax.add(record);
    }
    if (outcome === 'unresolved' || outcome === 'invalid') this.problem(record, false);
    else if (outcome === 'parked' && !overMax) this.problem(record, true);
    const key = rowKey(record);
    const row = this.rows.get(key);
    if (row) row.count++;
    else this.rows.set(key, { origin: record.origin ?? '(unresolved)', reason: record.reason, type: record.type ?? '(none)', outcome, count: 1 });
    this.messages?.push(record);
  }

  /**
   * Takes back what count() counted for a record whose delivery went back to the DLQ by itself
   * (its link was lost): it is counted again, once, when it comes back.
   */
  retract(record: ReplayMessage): void {
    this.counts[record.outcome]--;
    if (this.overMax.delete(record)) this.counts.parked_over_max_replays--;
    if (this.problemRecords.delete(record)) {
      this.problemCount--;
      const at = this.problems.findIndex((p) => p.record === record);
      if (at !== -1) this.problems.splice(at, 1);
    }
    const key = rowKey(record);
    const row = this.rows.get(key);
    if (row && --row.count === 0) this.rows.delete(key);
    const listed = this.messages?.lastIndexOf(record) ?? -1;
    if (listed !== -1) this.messages!.splice(listed, 1);
  }

  /** One line for a message that cannot be replayed (unresolved, invalid, parked for that). */
  private problem(record: ReplayMessage, parked: boolean): void {
    this.problemCount++;
    this.problemRecords.add(record);
    if (this.problems.length >= MAX_PROBLEM_LINES) return;
    const { dryRun } = this.options;
    // Kafka: partition and offset; elsewhere the message's place in the order read from its DLQ.
    const where =
      record.offset === undefined
        ? `${record.dlq} #${this.positions.get(record) ?? '?'}`
        : `${record.dlq}${record.partition === undefined ? '' : `[${record.partition}]`}@${record.offset}`;
    const what = record.event_id !== undefined ? `event ${record.event_id}` : record.key !== undefined && record.key !== '' ? `message with key ${record.key}` : 'a message without id or key';
    const would = dryRun ? 'would be ' : '';
    const fate = parked ? `${would}parked in ${record.destination}` : dryRun ? 'would stay in the DLQ' : 'left in the DLQ';
    this.problems.push({ record, line: `${where} ${what}: ${record.problem}; ${fate}` });
  }

  /**
   * The run's result. `elapsedUs`: the whole run; `activeUs`: from the first delivery to the end
   * of the last handler call (0 when nothing arrived).
   */
  result(run: { stoppedBy: ReplayResult['stopped_by']; elapsedUs: number; activeUs: number; runId: string }): ReplayResult {
    const c = this.counts;
    const left = (this.options.parkUnresolved ? 0 : c.unresolved + c.invalid) + c.failed;
    const elapsedS = run.elapsedUs / 1e6;
    const activeS = run.activeUs / 1e6;
    return {
      dry_run: this.options.dryRun,
      dlqs: this.options.dlqs,
      ...c,
      left,
      rows: [...this.rows.values()].sort((a, b) => a.origin.localeCompare(b.origin) || a.reason.localeCompare(b.reason) || a.type.localeCompare(b.type) || a.outcome.localeCompare(b.outcome)),
      problems: this.problems.map((p) => p.line),
      problem_count: this.problemCount,
      errors: [...this.errors],
      messages: this.messages,
      stopped_by: run.stoppedBy,
      window_full: this.windowFull,
      elapsed_s: Math.round(elapsedS * 1000) / 1000,
      active_s: Math.round(activeS * 1000) / 1000,
      messages_per_s: Math.round((c.replayed + c.parked) / Math.max(activeS, 0.001)),
      interrupted: run.stoppedBy === 'signal',
      broker_gone: run.stoppedBy === 'broker-gone',
      run_id: run.runId,
    };
  }
}

/** A record's row in the table: origin, reason, type and outcome. */
function rowKey(record: ReplayMessage): string {
  return `${record.origin ?? '(unresolved)'}\0${record.reason}\0${record.type ?? '(none)'}\0${record.outcome}`;
}
