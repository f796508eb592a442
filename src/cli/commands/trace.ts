import { z } from 'zod';
import { systemClock } from '../../core/clock.js';
import { modeLine, readMode } from '../../core/read-mode.js';
import { parseExpectation, producibleTypes, trace, unproducibleExpected, type PaymentIssue, type TraceResult } from '../../core/trace.js';
import { brokerGone, openDriver } from '../connect.js';
import { DataError, InterruptedError, UsageError } from '../../errors.js';
import { checkCorrelateDestinations, decodeOptionsOf } from '../../events/decode.js';
import { loadScenario } from '../../events/scenario.js';
import { CONNECTION_OPTIONS, METRICS_OPTIONS, brokerSchema, correlateSchema, destinationSchema, durationSchema, fieldPathSchema, flagSchema, shardSchema, wholeNumber } from '../options.js';
import type { CommandContext } from '../context.js';
import { startProgress } from '../progress.js';
import { formatCount, formatLatency, keyValueTable, issuesTable } from '../render.js';
import { countOf } from '../../text.js';
import { CommandMetrics, serveMetrics } from '../live-metrics.js';
import type { LatencyHistogram } from '../../metrics/histogram.js';
import { sharedAcrossProcesses } from '../../drivers/url.js';
import { DEFAULT_SCENARIO } from './describe.js';
import { EXPECT_IDLE_TIMEOUT_MS } from './trace.command.js';

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  ...METRICS_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  scenario: z.string().optional(),
  topic: z.array(destinationSchema).default([]),
  fromBeginning: flagSchema.default(false),
  stuckAfter: durationSchema,
  expect: z
    .string()
    .transform((v) => v.split(',').map((t) => t.trim()).filter(Boolean))
    .optional(),
  within: durationSchema.optional(),
  payment: z.string().min(1).optional(),
  runId: z.string().min(1).optional(),
  idleTimeout: durationSchema.optional(),
  startTimeout: durationSchema,
  duration: durationSchema.optional(),
  untilFinished: wholeNumber(1).optional(),
  typeField: fieldPathSchema.optional(),
  correlate: correlateSchema.optional(),
  timeField: fieldPathSchema.optional(),
  group: z.string().regex(/^[A-Za-z0-9._:-]{1,200}$/, 'must be letters, digits, . _ : - (at most 200)').optional(),
  requeue: flagSchema.default(false),
  exchange: z.string().min(1).max(255).optional(),
  binding: z.string().max(255).optional(),
  streamOffset: z.string().min(1).optional(),
  shard: shardSchema.optional(),
});

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  if (!o.broker) throw new UsageError('no broker: pass --broker URL or set PAYQ_BROKER');
  if (!sharedAcrossProcesses(o.broker)) {
    throw new UsageError('trace cannot watch memory:// from another process: the memory broker lives inside one process (payq bench runs a tracer in-process); use kafka:// or amqp://');
  }
  if (o.within !== undefined && !o.expect) throw new UsageError('--within goes with --expect');
  if (o.expect && o.expect.length === 0) throw new UsageError('--expect needs at least one event type');
  if (o.expect && parseExpectation(o.expect).some((alts) => alts.some((t) => t === ''))) {
    throw new UsageError(`--expect '${o.expect.join(',')}': an empty event type (expected TYPE,TYPE or TYPE|TYPE for alternatives)`);
  }
  // Own events on own topics need no scenario; otherwise the scenario names the destinations.
  const scenario = o.scenario !== undefined || (o.topic.length === 0 && o.exchange === undefined) ? loadScenario(o.scenario ?? DEFAULT_SCENARIO) : undefined;
  // An expectation the scenario can never meet would fail every payment, or worse pass unchecked.
  const unproducible = scenario && o.expect ? unproducibleExpected(scenario, o.expect) : [];
  if (scenario && unproducible.length > 0) {
    throw new UsageError(
      `--expect: scenario ${scenario.name} never produces ${unproducible.map((t) => `'${t}'`).join(', ')}; its event types are ${producibleTypes(scenario).join(', ')}`,
    );
  }
  const destinations = o.exchange !== undefined ? [o.exchange] : o.topic.length > 0 ? o.topic : scenario!.destinations;
  // With --expect and no end condition, end once the pipeline has been quiet for a while: 5 s once
  // every payment seen is judged, else once a payment still open has had --within (+ 1 s) to end.
  const expectEnds = o.expect !== undefined && o.idleTimeout === undefined && o.duration === undefined;
  const idleTimeoutMs = o.idleTimeout ?? (expectEnds ? Math.max(EXPECT_IDLE_TIMEOUT_MS, (o.within ?? 0) + 1_000) : undefined);
  const judgedIdleTimeoutMs = expectEnds ? EXPECT_IDLE_TIMEOUT_MS : undefined;
  if (o.correlate) checkCorrelateDestinations(o.correlate, destinations);

  const out = ctx.out;
  const live = new CommandMetrics();
  const traceFigures = (events: number, finished: number, inFlight: number) => {
    live.counter('payq_events_seen', 'events read on the watched destinations', events);
    live.counter('payq_payments_finished', 'payments that reached an end (any class)', finished);
    live.gauge('payq_in_flight_payments', 'payments seen and not finished', inFlight, 'payments');
  };
  traceFigures(0, 0, 0);
  const metrics = await serveMetrics(o, out, () => live.snapshot());
  const driver = await openDriver(o.broker, ctx, o);
  const mode = readMode(o, driver);
  if (mode.kind === 'exchange' && o.topic.length > 0) throw new UsageError('--exchange taps an exchange, not --topic queues: give one of them');
  if (mode.kind === 'stream' && o.fromBeginning) throw new UsageError('--stream-offset says where to start: --from-beginning is --stream-offset first');
  const progress = await startProgress(out, `reading ${countOf(destinations.length, 'destination')} on ${o.broker.redacted}`);
  let result: TraceResult;
  let hopsOf: ReadonlyMap<string, LatencyHistogram> | undefined;
  try {
    await driver.connect();
    result = await trace(
      {
        scenario,
        destinations,
        decode: decodeOptionsOf(o),
        stuckAfterMs: o.stuckAfter,
        expect: o.expect,
        withinMs: o.within,
        payment: o.payment,
        runId: o.runId,
        fromBeginning: o.fromBeginning,
        idleTimeoutMs,
        judgedIdleTimeoutMs,
        startTimeoutMs: o.startTimeout,
        durationMs: o.duration,
        untilFinished: o.untilFinished,
        mode,
        shard: o.shard,
      },
      {
        driver,
        clock: systemClock,
        signal: ctx.signal,
        // The first line says how payq reads (README "How payq reads a destination it did not build").
        onReady: () =>
          out.info(`trace: watching ${destinations.join(', ')} on ${o.broker!.redacted} ${modeLine(mode, driver)}${o.shard ? ` · shard ${o.shard.index}/${o.shard.count}` : ''}`),
        onHistograms: (h) => {
          live.histogram('payq_end_to_end_latency_seconds', "a payment's first event published to its last", h.endToEnd);
          hopsOf = h.hops;
        },
        onProgress: (p) => {
          traceFigures(p.events, p.finished, p.inFlight);
          for (const [stage, hist] of hopsOf ?? []) live.histogram('payq_hop_latency_seconds', 'published to consumed by the next stage', hist, { stage });
          progress.update(`${countOf(p.events, 'event')} · ${countOf(p.finished, 'payment')} finished · ${formatCount(p.inFlight)} in flight`);
        },
      },
    );
  } finally {
    progress.stop();
    await driver.close();
  }

  // The final figures, then --metrics-linger for a last scrape.
  traceFigures(result.events.seen, result.payments.finished, result.payments.in_flight);
  live.histogram('payq_end_to_end_latency_seconds', "a payment's first event published to its last", result.histograms.endToEnd);
  for (const [stage, hist] of result.histograms.hops) live.histogram('payq_hop_latency_seconds', 'published to consumed by the next stage', hist, { stage });
  await metrics.stop(ctx.signal);

  const { histograms: _h, ...report } = result;
  if (o.json) out.data(`${JSON.stringify({ schema: 'payq.trace/v1', broker: o.broker.redacted, destinations, scenario: scenario?.name ?? null, shard: o.shard ? `${o.shard.index}/${o.shard.count}` : null, ...report }, null, 2)}\n`);
  else render(result, ctx, o.payment);
  if (result.events.correlated_by_key > 0) {
    out.warn(
      `${formatCount(result.events.correlated_by_key)} of ${countOf(result.events.seen, 'event')} carry no correlation id (no CloudEvents subject, no '${decodeOptionsOf(o).correlate}' field): they were tied into payments by their message key; --correlate FIELD names the field that does`,
    );
  }
  if (result.events.undecodable > 0) {
    out.warn(`${countOf(result.events.undecodable, 'message')} could not be read as events (left where they are): ${result.undecodable_samples[0]}`);
  }
  if (result.interrupted) throw new InterruptedError(`interrupted after ${countOf(result.events.seen, 'event')}`);
  if (result.broker_gone) {
    // Cut off is not lost: no verdict either way (README "Failure drills").
    const p = result.payments;
    throw brokerGone(
      driver,
      o.reconnectTimeout,
      `trace stopped without a verdict: ${countOf(p.finished, 'payment')} finished, ${formatCount(p.in_flight)} in flight when it went away (not judged: their events may yet come)`,
    );
  }
  if (result.expectation?.no_events) throw new DataError(`--expect: no events were seen on ${destinations.join(', ')}`);
  if (o.payment !== undefined && (result.timeline ?? []).length === 0) {
    throw new DataError(`--payment ${o.payment}: no event of this payment was seen on ${destinations.join(', ')}`);
  }
  if (result.expectation && result.expectation.failed > 0) {
    const e = result.expectation;
    throw new DataError(`${formatCount(e.failed)} of ${countOf(e.passed + e.failed, 'payment')} did not meet --expect ${e.types.join(',')}${e.within_ms ? ` within ${e.within_ms / 1000}s` : ''}`);
  }
}

function render(r: TraceResult, ctx: CommandContext, payment: string | undefined): void {
  const c = ctx.out.color;
  const classes = Object.entries(r.payments.by_class)
    .map(([k, v]) => `${k} ${formatCount(v)}`)
    .join(' · ');
  const rows: [string, string][] = [
    [
      'payments',
      `${formatCount(r.payments.seen)} seen${r.events.correlated_by_key > 0 ? ' (by message key)' : ''} · ${formatCount(r.payments.finished)} finished · ${formatCount(r.payments.in_flight)} unfinished`,
    ],
    ['classes', classes || '-'],
    ['stuck', r.payments.stuck === 0 ? '0' : c.red(formatCount(r.payments.stuck))],
    ['events', `${formatCount(r.events.seen)} seen · ${formatCount(r.events.duplicates)} duplicates · ${formatCount(r.events.out_of_order)} out of order · ${formatCount(r.events.missing_steps)} missing steps`],
    ['transit latency', formatLatency(r.latency.transit)],
    ['end-to-end latency', formatLatency(r.latency.end_to_end)],
  ];
  // History was read, not watched: its events have no transit (their other figures come from their own timestamps).
  if (r.events.from_history > 0) rows.splice(5, 0, ['from history', `${countOf(r.events.from_history, 'event')}, published before trace started: not in transit`]);
  for (const [stage, s] of Object.entries(r.latency.hops)) rows.push([`hop ${stage}`, formatLatency(s)]);
  if (r.expectation) {
    const e = r.expectation;
    if (r.broker_gone) rows.push(['expectation', c.yellow(`no verdict (the broker went away): ${formatCount(e.failed)} failed · ${formatCount(e.passed)} passed so far`)]);
    else rows.push(['expectation', e.failed === 0 ? c.green(`${formatCount(e.passed)} passed`) : c.red(`${formatCount(e.failed)} failed · ${formatCount(e.passed)} passed`)]);
  }
  ctx.out.block(keyValueTable(rows, c));
  const failures: PaymentIssue[] = r.expectation?.failures ?? [];
  if (failures.length > 0) ctx.out.block(issuesTable('payments that failed --expect', failures, c));
  else if (r.stuck.length > 0) ctx.out.block(issuesTable('stuck payments', r.stuck, c));
  if (payment !== undefined) {
    if (!r.timeline || r.timeline.length === 0) ctx.out.info(`payment ${payment}: no events seen`);
    else
      ctx.out.block(
        keyValueTable(
          r.timeline.map((t) => [`+${t.offset_ms} ms`, `${t.type}${t.dead_lettered ? c.red(' (dead-lettered)') : ''}${t.duplicate ? c.yellow(' (duplicate)') : ''} on ${t.destination}${t.occurred_at ? `, occurred ${t.occurred_at}` : ''}`]),
          c,
        ),
      );
  }
}
