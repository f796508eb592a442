import type { ChalkInstance } from 'chalk';
import { z } from 'zod';
import { systemClock } from '../../core/clock.js';
import { existingDestinations, replayDlq, type ReplayResult } from '../../core/replay.js';
import { parseFilters } from '../../core/replay-select.js';
import { brokerGone, openDriver } from '../connect.js';
import { DataError, InterruptedError, TopologyError, UsageError } from '../../errors.js';
import { DEFAULT_DECODE } from '../../events/decode.js';
import { loadScenario } from '../../events/scenario.js';
import { CONNECTION_OPTIONS, brokerSchema, destinationSchema, durationSchema, flagSchema, rateSchema, wholeNumber } from '../options.js';
import type { CommandContext } from '../context.js';
import { payqVersion } from '../context.js';
import { startProgress } from '../progress.js';
import { fitTable, formatCount, formatRate } from '../render.js';
import { countOf } from '../../text.js';
import { sharedAcrossProcesses } from '../../drivers/url.js';

const fieldPath = z.string().regex(/^[A-Za-z0-9_$][A-Za-z0-9_$.-]*$/, 'must be a field path such as event or data.order_id');

/** `--x a --x b`, `--x a,b`, or a list in a config file. */
const nameList = z.union([z.string(), z.array(z.string())]).transform((v) =>
  (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== ''),
);

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  scenario: z.string(),
  dlq: nameList.pipe(z.array(destinationSchema)).optional(),
  to: destinationSchema.optional(),
  dryRun: flagSchema.default(false),
  filter: z.union([z.string(), z.array(z.string())]).transform((v) => (Array.isArray(v) ? v : [v])).default([]),
  since: z.string().min(1).optional(),
  until: z.string().min(1).optional(),
  limit: wholeNumber(1).optional(),
  rate: rateSchema.optional(),
  maxReplays: wholeNumber(0, 1_000_000),
  parkUnresolved: flagSchema.default(false),
  maxBytes: wholeNumber(1, 2 ** 31),
  idleTimeout: durationSchema,
  group: z.string().regex(/^[A-Za-z0-9._:-]{1,200}$/, 'must be letters, digits, . _ : - (at most 200)'),
  window: wholeNumber(1, 65_535),
  typeField: fieldPath,
  correlate: fieldPath,
});

const MAX_PROBLEM_LINES = 20;

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  if (!o.broker) throw new UsageError('no broker: pass --broker URL or set PAYQ_BROKER');
  if (!sharedAcrossProcesses(o.broker)) {
    throw new UsageError('replay-dlq cannot reach memory:// from another process: the memory broker lives inside one process; use kafka:// or amqp://');
  }
  const filter = parseFilters(o.filter, { since: o.since, until: o.until });
  // Without --dlq: every DLQ of the scenario's pipeline that exists.
  const scenario = o.dlq === undefined ? loadScenario(o.scenario) : undefined;
  const candidates = o.dlq ?? scenario!.destinations.map((d) => `${d}.dlq`);
  if (candidates.length === 0) throw new UsageError('--dlq needs a name');
  const plainEvents = o.typeField !== DEFAULT_DECODE.typeField || o.correlate !== DEFAULT_DECODE.correlate;

  const out = ctx.out;
  const driver = await openDriver(o.broker, ctx, o);
  const progress = await startProgress(out, `connecting to ${o.broker.redacted}`);
  let result: ReplayResult;
  let dlqs: string[];
  try {
    await driver.connect();
    if (o.dlq === undefined) {
      const found = await existingDestinations(driver, candidates);
      dlqs = candidates.filter((d) => found.has(d));
      if (dlqs.length === 0) {
        throw new TopologyError(`none of the ${scenario!.name} scenario's DLQs exists on ${o.broker.redacted} (${candidates.join(', ')})`, {
          hint: 'name the DLQ with --dlq NAME, or pick the pipeline with --scenario',
        });
      }
      out.verbose(`reading ${dlqs.join(', ')}`);
    } else dlqs = candidates;
    let last = { done: 0, ms: 0 };
    let rate = 0;
    result = await replayDlq(
      {
        dlqs,
        to: o.to,
        dryRun: o.dryRun,
        filter,
        limit: o.limit,
        rate: o.rate,
        maxReplays: o.maxReplays,
        parkUnresolved: o.parkUnresolved,
        maxBytes: o.maxBytes,
        idleTimeoutMs: o.idleTimeout,
        group: o.group,
        window: o.window,
        listMessages: o.dryRun && o.json,
        decode: { typeField: o.typeField, correlate: o.correlate, preferBody: plainEvents },
      },
      {
        driver,
        clock: systemClock,
        signal: ctx.signal,
        onReady: () => {
          progress.update(`reading ${dlqs.length === 1 ? dlqs[0] : `${dlqs.length} DLQs`}${o.dryRun ? ' (dry run)' : ''}`);
          out.verbose(`replay-dlq: subscribed to ${dlqs.join(', ')}`);
        },
        onProgress: (p) => {
          const done = p.replayed + p.parked;
          if (p.elapsedMs - last.ms >= 1000) {
            rate = ((done - last.done) * 1000) / (p.elapsedMs - last.ms);
            last = { done, ms: p.elapsedMs };
          }
          progress.update(
            `${formatCount(p.seen)} read · ${formatCount(p.replayed)} ${o.dryRun ? 'to replay' : 'replayed'} · ${formatCount(p.parked)} ${o.dryRun ? 'to park' : 'parked'} · ` +
              `${formatCount(p.skipped + p.unresolved + p.invalid)} left · ${formatRate(rate)} msg/s`,
          );
        },
      },
    );
  } finally {
    progress.stop();
    await driver.close();
  }

  if (o.json) {
    const { messages, ...rest } = result;
    const summary = {
      schema: 'payq.replay/v1',
      broker: o.broker.redacted,
      ...rest,
      to: o.to ?? null,
      max_replays: o.maxReplays,
      park_unresolved: o.parkUnresolved,
      group: o.group,
      ...(messages === undefined ? {} : { messages }),
      payq_version: payqVersion,
      node_version: process.version,
    };
    out.data(`${JSON.stringify(summary, null, 2)}\n`);
  } else {
    render(result, out.color, (t) => out.block(t));
  }
  for (const line of result.problems.slice(0, MAX_PROBLEM_LINES)) out.warn(line);
  if (result.problem_count > MAX_PROBLEM_LINES) {
    out.warn(`… and ${formatCount(result.problem_count - MAX_PROBLEM_LINES)} more messages that cannot be replayed${o.json ? '' : ' (--dry-run --json lists every message)'}`);
  }
  if (result.window_full) {
    out.warn(
      `${o.dryRun ? 'the dry run looked at' : 'the run left'} ${countOf(o.window, 'message')} in place and could not look further (--window); ` +
        (o.dryRun ? 'there may be more in the DLQ' : 'deal with those (--park-unresolved, --to, a --filter) and run again'),
    );
  }
  if (result.duplicates + result.unconfirmed > 0) {
    out.warn(
      `the link to the broker was lost mid-run: ${countOf(result.duplicates, 'message')} ${result.duplicates === 1 ? 'was' : 'were'} republished twice (the first republish was confirmed after the DLQ delivery was lost), ` +
        `${countOf(result.unconfirmed, 'republish', 'republishes')} ${result.unconfirmed === 1 ? 'was' : 'were'} unconfirmed (maybe stored, then sent again); the copies carry the same event id`,
    );
  }
  if (result.errors.length > 0 && result.failed > 0) out.warn(`${countOf(result.failed, 'message')} could not be sent and ${result.failed === 1 ? 'stays' : 'stay'} in the DLQ: ${result.errors[0]}`);
  // Sends cut off with the link: their messages went back to the DLQ with it and were read again.
  else if (result.errors.length > 0) out.warn(`a send failed, and its messages stayed in the DLQ to be read again: ${result.errors[0]}`);

  if (result.interrupted) {
    throw new InterruptedError(`interrupted: ${formatCount(result.replayed)} replayed and ${formatCount(result.parked)} parked; the rest stay in the DLQ`);
  }
  if (result.broker_gone) {
    // A message leaves the DLQ only once its republish is confirmed (README "Failure drills").
    throw brokerGone(
      driver,
      o.reconnectTimeout,
      o.dryRun
        ? `replay-dlq --dry-run stopped: ${countOf(result.seen, 'message')} looked at, nothing changed`
        : `replay-dlq stopped: ${formatCount(result.replayed)} replayed and ${formatCount(result.parked)} parked; every other message is still in the DLQ (nothing left it that was not republished)`,
    );
  }
  if (!o.dryRun && result.left > 0) {
    const parts = [
      result.failed > 0 ? `${formatCount(result.failed)} failed` : '',
      !o.parkUnresolved && result.unresolved > 0 ? `${formatCount(result.unresolved)} without origin` : '',
      !o.parkUnresolved && result.invalid > 0 ? `${formatCount(result.invalid)} unreplayable` : '',
    ].filter(Boolean);
    throw new DataError(`${countOf(result.left, 'message')} ${result.left === 1 ? 'was' : 'were'} left in the DLQ (${parts.join(', ')})`, {
      hint: result.failed > 0 ? 'run again once the broker accepts them' : 'see the lines above; --to DEST or --park-unresolved moves them on',
    });
  }
}

const OUTCOME_WORDS: Record<string, [string, string]> = {
  replayed: ['replayed', 'replay'],
  parked: ['parked', 'park'],
  skipped: ['skipped by filter', 'skip (filter)'],
  unresolved: ['left: no origin', 'leave: no origin'],
  invalid: ['left: unreplayable', 'leave: unreplayable'],
  failed: ['failed, left', 'fail'],
};

/** `org.apache.kafka.connect.errors.DataException` → `DataException` in the table (--json keeps it whole). */
function shortReason(reason: string): string {
  return /^([a-z_$][\w$]*\.)+[A-Z][\w$]*$/.test(reason) ? reason.slice(reason.lastIndexOf('.') + 1) : reason;
}

function render(r: ReplayResult, color: ChalkInstance, write: (text: string) => void): void {
  const dry = r.dry_run;
  const rows = r.rows.map((row) => {
    const word = OUTCOME_WORDS[row.outcome]![dry ? 1 : 0];
    const painted = row.outcome === 'replayed' ? color.green(word) : row.outcome === 'skipped' ? word : color.yellow(word);
    return [row.origin, shortReason(row.reason), row.type, painted, formatCount(row.count)];
  });
  const head = ['origin', 'reason', 'event type', dry ? 'would' : 'outcome', 'messages'].map((h) => color.bold(h));
  if (r.rows.length > 0) write(fitTable(head, rows, color));
  const verb = dry ? 'dry run, nothing changed: would replay' : 'replayed';
  const line =
    `${verb} ${formatCount(r.replayed)} · ${dry ? 'park' : 'parked'} ${formatCount(r.parked)}` +
    `${r.parked_over_max_replays > 0 ? ` (${formatCount(r.parked_over_max_replays)} over --max-replays)` : ''}` +
    ` · skipped by filter ${formatCount(r.skipped)} · unresolved ${formatCount(r.unresolved)} · unreplayable ${formatCount(r.invalid)}` +
    `${dry ? '' : ` · failed ${r.failed === 0 ? '0' : color.red(formatCount(r.failed))}`}` +
    ` — ${formatCount(r.seen)} read from ${r.dlqs.join(', ')} in ${r.elapsed_s} s${dry ? '' : ` (${formatRate(r.messages_per_s)} msg/s)`}`;
  write(line);
}
