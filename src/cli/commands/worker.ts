import type { ChalkInstance } from 'chalk';
import { z } from 'zod';
import { systemClock } from '../../core/clock.js';
import { runWorker, selectStages, topologyOf, type StageStats, type WorkerResult } from '../../core/worker.js';
import { brokerGone, openDriver } from '../connect.js';
import { InterruptedError, UsageError } from '../../errors.js';
import { loadScenario } from '../../events/scenario.js';
import { encodeHistogram } from '../../metrics/histogram.js';
import { CONNECTION_OPTIONS, METRICS_OPTIONS, brokerSchema, durationSchema, flagSchema, nonNegativeSchema, onOffSchema, procsSchema, wholeNumber } from '../options.js';
import { workerInThreads, type WorkerCounts } from './worker-procs.js';
import { scenarioOut } from '../threads.js';
import type { CommandContext } from '../context.js';
import { payqVersion } from '../context.js';
import { startProgress } from '../progress.js';
import { fitTable, formatCount, formatRate } from '../render.js';
import { countOf } from '../../text.js';
import { CommandMetrics, serveMetrics } from '../live-metrics.js';
import { sharedAcrossProcesses } from '../../drivers/url.js';

/** `--stage a --stage b`, `--stage a,b`, or a list in a config file. */
const stageListSchema = z.union([z.string(), z.array(z.string())]).transform((v, ctx) => {
  const names = (Array.isArray(v) ? v : [v]).flatMap((s) => s.split(',')).map((s) => s.trim()).filter((s) => s !== '');
  if (names.length === 0) {
    ctx.addIssue({ code: 'custom', message: 'must name a stage of the scenario' });
    return z.NEVER;
  }
  return names;
});

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  ...METRICS_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  scenario: z.string(),
  stage: stageListSchema.optional(),
  prefetch: wholeNumber(1, 100_000),
  seed: wholeNumber(0),
  failures: onOffSchema,
  timeScale: nonNegativeSchema,
  duration: durationSchema.optional(),
  idleTimeout: durationSchema.optional(),
  partitions: wholeNumber(1, 10_000),
  procs: procsSchema,
});

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  if (!o.broker) throw new UsageError('no broker: pass --broker URL or set PAYQ_BROKER');
  if (!sharedAcrossProcesses(o.broker)) {
    throw new UsageError(
      'payq worker cannot use memory://: the memory broker lives inside one process, so a separate worker process would never see the events produced elsewhere',
      { hint: 'use kafka:// or amqp://, or payq bench --broker memory://, which runs the workers in its own process' },
    );
  }
  const scenario = loadScenario(o.scenario);
  // Before connecting: a typo in --stage is a usage error, not something to find out from a broker.
  selectStages(scenario, o.stage);
  const out = ctx.out;
  const live = new CommandMetrics();
  const workerFigures = (t: { handled: number; emitted: number; deadLettered: number; inFlight: number }) => {
    live.counter('payq_events_handled', 'events handled (outputs confirmed, input acked)', t.handled);
    live.counter('payq_events_emitted', 'events the stages emitted and the broker confirmed', t.emitted);
    live.counter('payq_dead_letters', 'events dead-lettered', t.deadLettered);
    live.gauge('payq_in_flight_events', 'deliveries being handled now', t.inFlight, 'events');
  };
  workerFigures({ handled: 0, emitted: 0, deadLettered: 0, inFlight: 0 });
  const metrics = await serveMetrics(o, out, () => live.snapshot());
  const driver = await openDriver(o.broker, ctx, o);
  const progress = await startProgress(out, `connecting to ${o.broker.redacted}`);
  let last = { handled: 0, ms: 0 };
  let rate = 0;
  const onProgress = (p: WorkerCounts & { elapsedMs: number }) => {
    workerFigures(p);
    if (p.elapsedMs - last.ms >= 1000) {
      rate = ((p.handled - last.handled) * 1000) / (p.elapsedMs - last.ms);
      last = { handled: p.handled, ms: p.elapsedMs };
    }
    progress.update(`${formatCount(p.handled)} handled · ${formatCount(p.emitted)} emitted · ${formatCount(p.deadLettered)} dead-lettered · ${formatRate(rate)} events/s`);
  };
  const options = {
    stages: o.stage,
    prefetch: o.prefetch,
    seed: o.seed,
    failures: o.failures,
    timeScale: o.timeScale,
    partitions: o.partitions,
    durationMs: o.duration,
    idleTimeoutMs: o.idleTimeout,
  };
  let result: WorkerResult;
  try {
    await driver.connect();
    if (o.procs > 1) {
      // The topology is declared once, here; then each thread connects a client of its own.
      for (const notice of await driver.declare(topologyOf(scenario, selectStages(scenario, o.stage), o.partitions))) out.warn(notice);
      await driver.close();
      progress.update(`starting ${o.procs} threads on ${o.broker.redacted}`);
      const data = { broker: o.broker, reconnectTimeout: o.reconnectTimeout, scenario: scenarioOut(scenario), worker: options };
      result = await workerInThreads(o.procs, data, ctx.signal, {
        onWarn: (text) => out.warn(text),
        onProgress,
        onReady: (n) => out.verbose(`worker: subscribed in ${o.procs} threads (${countOf(n, 'subscription')} each), handling`),
      });
    } else {
      progress.update(`subscribing on ${o.broker.redacted}`);
      result = await runWorker(
        { ...options, scenario },
        {
          driver,
          clock: systemClock,
          signal: ctx.signal,
          onNotice: (text) => ctx.out.warn(text),
          onReady: (n) => out.verbose(`worker: subscribed (${countOf(n, 'subscription')}), handling`),
          onProgress,
        },
      );
    }
  } finally {
    progress.stop();
    await driver.close();
  }
  // The final figures, then --metrics-linger for a last scrape.
  const t = result.totals;
  workerFigures({ handled: t.handled, emitted: t.emitted, deadLettered: t.dead_lettered_total, inFlight: 0 });
  for (const s of result.stages) live.histogram('payq_processing_seconds', 'processing time drawn for each handled event (tᵢ)', result.measures[s.stage]!.planned, { stage: s.stage });
  await metrics.stop(ctx.signal);

  const stageNames = result.stages.map((s) => s.stage);
  if (o.json) {
    const summary = {
      schema: 'payq.worker/v1',
      broker: o.broker.redacted,
      scenario: scenario.name,
      stages_run: stageNames,
      seed: o.seed,
      failures: o.failures,
      time_scale: o.timeScale,
      prefetch: o.prefetch,
      procs: o.procs,
      stages: result.stages.map((s) => ({
        ...s,
        processing_histogram: encodeHistogram(result.measures[s.stage]!.planned),
        wall_histogram: encodeHistogram(result.histograms[s.stage]!),
      })),
      totals: result.totals,
      elapsed_s: result.elapsed_s,
      stopped_by: result.stopped_by,
      interrupted: result.interrupted,
      broker_gone: result.broker_gone,
      unsettled: result.unsettled,
      errors: result.errors,
      error_count: result.error_count,
      payq_version: payqVersion,
      node_version: process.version,
    };
    out.data(`${JSON.stringify(summary, null, 2)}\n`);
  } else {
    out.block(stageTable(result, out.color));
    const reasons = Object.entries(result.totals.dead_lettered).filter(([, n]) => n > 0);
    if (reasons.length > 0) out.info(`dead-lettered by reason: ${reasons.map(([r, n]) => `${r} ${formatCount(n)}`).join(', ')}`);
    out.info(
      `APT ${result.totals.apt_ms} ms (wall ${result.totals.apt_wall_ms} ms) over ${formatCount(result.totals.handled)} handled events in ${result.elapsed_s} s${o.procs > 1 ? ` by ${o.procs} threads` : ''}`,
    );
  }
  if (result.error_count > 0) {
    out.warn(`${countOf(result.error_count, 'send or dead letter', 'sends or dead letters')} failed; their inputs were given back for redelivery: ${result.errors[0]}`);
  }
  if (result.interrupted) {
    throw new InterruptedError(`interrupted: ${countOf(result.totals.handled, 'event')} handled; in-flight work drained`);
  }
  if (result.broker_gone) {
    // Nothing is lost: the broker delivers again what it did not see acked (README "Failure drills").
    const redelivered =
      result.unsettled > 0
        ? `${countOf(result.unsettled, 'delivery', 'deliveries')} acked or given back while it was away never reached it and will be redelivered, with every other one not acked`
        : 'what was not acked will be redelivered';
    throw brokerGone(
      driver,
      o.reconnectTimeout,
      `worker stopped: ${countOf(result.totals.handled, 'event')} handled; ${redelivered} (handled again with the same event ids: nothing is lost)`,
    );
  }
}

function stageTable(result: WorkerResult, color: ChalkInstance): string {
  const head = ['stage', 'handled', 'processing p50 / p99', 'attempts', 'retries', 'dead-lettered', 'undecodable', 'emitted'].map((h) => color.bold(h));
  const rows: string[][] = [];
  const row = (name: string, s: Omit<StageStats, 'stage' | 'destination' | 'group' | 't_ms'>) => [
    name,
    formatCount(s.handled),
    s.processing_time.count === 0 ? '-' : `${s.processing_time.p50_ms} / ${s.processing_time.p99_ms} ms`,
    formatCount(s.attempts),
    formatCount(s.retries),
    s.dead_lettered_total === 0 ? '0' : color.yellow(formatCount(s.dead_lettered_total)),
    s.undecodable === 0 ? '0' : color.red(formatCount(s.undecodable)),
    formatCount(s.emitted),
  ];
  for (const s of result.stages) rows.push(row(s.stage, s));
  if (result.stages.length > 1) rows.push(row(color.bold('total'), result.totals));
  return fitTable(head, rows, color);
}
