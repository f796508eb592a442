import type { ChalkInstance } from 'chalk';
import { z } from 'zod';
import { consume, type ConsumedMessage, type ConsumeResult } from '../../core/consume.js';
import { describeReadMode, modeLine, readMode, type ReadMode } from '../../core/read-mode.js';
import { brokerGone, openDriver } from '../connect.js';
import type { Driver } from '../../drivers/types.js';
import { InterruptedError, UsageError } from '../../errors.js';
import { CURRENCY_EXPONENT } from '../../events/currencies.js';
import { checkCorrelateDestinations, decodeOptionsOf, getPath } from '../../events/decode.js';
import { loadScenario } from '../../events/scenario.js';
import { CONNECTION_OPTIONS, brokerSchema, correlateSchema, destinationSchema, durationSchema, fieldPathSchema, flagSchema, procsSchema, wholeNumber } from '../options.js';
import { consumeInThreads } from './consume-procs.js';
import type { Output } from '../output.js';
import type { CommandContext } from '../context.js';
import { formatCount, keyValueTable } from '../render.js';
import { countOf } from '../../text.js';
import { sharedAcrossProcesses } from '../../drivers/url.js';

/** A repeatable flag whose values may also be comma-separated (`--type a,b --type c`). */
function listOf(item: z.ZodString) {
  return z
    .union([z.string(), z.array(z.string())])
    .transform((v) => (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== ''))
    .pipe(z.array(item).min(1, 'needs at least one name'));
}

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  topic: listOf(destinationSchema).optional(),
  scenario: z.string(),
  group: z.string().regex(/^[A-Za-z0-9._:-]{1,200}$/, 'must be letters, digits, . _ : - (at most 200)').optional(),
  fromBeginning: flagSchema.default(false),
  type: listOf(z.string().regex(/^[A-Za-z0-9_.:-]{1,128}$/, 'event types are letters, digits, _ . : -')).optional(),
  limit: wholeNumber(1).optional(),
  idleTimeout: durationSchema.optional(),
  withMeta: flagSchema.default(false),
  typeField: fieldPathSchema.optional(),
  correlate: correlateSchema.optional(),
  timeField: fieldPathSchema.optional(),
  prefetch: wholeNumber(1, 100_000).optional(),
  requeue: flagSchema.default(false),
  exchange: z.string().min(1).max(255).optional(),
  binding: z.string().max(255).optional(),
  streamOffset: z.string().min(1).optional(),
  startTimeout: durationSchema,
  procs: procsSchema,
});

/** Warnings about bodies that are not JSON, one per message up to this many. */
const MAX_PROBLEM_WARNINGS = 10;

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  const out = ctx.out;
  if (!o.broker) throw new UsageError('no broker: pass --broker URL or set PAYQ_BROKER');
  if (!sharedAcrossProcesses(o.broker)) {
    throw new UsageError('memory:// lives inside one process, so another payq process cannot consume from it', {
      hint: 'use kafka:// or amqp://, or payq bench for a whole pipeline in one process',
    });
  }
  // Read-only: the destinations (the scenario's, or anyone's named with --topic) are never created
  // or re-declared; missing ones are waited for up to --start-timeout (core/destinations.ts).
  if (o.procs > 1 && o.group === undefined) {
    // Before connecting: N taps would print every message N times.
    throw new UsageError(`--procs ${o.procs} reads as ${o.procs} members of one consumer group: give --group NAME (a tap, or --exchange or --stream-offset, takes nothing and would print each message ${o.procs} times)`);
  }
  const scenario = o.topic === undefined && o.exchange === undefined ? loadScenario(o.scenario) : undefined;
  const destinations = o.exchange !== undefined ? [o.exchange] : (o.topic ?? scenario!.destinations);
  if (o.correlate) checkCorrelateDestinations(o.correlate, destinations);
  const decode = decodeOptionsOf(o);
  const ndjson = o.json || process.stdout.isTTY !== true;

  const driver = await openDriver(o.broker, ctx, o);
  const mode: ReadMode = readMode(o, driver);
  if (mode.kind === 'exchange' && o.topic !== undefined) throw new UsageError('--exchange taps an exchange, not --topic queues: give one of them');
  if (mode.kind === 'stream' && o.fromBeginning) throw new UsageError('--stream-offset says where to start: --from-beginning is --stream-offset first');
  const tap = mode.kind === 'tap' || mode.kind === 'exchange';
  if (tap && o.fromBeginning && !driver.capabilities.replayFromBeginning) {
    throw new UsageError(
      `--from-beginning: a tap on ${driver.name} sees only what is published after it starts; it cannot replay what the queues hold`,
      { hint: 'to read what a queue holds, consume it with --group NAME, which takes the messages from its other consumers' },
    );
  }

  const lines: LineOptions = { ndjson, withMeta: o.withMeta, destinations };
  const warnings = new ProblemWarnings(out);
  // `payq consume | head`: the reader leaving is an ordinary end. The failed write rejects
  // (stopping consume, its batch given back); without a listener the stream's 'error' event
  // would also crash the process with a stack trace.
  const ignoreStdoutError = () => undefined;
  process.stdout.on('error', ignoreStdoutError);
  const consumeOptions = {
    destinations,
    group: o.group,
    mode,
    startTimeoutMs: o.startTimeout,
    fromBeginning: o.fromBeginning,
    limit: o.limit,
    idleTimeoutMs: o.idleTimeout,
    prefetch: o.prefetch,
    decode,
  };
  // The first line says how payq reads (README "How payq reads a destination it did not build").
  const text = `consuming ${destinations.join(', ')} on ${o.broker.redacted} ${modeLine(mode, driver)}${o.procs > 1 ? ` · ${o.procs} threads` : ''}`;
  const onReady = () => out.info(out.interactive ? `${text}; Ctrl-C to stop` : text);
  if (!tap && o.fromBeginning && !driver.capabilities.replayFromBeginning) {
    out.verbose('--from-beginning: a queue holds what no consumer has acked yet, and --group reads all of it already');
  }
  let result: ConsumeResult;
  try {
    if (o.procs > 1) {
      // Each thread connects a client of its own; this one only told how payq reads.
      await driver.close();
      const data = {
        broker: o.broker,
        reconnectTimeout: o.reconnectTimeout,
        consume: { ...consumeOptions, types: o.type },
        lines,
        colorLevel: out.color.level,
      };
      result = await consumeInThreads(o.procs, data, { out, warnings, signal: ctx.signal, onReady });
    } else {
      await driver.connect();
      result = await consume(
        { ...consumeOptions, types: o.type ? new Set(o.type) : undefined },
        {
          driver,
          signal: ctx.signal,
          onReady,
          onMessages: (messages) => {
            const { text, problems } = formatLines(messages, lines, out.color);
            warnings.say(problems);
            return out.dataAsync(text);
          },
          isOutputClosed: (err) => (err as NodeJS.ErrnoException | undefined)?.code === 'EPIPE',
        },
      );
    }
  } finally {
    process.stdout.off('error', ignoreStdoutError);
    await driver.close();
  }

  const summary = `consumed ${formatCount(result.consumed)}, printed ${formatCount(result.printed)}`;
  if (result.ended_by === 'interrupted') {
    throw new InterruptedError(`interrupted: ${summary}${result.returned > 0 ? `, returned ${formatCount(result.returned)} unprinted` : ''}`);
  }
  if (result.ended_by === 'broker-gone') {
    const left = tap ? 'a tap takes nothing away' : 'what was not acked before it went away is delivered again';
    throw brokerGone(driver, o.reconnectTimeout, `consume stopped: ${summary} so far (${left})`);
  }
  out.block(summaryTable(result, { broker: o.broker.redacted, destinations, mode, driver, typed: o.type !== undefined, procs: o.procs }, out.color));
}

interface SummaryContext {
  broker: string;
  destinations: string[];
  mode: ReadMode;
  driver: Driver;
  typed: boolean;
  procs: number;
}

function summaryTable(r: ConsumeResult, s: SummaryContext, c: ChalkInstance): string {
  const rows: [string, string][] = [
    ['broker', s.broker],
    ['destinations', s.destinations.join(', ')],
    ['mode', describeReadMode(s.mode, s.driver)],
    ...(s.procs > 1 ? ([['threads', `${s.procs} members of the group, each with its own client`]] as [string, string][]) : []),
    ['consumed', formatCount(r.consumed)],
    ['printed', formatCount(r.printed)],
  ];
  if (s.typed) rows.push(['filtered out', formatCount(r.filtered)]);
  if (r.requeued > 0) rows.push(['handed back', `${formatCount(r.requeued)} (--requeue: every message read is back in the queue, flagged redelivered)`]);
  if (r.returned > r.requeued) rows.push(['returned', `${formatCount(r.returned - r.requeued)} (delivered past the limit or while stopping; not acked)`]);
  if (r.not_json > 0) rows.push(['not JSON', c.yellow(formatCount(r.not_json))]);
  const types = Object.entries(r.by_type).map(([type, n]) =>
    s.typed ? `${type} ${formatCount(n.consumed)} (${formatCount(n.printed)} printed)` : `${type} ${formatCount(n.consumed)}`,
  );
  if (types.length > 0) rows.push(['by type', types.join('\n')]);
  const ended = { limit: 'limit reached', idle: 'idle timeout', 'output-closed': 'stdout closed by its reader (the batch it refused was given back)' };
  rows.push(['ended', ended[r.ended_by as keyof typeof ended] ?? r.ended_by]);
  rows.push(['elapsed', `${r.elapsed_s} s`]);
  return keyValueTable(rows, c);
}

// ---------------------------------------------------------------------------------------------
// Lines: NDJSON (the body, or the body with delivery metadata) or one pretty line per event.

export interface LineOptions {
  ndjson: boolean;
  withMeta: boolean;
  destinations: string[];
}

/**
 * The body's JSON text on one line, byte for byte otherwise. Valid JSON has no raw line breaks
 * inside strings, so any left are whitespace between tokens and go (re-serialising instead
 * would round big numbers).
 */
function jsonText(m: ConsumedMessage): string {
  return m.value.toString('utf8').trim().replace(/[\r\n]+/g, '');
}

function metaPrefix(m: ConsumedMessage): string {
  return (
    `{"destination":${JSON.stringify(m.destination)},"key":${JSON.stringify(m.key ?? null)},` +
    `"partition":${m.partition ?? 'null'},"offset":${JSON.stringify(m.offset ?? null)},` +
    `"redelivered":${m.redelivered},"headers":${JSON.stringify(m.headers)}`
  );
}

function problemFields(m: ConsumedMessage): string {
  const utf8 = !m.problem!.includes('UTF-8');
  const raw = utf8 ? m.value.toString('utf8') : m.value.toString('base64');
  return `"problem":${JSON.stringify(m.problem)},"raw":${JSON.stringify(raw)},"encoding":"${utf8 ? 'utf8' : 'base64'}"`;
}

export function ndjsonLine(m: ConsumedMessage, withMeta: boolean): string {
  if (m.problem !== undefined) {
    const head = withMeta ? metaPrefix(m) : `{"destination":${JSON.stringify(m.destination)}`;
    return `${head},${problemFields(m)}}`;
  }
  // The body text itself, not a re-serialisation: big numbers and key order stay as they were.
  return withMeta ? `${metaPrefix(m)},"event":${jsonText(m)}}` : jsonText(m);
}

function pad2(n: number): string {
  return String(n).padStart(2, '0');
}

/** `2026-01-01 00:00:00.001` (UTC) from the event's business time (decode.ts), or '-'. */
function eventTime(m: ConsumedMessage): string {
  if (m.event.occurredMs === undefined) return '-'.padEnd(23);
  const d = new Date(m.event.occurredMs);
  return (
    `${d.getUTCFullYear()}-${pad2(d.getUTCMonth() + 1)}-${pad2(d.getUTCDate())} ` +
    `${pad2(d.getUTCHours())}:${pad2(d.getUTCMinutes())}:${pad2(d.getUTCSeconds())}.${String(d.getUTCMilliseconds()).padStart(3, '0')}`
  );
}

/** Amounts are integers in minor units (README "Events"): 11527 USD → 115.27 USD. */
export function formatAmount(amount: unknown, currency: unknown): string | undefined {
  if (typeof amount !== 'number' || !Number.isFinite(amount)) return undefined;
  const code = typeof currency === 'string' ? currency : undefined;
  const exponent = code !== undefined && Number.isSafeInteger(amount) ? CURRENCY_EXPONENT[code] : undefined;
  if (exponent === undefined) return code === undefined ? String(amount) : `${amount} ${code}`;
  const sign = amount < 0 ? '-' : '';
  const digits = String(Math.abs(amount)).padStart(exponent + 1, '0');
  const major = exponent === 0 ? digits : `${digits.slice(0, -exponent)}.${digits.slice(-exponent)}`;
  return `${sign}${major} ${code}`;
}

function amountOf(m: ConsumedMessage): string | undefined {
  const body = m.json;
  const amount = getPath(body, 'amount') ?? getPath(body, 'data.amount');
  const currency = getPath(body, 'currency') ?? getPath(body, 'data.currency');
  return formatAmount(amount, currency);
}

export function prettyLine(m: ConsumedMessage, o: LineOptions, c: ChalkInstance): string {
  const destWidth = Math.min(40, Math.max(...o.destinations.map((d) => d.length)));
  const parts = [c.dim(eventTime(m)), c.cyan(m.destination.padEnd(destWidth))];
  if (m.problem !== undefined) {
    const preview = m.problem.includes('UTF-8') ? countOf(m.value.length, 'byte') : JSON.stringify(m.value.toString('utf8').slice(0, 60));
    parts.push(c.yellow(`${m.problem}: ${preview}`));
  } else {
    parts.push(c.bold((m.event.type ?? '(no type)').padEnd(20)), (m.event.paymentId ?? '-').padEnd(22));
    const amount = amountOf(m);
    if (amount !== undefined) parts.push(c.green(amount));
  }
  if (o.withMeta && m.partition !== undefined) parts.push(c.dim(`p${m.partition}@${m.offset}`));
  if (m.redelivered) parts.push(c.yellow('redelivered'));
  return parts.join('  ');
}

/** A delivery batch as text, one line a message, and what to warn about its bodies that are not JSON (a few). */
export function formatLines(messages: ConsumedMessage[], options: LineOptions, color: ChalkInstance): { text: string; problems: string[] } {
  let text = '';
  const problems: string[] = [];
  for (const m of messages) {
    if (m.problem !== undefined && problems.length < MAX_PROBLEM_WARNINGS) {
      const where = m.partition !== undefined ? `${m.destination}[${m.partition}]@${m.offset}` : m.destination;
      problems.push(`${where}: ${m.problem} (${countOf(m.value.length, 'byte')}); printed as a problem line, not dropped`);
    }
    text += options.ndjson ? `${ndjsonLine(m, options.withMeta)}\n` : `${prettyLine(m, options, color)}\n`;
  }
  return { text, problems };
}

/** Warns about bodies that are not JSON, MAX_PROBLEM_WARNINGS times in a run at most. */
export class ProblemWarnings {
  private said = 0;

  constructor(private readonly out: Output) {}

  say(problems: string[]): void {
    for (const text of problems) {
      this.said++;
      if (this.said > MAX_PROBLEM_WARNINGS) return;
      this.out.warn(text);
      if (this.said === MAX_PROBLEM_WARNINGS) this.out.warn('further messages that are not JSON are counted in the summary, not warned about');
    }
  }
}
