/**
 * How consume and trace read a destination, chosen by the user and said in their first line
 * (README "How payq reads a destination it did not build"):
 * - tap (default): observe, take nothing. Kafka: a consumer group of its own; NATS: an ephemeral
 *   consumer; RabbitMQ: a queue of its own bound to payq's exchange (refused on a queue payq did
 *   not declare: what is published to it directly would never reach the tap).
 * - group: join the group (`--group`) and take the messages; on RabbitMQ, compete with the
 *   queue's consumers. With `--requeue` (queues only) every message read is held unacked until
 *   the reader ends, then handed back: each is seen once per run (a nack at once would bring the
 *   same messages back in a loop), the queue keeps them, flagged redelivered, and a quorum queue
 *   counts one more delivery for each.
 * - exchange: RabbitMQ, tap an exchange the user names with a binding key (takes nothing).
 * - stream: RabbitMQ stream queue, read from an offset (a stream keeps its messages).
 */
import type { Driver, SubscribeOptions } from '../drivers/types.js';
import { UsageError } from '../errors.js';

export type ReadMode =
  | { kind: 'tap' }
  | { kind: 'group'; group: string; requeue: boolean }
  | { kind: 'exchange'; exchange: string; binding: string }
  | { kind: 'stream'; offset: string | number | Date };

export interface ReadModeFlags {
  group?: string | undefined;
  requeue?: boolean | undefined;
  exchange?: string | undefined;
  binding?: string | undefined;
  streamOffset?: string | undefined;
}

/** With --requeue, the most messages held at once unless --prefetch says otherwise. */
export const REQUEUE_DEFAULT_PREFETCH = 10_000;

/** Parses `first`, `last`, `next`, an offset number or an ISO time. */
export function parseStreamOffset(text: string): string | number | Date {
  if (text === 'first' || text === 'last' || text === 'next') return text;
  if (/^\d+$/.test(text)) return Number(text);
  const time = /^\d{4}-\d{2}-\d{2}/.test(text) ? new Date(text) : undefined;
  if (time && !Number.isNaN(time.getTime())) return time;
  throw new UsageError(`--stream-offset '${text}': expected first, last, next, an offset number or an ISO time (2026-01-01T00:00:00Z)`);
}

/** The mode the flags ask for; UsageError (exit 2) for flags that contradict each other or the broker. */
export function readMode(flags: ReadModeFlags, driver: Pick<Driver, 'name' | 'capabilities'>): ReadMode {
  const given = [
    flags.group !== undefined ? '--group' : undefined,
    flags.exchange !== undefined ? '--exchange' : undefined,
    flags.streamOffset !== undefined ? '--stream-offset' : undefined,
  ].filter((f): f is string => f !== undefined);
  if (given.length > 1) throw new UsageError(`${given.join(' and ')} are different ways to read: choose one`);
  if (flags.requeue && flags.group === undefined) {
    throw new UsageError('--requeue goes with --group: it hands back what a competing consumer read; without --group payq takes nothing anyway');
  }
  if ((flags.exchange === undefined) !== (flags.binding === undefined)) throw new UsageError('--exchange and --binding go together: the exchange to tap and the binding key');
  const unsupported =
    flags.exchange !== undefined && !driver.capabilities.exchangeTaps
      ? '--exchange'
      : flags.streamOffset !== undefined && !driver.capabilities.streamOffsets
        ? '--stream-offset'
        : undefined;
  if (unsupported !== undefined) {
    throw new UsageError(`${unsupported} is a RabbitMQ mode; on ${driver.name} a tap (no --group) already reads without taking`);
  }
  if (flags.requeue && driver.capabilities.replayFromBeginning) {
    throw new UsageError(`--requeue is for queues, where reading takes the message; on ${driver.name} a tap (no --group) reads without taking`);
  }
  if (flags.exchange !== undefined) return { kind: 'exchange', exchange: flags.exchange, binding: flags.binding! };
  if (flags.streamOffset !== undefined) return { kind: 'stream', offset: parseStreamOffset(flags.streamOffset) };
  if (flags.group !== undefined) return { kind: 'group', group: flags.group, requeue: flags.requeue === true };
  return { kind: 'tap' };
}

/** Whether the mode takes messages from the destination's consumers. */
export function takesMessages(mode: ReadMode): boolean {
  return mode.kind === 'group' && !mode.requeue;
}

/** How a tap reads on this broker, said after the mode in the first line. */
export function tapDetail(mode: ReadMode, driver: Pick<Driver, 'capabilities'>): string | undefined {
  return mode.kind === 'tap' ? driver.capabilities.tapReads : undefined;
}

/** The mode and, for a tap, how it reads: `(mode) — detail`, for the first line of output. */
export function modeLine(mode: ReadMode, driver: Pick<Driver, 'capabilities'>): string {
  const detail = tapDetail(mode, driver);
  return `(${describeReadMode(mode, driver)})${detail === undefined ? '' : ` — ${detail}`}`;
}

/** What the mode does, in a few words (the first line of output, the summary). */
export function describeReadMode(mode: ReadMode, driver: Pick<Driver, 'capabilities'>): string {
  switch (mode.kind) {
    case 'tap':
      return 'tap: observing, taking nothing';
    case 'group':
      if (mode.requeue) return `group ${mode.group} with --requeue: competing with the queue’s consumers, holding what it reads and handing every message back when it ends (redelivered)`;
      return driver.capabilities.competingConsumers
        ? `group ${mode.group}: competing with the queue’s consumers, taking the messages`
        : `group ${mode.group}: taking the messages as a member of the group`;
    case 'exchange':
      return `tap on exchange '${mode.exchange}' with binding '${mode.binding}': a queue of its own, taking nothing`;
    case 'stream':
      return `stream queue from offset ${mode.offset instanceof Date ? mode.offset.toISOString() : String(mode.offset)}: a stream keeps its messages, taking nothing`;
  }
}

/** The subscribe options for a mode (destinations, prefetch and fromBeginning are the caller's). */
export function subscribeMode(mode: ReadMode, tapGroup: string): Pick<SubscribeOptions, 'group' | 'tap' | 'exchange' | 'streamOffset'> {
  switch (mode.kind) {
    case 'tap':
      return { group: tapGroup, tap: true };
    case 'group':
      return { group: mode.group, tap: false };
    case 'exchange':
      return { group: tapGroup, tap: true, exchange: { name: mode.exchange, binding: mode.binding } };
    case 'stream':
      return { group: tapGroup, tap: false, streamOffset: mode.offset };
  }
}
