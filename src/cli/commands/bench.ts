import { randomBytes, randomInt } from 'node:crypto';
import { z } from 'zod';
import { BENCH_DEFAULTS, BENCH_ROLES, defaultMaxBacklog, runBench, type BenchProgress, type BenchResult } from '../../core/bench.js';
import { systemClock } from '../../core/clock.js';
import { createDriver } from '../../drivers/registry.js';
import { parseBrokerUrl } from '../../drivers/url.js';
import { DataError, InterruptedError, ThresholdError, UsageError } from '../../errors.js';
import { loadScenario } from '../../events/scenario.js';
import { evaluateAssertions, parseAssertion, type AssertionOutcome } from '../../metrics/assert.js';
import { buildReport, type Report } from '../../metrics/report.js';
import { brokerSchema, durationSchema, flagSchema, rateSchema, resolveOptions, wholeNumber } from '../options.js';
import type { CommandContext } from '../program.js';
import { payqVersion } from '../program.js';
import { startProgress } from '../progress.js';
import { assertionLines, benchReportMarkdown, benchReportText, formatCount, formatRate } from '../render.js';
import { countOf } from '../../text.js';
import { writeOutput } from './report.js';

const onOff = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  if (/^(on|true|yes|1)$/i.test(v)) return true;
  if (/^(off|false|no|0)$/i.test(v)) return false;
  ctx.addIssue({ code: 'custom', message: `must be on or off (got '${v}')` });
  return z.NEVER;
});

const nonNegativeNumber = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : NaN;
  if (!(n >= 0) || !Number.isFinite(n)) {
    ctx.addIssue({ code: 'custom', message: `must be a number of 0 or more, e.g. 0.5 (got '${v}')` });
    return z.NEVER;
  }
  return n;
});

/** A duration that may be 0 (`--warmup 0`). */
const durationOrZero = z.union([z.literal(0), z.literal('0'), durationSchema]).transform((v) => (v === '0' ? 0 : v));

const list = z.union([z.string(), z.array(z.string())]).transform((v) => (Array.isArray(v) ? v : [v]));
const fileName = z.string().min(1);

const benchSchema = z.strictObject({
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  /** `--json FILE`: the positional after --json (see the command's preAction hook). */
  jsonFile: fileName.optional(),
  markdown: fileName.optional(),
  assert: list.default([]),
  scenario: z.string().default('checkout'),
  duration: durationSchema.optional(),
  count: wholeNumber(1).optional(),
  warmup: durationOrZero.default(BENCH_DEFAULTS.warmupMs),
  rate: rateSchema.optional(),
  producers: wholeNumber(1, 64).default(BENCH_DEFAULTS.producers),
  consumers: wholeNumber(1, 100_000).default(BENCH_DEFAULTS.consumers),
  seed: wholeNumber(0, 2 ** 31 - 1).optional(),
  timeScale: nonNegativeNumber.default(1),
  failures: onOff.default(true),
  maxBacklog: wholeNumber(1).optional(),
  drainTimeout: durationSchema.default(BENCH_DEFAULTS.drainTimeoutMs),
  partitions: wholeNumber(1, 10_000).default(6),
  size: wholeNumber(0, 1024 * 1024).default(0),
  runId: z.string().regex(/^[A-Za-z0-9._-]{1,56}$/, 'must be letters, digits, . _ - (at most 56)').optional(),
  role: z.enum(BENCH_ROLES, { message: `must be one of ${BENCH_ROLES.join(', ')}` }).default('all'),
  idleTimeout: durationSchema.default(BENCH_DEFAULTS.idleTimeoutMs),
  startTimeout: durationSchema.default(BENCH_DEFAULTS.startTimeoutMs),
});
export type BenchCommandOptions = z.output<typeof benchSchema>;

function progressText(p: BenchProgress): string {
  const s = (p.elapsedMs / 1000).toFixed(0);
  if (p.phase === 'starting') return 'starting the pipeline';
  if (p.phase === 'warmup') return `warming up · ${s} s`;
  if (p.phase === 'waiting') return `waiting for the run's events · ${s} s`;
  const what = `${countOf(p.produced, 'payment')} produced · ${formatCount(p.finished)} finished · ${countOf(p.backlog, 'event')} waiting`;
  return p.phase === 'drain' ? `draining · ${what}` : `${s} s · ${what}`;
}

export async function run(flags: Record<string, unknown>, ctx: CommandContext): Promise<void> {
  const o = resolveOptions(benchSchema, {
    command: 'bench',
    flags,
    env: ctx.env,
    configFile: (flags['config'] as string | undefined) ?? ctx.env['PAYQ_CONFIG'],
  });
  const out = ctx.out;
  if (o.count !== undefined && o.duration !== undefined) throw new UsageError('--count and --duration exclude each other');
  if (o.jsonFile !== undefined && !o.json) throw new UsageError(`unexpected argument '${o.jsonFile}'`, { hint: 'did you mean --json FILE?' });
  // Before connecting anything: a bad assertion or scenario is a usage error, not a failed run.
  if (o.role !== 'all' && o.runId === undefined) {
    throw new UsageError(`--role ${o.role} needs --run-id: every part of a run must use the same one`, { hint: 'e.g. --run-id "$GITHUB_RUN_ID"' });
  }
  if (o.role !== 'all' && o.broker?.scheme === 'memory') {
    throw new UsageError(`--role ${o.role} spreads a run over processes through the broker; memory:// lives inside one process`, {
      hint: 'use kafka:// or amqp://, or run every part in one process (no --role)',
    });
  }
  const assertions = o.assert.map(parseAssertion);
  const scenario = loadScenario(o.scenario);
  const broker = o.broker ?? parseBrokerUrl('memory://');
  if (!o.broker) out.info('no --broker and no PAYQ_BROKER: running on memory:// (the in-process broker)');
  const seed = o.seed ?? randomInt(0, 2 ** 31);
  const runId = o.runId ?? randomBytes(6).toString('hex');
  const maxBacklog = o.rate === undefined && o.role === 'all' ? (o.maxBacklog ?? defaultMaxBacklog(o.consumers, scenario.stages.length)) : undefined;
  const durationMs = o.count === undefined ? (o.duration ?? BENCH_DEFAULTS.durationMs) : undefined;

  const driver = await createDriver(broker);
  const progress = await startProgress(out, `connecting to ${broker.redacted}`);
  let result: BenchResult;
  let announced = false;
  try {
    await driver.connect();
    out.verbose(`bench: ${scenario.name} on ${broker.redacted}, seed ${seed}, run ${runId}`);
    result = await runBench(
      {
        scenario,
        rate: o.rate,
        durationMs,
        count: o.count,
        warmupMs: o.warmup,
        producers: o.producers,
        consumers: o.consumers,
        seed,
        timeScale: o.timeScale,
        failures: o.failures,
        maxBacklog,
        drainTimeoutMs: o.drainTimeout,
        partitions: o.partitions,
        runId,
        size: o.size,
        role: o.role,
        idleTimeoutMs: o.idleTimeout,
        startTimeoutMs: o.startTimeout,
      },
      {
        driver,
        clock: systemClock,
        signal: ctx.signal,
        onProgress: (p) => {
          // Said once, also in CI: whoever starts the producer part waits for this line.
          if (p.phase === 'waiting' && !announced) {
            announced = true;
            out.info(`${o.role}: subscribed, waiting for the events of run ${runId}`);
          }
          progress.update(progressText(p));
        },
      },
    );
  } finally {
    progress.stop();
    await driver.close();
  }

  const report: Report = buildReport(result.data, {
    run_id: runId,
    role: o.role,
    settings: {
      broker: broker.redacted,
      broker_version: result.brokerVersion ?? null,
      scenario: scenario.name,
      seed,
      rate_per_s: o.rate ?? null,
      duration_s: durationMs === undefined ? null : durationMs / 1000,
      count: o.count ?? null,
      warmup_s: o.warmup / 1000,
      producers: o.producers,
      consumers: o.consumers,
      max_backlog: maxBacklog ?? null,
      time_scale: o.timeScale,
      failures: o.failures,
      payq_version: payqVersion,
      node_version: process.version,
      started_at: result.startedAt,
    },
  });
  const outcomes: AssertionOutcome[] = evaluateAssertions(report, assertions);

  const text = `${JSON.stringify(report, null, 2)}\n`;
  if (o.json && o.jsonFile === undefined) out.data(text);
  else if (o.jsonFile !== undefined) writeOutput(o.jsonFile, text);
  if (o.markdown !== undefined) writeOutput(o.markdown, benchReportMarkdown(report, outcomes));
  if (!(o.json && o.jsonFile === undefined)) out.block(benchReportText(report, out.color));
  if (outcomes.length > 0) out.block(assertionLines(outcomes, out.color));
  if (result.drained === 'timeout' && report.payments.in_flight > 0) {
    out.warn(`the drain timed out after ${o.drainTimeout / 1000} s with ${countOf(report.payments.in_flight, 'payment')} unfinished (raise --drain-timeout, or lower --rate)`);
  }
  if (report.errors.length > 0) out.warn(`errors during the run: ${report.errors[0]}`);

  if (result.interrupted) throw new InterruptedError(`interrupted: the report covers the first ${report.elapsed_s} s`);
  const breaches = outcomes.filter((x) => !x.passed);
  const breachText = breaches.length > 0 ? `; also ${breaches.length} --assert breached` : '';
  if (o.role === 'worker' || o.role === 'tracer') {
    if (result.drained === 'timeout') out.warn(`no event of run ${runId} arrived within ${o.startTimeout / 1000} s: is the producer running with --run-id ${runId}?`);
    else out.info(`the run's events stopped coming for ${o.idleTimeout / 1000} s: ${o.role} done`);
  }
  if (report.loss !== null && report.loss > 0) {
    throw new DataError(
      `${formatCount(report.events.lost ?? 0)} of ${formatCount(report.events.acknowledged)} acknowledged events were never consumed (loss ${report.loss})${breachText}`,
    );
  }
  if (report.producers.failed > 0 || report.events.unacknowledged > 0) {
    throw new DataError(`${countOf(report.events.unacknowledged, 'send')} ${report.events.unacknowledged === 1 ? 'was' : 'were'} not acknowledged by the broker${breachText}`);
  }
  if (breaches.length > 0) {
    throw new ThresholdError(`${breaches.length} of ${outcomes.length} --assert breached: ${breaches.map((b) => b.assertion.text).join(', ')}`);
  }
  out.verbose(`bench: ${formatRate(report.throughput.events_per_s)} events/s, APT ${report.apt_ms} ms`);
}
