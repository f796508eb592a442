/**
 * What `replay-dlq` does with each dead letter (replay.ts carries it out): read what the message
 * says about itself (replay-origin.ts), apply the selection (replay-select.ts), check its body and
 * its origin, and decide: replay it to its origin, park it, or leave it in the DLQ.
 */
import { isUtf8 } from 'node:buffer';
import type { Delivery, Driver, Headers } from '../drivers/types.js';
import { messageOf } from '../errors.js';
import { decodeEvent, DEFAULT_DECODE, getPath, type DecodeOptions } from '../events/decode.js';
import { dlqBase, inspectDeadLetter, ORIGIN_HEADER, parkingDestination, type DeadLetterInfo } from './replay-origin.js';
import { filterMismatch, type ReplayFilter } from './replay-select.js';
import type { ReplayMessage } from './replay-tally.js';

export interface ReplayDecideOptions {
  /** Every message's origin instead of its own (`--to`). */
  to: string | undefined;
  filter: ReplayFilter;
  maxReplays: number;
  maxBytes: number;
  parkUnresolved: boolean;
  decode: DecodeOptions | undefined;
}

/** A delivery as read: its record (what it is, where it came from) and the dead-letter headers. */
export interface Inspected {
  record: ReplayMessage;
  info: DeadLetterInfo;
  timeMs: number | undefined;
}

export type ReplayDecision =
  /** Republish to its origin with the replay count + 1. */
  | { action: 'replay'; destination: string; replayCount: number }
  /** Republish to a parking destination; `overMax`: because it was replayed --max-replays times. */
  | { action: 'park'; destination: string; why: string; overMax: boolean }
  /** It stays in the DLQ. */
  | { action: 'leave'; outcome: 'skipped' | 'unresolved' | 'invalid' }
  /** The broker did not say whether its origin exists: nothing is decided, it stays for the next run. */
  | { action: 'undecided'; error: string };

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

export class ReplayDecider {
  private readonly originChecks = new Map<string, Promise<boolean>>();

  constructor(
    private readonly options: ReplayDecideOptions,
    private readonly driver: Driver,
  ) {}

  /** Reads a delivery: its record, with the outcome still to be decided. */
  inspect(d: Delivery): Inspected {
    const { options } = this;
    const tooLarge = d.value.length > options.maxBytes;
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
    return { record, info, timeMs: timeOf(info, d.headers, event.body) };
  }

  /** Decides what happens to an inspected delivery; sets the record's problem where it has one. */
  async decide(d: Delivery, { record, info, timeMs }: Inspected): Promise<ReplayDecision> {
    const { options } = this;
    const mismatch = filterMismatch(options.filter, { type: record.type, reason: info.reason, paymentId: record.payment_id, origin: info.origin, timeMs });
    if (mismatch !== undefined) {
      record.problem = `not selected: ${mismatch}`;
      return { action: 'leave', outcome: 'skipped' };
    }

    let problem = bodyProblem(d.value, options.maxBytes);
    let outcome: 'unresolved' | 'invalid' = 'invalid';
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
          return { action: 'undecided', error: `${info.origin}: ${messageOf(err)}` };
        }
        if (!exists) problem ??= `its origin '${info.origin}' (from ${record.origin_from}) does not exist on the broker`;
        else originUsable = true;
      }
    }

    if (problem !== undefined) {
      record.problem = problem;
      if (!options.parkUnresolved) return { action: 'leave', outcome };
      const base = originUsable ? info.origin! : dlqBase(d.destination);
      return { action: 'park', destination: parkingDestination(base), why: `${outcome}: ${problem}`, overMax: false };
    }
    const origin = info.origin!;
    if (info.replayCount >= options.maxReplays) {
      record.problem = `replayed ${info.replayCount} times already (--max-replays ${options.maxReplays})`;
      return { action: 'park', destination: parkingDestination(origin), why: record.problem, overMax: true };
    }
    return { action: 'replay', destination: origin, replayCount: info.replayCount };
  }

  /** Whether a destination exists, asked once per name (a failed check is asked again). */
  private originExists(name: string): Promise<boolean> {
    let check = this.originChecks.get(name);
    if (!check) {
      check = this.driver.exists([name]).then((found) => found.has(name));
      this.originChecks.set(name, check);
      // A broker hiccup must not be remembered as "missing".
      check.catch(() => this.originChecks.delete(name));
    }
    return check;
  }
}
