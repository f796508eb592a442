import { randomBytes, randomInt } from 'node:crypto';
import { z } from 'zod';
import { BENCH_DEFAULTS, BENCH_ROLES, defaultMaxBacklog, runBench, type BenchProgress, type BenchResult } from '../../core/bench.js';
import { findCapacity, judgeStep, KEEP_UP_TOLERANCE, type CapacityResult } from '../../core/capacity.js';
import { systemClock } from '../../core/clock.js';
import { brokerGone, openDriver } from '../connect.js';
import { sharedAcrossProcesses, parseBrokerUrl } from '../../drivers/url.js';
import { DataError, InterruptedError, ThresholdError, UsageError } from '../../errors.js';
import { loadScenario } from '../../events/scenario.js';
import { DEAD_LETTER_REASONS } from '../../core/worker.js';
import { benchReportKeys, checkAssertionKeys, evaluateAssertions, parseAssertion, type AssertionOutcome } from '../../metrics/assert.js';
import { buildReport, type Report } from '../../metrics/report.js';
import { CONNECTION_OPTIONS, METRICS_OPTIONS, brokerSchema, durationOrZero, durationSchema, flagSchema, listSchema, nonNegativeSchema, onOffSchema, procsSchema, rateSchema, shardSchema, wholeNumber } from '../options.js';
import { refuseProcsOnMemory, scenarioOut } from '../threads.js';
import { benchThreads } from './bench-procs.js';
import type { CommandContext } from '../context.js';
import { payqVersion } from '../context.js';
import { startProgress } from '../progress.js';
import { assertionLines, benchReportMarkdown, benchReportText, capacityText, formatCount, formatRate } from '../render.js';
import { renderHtmlReport } from '../html-report.js';
import { LiveBenchMetrics, serveMetrics } from '../live-metrics.js';
import { countOf } from '../../text.js';
import { checkWritable, saveOutput, writeOutput } from './report.js';

/** `5%` or `5` → 0.05; more than 0, less than 100%. */
const percentFraction = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\s*\d+(\.\d+)?%?\s*$/.test(v) ? Number(v.replace('%', '')) : NaN;
  if (!(n > 0 && n < 100)) {
    ctx.addIssue({ code: 'custom', message: `must be a percentage above 0 and below 100, such as 5%  (got '${v}')` });
    return z.NEVER;
  }
  return n / 100;
});
const fileName = z.string().min(1);

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  /** `--json FILE`: the positional after --json (see the command's preAction hook). */
  jsonFile: fileName.optional(),
  markdown: fileName.optional(),
  html: fileName.optional(),
  assert: listSchema.default([]),
  scenario: z.string(),
  duration: durationSchema.optional(),
  count: wholeNumber(1).optional(),
  warmup: durationOrZero,
  rate: rateSchema.optional(),
  producers: wholeNumber(1, 64),
  consumers: wholeNumber(1, 100_000),
  seed: wholeNumber(0, 2 ** 31 - 1).optional(),
  timeScale: nonNegativeSchema,
  failures: onOffSchema,
  maxBacklog: wholeNumber(1).optional(),
  drainTimeout: durationSchema,
  partitions: wholeNumber(1, 10_000),
  size: wholeNumber(0, 1024 * 1024),
  runId: z.string().regex(/^[A-Za-z0-9._-]{1,56}$/, 'must be letters, digits, . _ - (at most 56)').optional(),
  shard: shardSchema.optional(),
  role: z.enum(BENCH_ROLES, { message: `must be one of ${BENCH_ROLES.join(', ')}` }),
  idleTimeout: durationSchema,
  startTimeout: durationSchema,
  findMax: flagSchema.default(false),
  minRate: rateSchema,
  maxRate: rateSchema.optional(),
  precision: percentFraction,
  maxDuration: durationSchema,
  procs: procsSchema,
  ...METRICS_OPTIONS,
});

function progressText(p: BenchProgress): string {
  const s = (p.elapsedMs / 1000).toFixed(0);
  if (p.phase === 'starting') return 'starting the pipeline';
  if (p.phase === 'warmup') return `warming up · ${s} s`;
  if (p.phase === 'waiting') return `waiting for the run's events · ${s} s`;
  const what = `${countOf(p.produced, 'payment')} produced · ${formatCount(p.finished)} finished · ${countOf(p.backlog, 'event')} waiting`;
  return p.phase === 'drain' ? `draining · ${what}` : `${s} s · ${what}`;
}

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  const out = ctx.out;
  if (o.count !== undefined && o.duration !== undefined) throw new UsageError('--count and --duration exclude each other');
  if (o.jsonFile !== undefined && !o.json) throw new UsageError(`unexpected argument '${o.jsonFile}'`, { hint: 'did you mean --json FILE?' });
  // Before connecting anything: a bad assertion or scenario is a usage error, not a failed run.
  if (o.findMax && o.role !== 'all') {
    // A search judges each step (the tracer's figures) before it chooses the next rate (the producer's).
    throw new UsageError(`--find-max cannot run as --role ${o.role}: a capacity search runs each step's producer, workers and tracer in one process`, {
      hint: "leave out --role; for more workers, run 'payq worker' elsewhere with the same --broker, --scenario and --seed: it joins the stages' consumer groups",
    });
  }
  if (o.role !== 'all' && o.runId === undefined) {
    throw new UsageError(`--role ${o.role} needs --run-id: every part of a run must use the same one`, { hint: 'e.g. --run-id "$GITHUB_RUN_ID"' });
  }
  if (o.role !== 'all' && (o.broker !== undefined && !sharedAcrossProcesses(o.broker))) {
    throw new UsageError(`--role ${o.role} spreads a run over processes through the broker; memory:// lives inside one process`, {
      hint: 'use kafka:// or amqp://, or run every part in one process (no --role)',
    });
  }
  if (o.shard !== undefined && o.role !== 'producer' && o.role !== 'tracer') {
    throw new UsageError(`--shard splits a producer or tracer part (--role producer or --role tracer), not ${o.role === 'all' ? 'a one-process run' : `--role ${o.role}`}`, {
      hint: o.role === 'worker' ? "workers of one scenario already share its consumer groups: start as many as you like" : undefined,
    });
  }
  if (o.procs > 1 && o.role !== 'all') {
    throw new UsageError(`--procs runs a whole run's producers and workers in threads; --role ${o.role} is one part of a run`, {
      hint: `start more --role ${o.role} processes instead: the parts of one run merge with payq report --merge`,
    });
  }
  refuseProcsOnMemory(o.procs, o.broker ?? parseBrokerUrl('memory://'));
  const assertions = o.assert.map(parseAssertion);
  const scenario = loadScenario(o.scenario);
  if (o.findMax) {
    if (assertions.length === 0) throw new UsageError('--find-max needs at least one --assert: the SLO each step must meet', { hint: "e.g. --find-max --assert 'p99_ms<250' --assert loss==0" });
    if (o.rate !== undefined || o.count !== undefined) throw new UsageError('--find-max chooses the rate itself: leave out --rate and --count (each step runs for --duration)');
    if (o.maxRate !== undefined && o.maxRate < o.minRate) throw new UsageError(`--max-rate ${o.maxRate} is below --min-rate ${o.minRate}`);
  }
  checkAssertionKeys(
    assertions,
    benchReportKeys({
      stages: scenario.stages.map((s) => s.name),
      deadLetterReasons: DEAD_LETTER_REASONS,
      withRate: (o.rate !== undefined || o.findMax) && (o.role === 'all' || o.role === 'producer'),
      partial: o.role !== 'all',
      sections: o.findMax ? ['capacity'] : [],
      what: `the report of scenario ${scenario.name}${o.role === 'all' ? '' : ` (role ${o.role})`}`,
    }),
  );
  if (o.jsonFile !== undefined) checkWritable(o.jsonFile, '--json');
  if (o.markdown !== undefined) checkWritable(o.markdown, '--markdown');
  if (o.html !== undefined) checkWritable(o.html, '--html');
  const broker = o.broker ?? parseBrokerUrl('memory://');
  const seed = o.seed ?? randomInt(0, 2 ** 31);
  const runId = o.runId ?? randomBytes(6).toString('hex');
  const maxBacklog = o.rate === undefined && o.role === 'all' ? (o.maxBacklog ?? defaultMaxBacklog(o.consumers, scenario.stages.length)) : undefined;
  const durationMs = o.count === undefined ? (o.duration ?? BENCH_DEFAULTS.durationMs) : undefined;


  // Live metrics: listening before anything runs, so a port in use is refused first.
  const live = new LiveBenchMetrics();
  const metrics = await serveMetrics(o, out, () => live.snapshot());
  if (!o.broker) out.info('no --broker and no PAYQ_BROKER: running on memory:// (the in-process broker)');

  try {
    const driver = await openDriver(broker, ctx, o);
    const progress = await startProgress(out, `connecting to ${broker.redacted}`);
    let announced = false;
    let lastPhase: BenchProgress['phase'] | undefined;
    /** One bench run on the connected driver, and its report. */
    const benchOnce = async (rate: number | undefined, stepRunId: string, label: string | undefined): Promise<{ result: BenchResult; report: Report }> => {
      const options = {
        rate,
        durationMs,
        count: o.count,
        warmupMs: o.warmup,
        producers: o.producers,
        consumers: o.consumers,
        seed,
        timeScale: o.timeScale,
        failures: o.failures,
        maxBacklog: rate === undefined ? maxBacklog : undefined,
        drainTimeoutMs: o.drainTimeout,
        partitions: o.partitions,
        runId: stepRunId,
        size: o.size,
        idleTimeoutMs: o.idleTimeout,
        startTimeoutMs: o.startTimeout,
      };
      const result = await runBench(
        { ...options, scenario, role: o.role, shard: o.shard },
        {
          driver,
          clock: systemClock,
          signal: ctx.signal,
          onProgress: (p) => {
            // Said once, also in CI: whoever starts the producer part waits for this line.
            if (p.phase === 'waiting' && !announced) {
              announced = true;
              out.info(`${o.role}: subscribed, waiting for the events of run ${stepRunId}`);
            }
            if (p.phase !== lastPhase) {
              lastPhase = p.phase;
              out.verbose(`bench: ${p.phase}${label ? ` (${label})` : ''}`);
            }
            progress.update(label ? `${label} · ${progressText(p)}` : progressText(p));
            live.progress = p;
          },
          onHistograms: (h) => (live.histograms = h),
          threads:
            o.procs > 1
              ? benchThreads(
                  o.procs,
                  (shard, tally) => ({
                    broker,
                    reconnectTimeout: o.reconnectTimeout,
                    scenario: scenarioOut(scenario),
                    bench: options,
                    shard,
                    tally,
                  }),
                  { signal: ctx.signal, onWarn: (text) => out.warn(text) },
                )
              : undefined,
        },
      );
      const report: Report = buildReport(result.data, {
        run_id: stepRunId,
        role: o.role,
        settings: {
          broker: broker.redacted,
          broker_version: result.brokerVersion ?? null,
          scenario: scenario.name,
          seed,
          rate_per_s: rate ?? null,
          duration_s: durationMs === undefined ? null : durationMs / 1000,
          count: o.count ?? null,
          warmup_s: o.warmup / 1000,
          producers: o.producers,
          consumers: o.consumers,
          procs: o.procs,
          max_backlog: rate === undefined ? (maxBacklog ?? null) : null,
          time_scale: o.timeScale,
          failures: o.failures,
          payq_version: payqVersion,
          node_version: process.version,
          started_at: result.startedAt,
        },
      });
      live.finished(report);
      return { result, report };
    };

    let result: BenchResult;
    let report: Report;
    let search: CapacityResult | undefined;
    try {
      await driver.connect();
      out.verbose(`bench: ${scenario.name} on ${broker.redacted}, seed ${seed}, run ${runId}`);
      if (!o.findMax) {
        ({ result, report } = await benchOnce(o.rate, runId, undefined));
      } else {
        const runs: { result: BenchResult; report: Report }[] = [];
        const stepSeconds = (durationMs ?? BENCH_DEFAULTS.durationMs) / 1000;
        search = await findCapacity(
          async (rate, phase) => {
            const index = runs.length + 1;
            const run = await benchOnce(rate, `${runId}.${index}`, `step ${index} · ${formatCount(rate)} payments/s · ${phase}`);
            if (run.result.drained === 'broker-gone') throw brokerGone(driver, o.reconnectTimeout, `the capacity search stopped in step ${index} (${formatCount(rate)} payments/s), without a verdict`);
            runs.push(run);
            const r = run.report;
            const breaches = evaluateAssertions(r, assertions).filter((x) => !x.passed).map((x) => x.assertion.text);
            // Nothing lost and every send acknowledged is part of every step's verdict.
            if ((r.loss ?? 0) > 0) breaches.push('loss==0');
            if (r.events.unacknowledged > 0) breaches.push('every send acknowledged');
            if (run.result.interrupted) breaches.unshift('interrupted');
            const m = {
              achievedRate: r.payments.produced / stepSeconds,
              backlogBounded: run.result.drained !== 'timeout' && r.events.not_drained === 0,
              breaches,
              eventsPerS: r.throughput.events_per_s,
            };
            const verdict = judgeStep(rate, m, KEEP_UP_TOLERANCE);
            out.info(`step ${index} (${phase}): ${formatCount(rate)} payments/s → ${verdict.passed ? 'pass' : `fail (${verdict.limit})`} · achieved ${formatCount(Math.round(m.achievedRate))}/s · p99 ${r.latency.end_to_end.p99_ms} ms`);
            return m;
          },
          { minRate: o.minRate, maxRate: o.maxRate, precision: o.precision, maxDurationMs: o.maxDuration },
          systemClock,
          ctx.signal,
        );
        // The report is the run at the capacity (its latest passing step), or the first step when none passed.
        const chosen = search.capacity === null ? search.steps[0]! : search.steps.filter((s) => s.passed && s.rate === search!.capacity!.payments_per_s).at(-1)!;
        ({ result, report } = runs[chosen.index - 1]!);
        report.capacity = {
          payments_per_s: search.capacity?.payments_per_s ?? null,
          events_per_s: search.capacity?.events_per_s ?? null,
          slos: assertions.map((a) => a.text),
          min_rate_per_s: o.minRate,
          max_rate_per_s: o.maxRate ?? null,
          precision: o.precision,
          bracketed: search.bracketed,
          stopped_by: search.stoppedBy,
          first_failure: search.firstFailure ? { rate_per_s: search.firstFailure.rate, limit: search.firstFailure.limit } : null,
          steps: search.steps.map((s) => ({
            index: s.index,
            phase: s.phase,
            rate_per_s: s.rate,
            achieved_per_s: Math.round(s.achievedRate * 10) / 10,
            events_per_s: s.eventsPerS,
            p99_ms: runs[s.index - 1]!.report.latency.end_to_end.p99_ms,
            passed: s.passed,
            limit: s.limit ?? null,
          })),
        };
      }
    } finally {
      progress.stop();
      await driver.close();
    }

    const outcomes: AssertionOutcome[] = evaluateAssertions(report, assertions);

    const text = `${JSON.stringify(report, null, 2)}\n`;
    if (o.json && o.jsonFile === undefined) out.data(text);
    // Checked before the run; should a write fail anyway, the report is printed, never lost.
    const unwritten = [
      o.jsonFile === undefined ? undefined : saveOutput(o.jsonFile, text, out, 'stdout'),
      o.markdown === undefined ? undefined : saveOutput(o.markdown, benchReportMarkdown(report, outcomes), out, 'stderr'),
    ].find((e) => e !== undefined);
    if (o.html !== undefined) writeOutput(o.html, renderHtmlReport({ reports: [{ name: o.jsonFile ?? 'bench', report }], outcomes: [outcomes] }));
    if (!(o.json && o.jsonFile === undefined)) out.block(benchReportText(report, out.color));
    if (outcomes.length > 0) out.block(assertionLines(outcomes, out.color));
    if (search && report.capacity) {
      // The steps as a compact table, the capacity line last.
      out.block(capacityText(report.capacity, out.color));
      if (ctx.signal.aborted) throw new InterruptedError(`interrupted during the capacity search after ${search.steps.length} steps`);
      if (search.capacity === null) {
        throw new ThresholdError(`no capacity: even --min-rate ${formatCount(o.minRate)} payments/s breaks ${search.firstFailure?.limit ?? 'an SLO'}`);
      }
      if (unwritten) throw unwritten;
      return;
    }
    const e = report.events;
    if (result.drained === 'timeout' && o.role === 'all' && (e.not_drained > 0 || report.payments.in_flight > 0)) {
      out.warn(
        `the drain timed out after ${o.drainTimeout / 1000} s: ${countOf(e.not_drained, 'acknowledged event')} not drained (the run's backlog on the broker), ` +
          `${countOf(report.payments.in_flight, 'payment')} unfinished; not counted as lost (raise --drain-timeout, or lower --rate)`,
      );
    }
    if (report.errors.length > 0) out.warn(`errors during the run: ${report.errors[0]}`);

    if (result.interrupted) {
      const inFlight = e.in_flight > 0 ? `; ${countOf(e.in_flight, 'acknowledged event')} ${e.in_flight === 1 ? 'was' : 'were'} in flight (not counted as lost)` : '';
      throw new InterruptedError(`interrupted: the report covers the first ${report.elapsed_s} s${inFlight}`);
    }
    if (result.drained === 'broker-gone') {
      // The partial report was written as asked, marked connection.broker_gone (README "Failure drills").
      const inFlight = `${countOf(e.in_flight, 'acknowledged event')} and ${countOf(report.payments.in_flight, 'payment')} in flight (not counted as lost)`;
      throw brokerGone(driver, o.reconnectTimeout, `bench stopped: the report covers the first ${report.elapsed_s} s, ${inFlight}`);
    }
    const breaches = outcomes.filter((x) => !x.passed);
    const breachText = breaches.length > 0 ? `; also ${breaches.length} --assert breached` : '';
    if (o.role === 'worker' || o.role === 'tracer') {
      if (result.drained === 'timeout') out.warn(`no event of run ${runId} arrived within ${o.startTimeout / 1000} s: is the producer running with --run-id ${runId}?`);
      else out.info(`the run's events stopped coming for ${o.idleTimeout / 1000} s: ${o.role} done`);
    }
    if (report.loss !== null && report.loss > 0) {
      throw new DataError(
        `${formatCount(e.lost ?? 0)} of ${formatCount(e.acknowledged - e.in_flight - e.not_drained)} acknowledged events were never consumed (loss ${report.loss})${breachText}`,
      );
    }
    if (report.producers.failed > 0 || report.events.unacknowledged > 0) {
      throw new DataError(`${countOf(report.events.unacknowledged, 'send')} ${report.events.unacknowledged === 1 ? 'was' : 'were'} not acknowledged by the broker${breachText}`);
    }
    if (breaches.length > 0) {
      throw new ThresholdError(`${breaches.length} of ${outcomes.length} --assert breached: ${breaches.map((b) => b.assertion.text).join(', ')}`);
    }
    if (unwritten) throw unwritten;
    out.verbose(`bench: ${formatRate(report.throughput.events_per_s)} events/s, APT ${report.apt_ms} ms`);
  } finally {
    // The final figures stay up for a last scrape (--metrics-linger), then the port closes.
    await metrics.stop(ctx.signal);
  }
}
