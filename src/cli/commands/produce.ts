import { randomBytes, randomInt } from 'node:crypto';
import { z } from 'zod';
import { systemClock } from '../../core/clock.js';
import { produce, type ProduceResult } from '../../core/produce.js';
import { generatedSource, ndjsonInputKind, ndjsonSource, validateNdjsonFile, type EventSource, type NdjsonSource } from '../../core/sources.js';
import { threadedSource } from '../../core/threaded-source.js';
import { openDriver } from '../connect.js';
import { BrokerUnavailableError, ConfigError, DataError, InterruptedError, UsageError } from '../../errors.js';
import { EventGenerator, type GeneratedEvent, type Shard } from '../../events/generator.js';
import { loadScenario } from '../../events/scenario.js';
import { CONNECTION_OPTIONS, METRICS_OPTIONS, brokerSchema, destinationSchema, durationSchema, flagSchema, procsSchema, rateSchema, shardSchema, wholeNumber } from '../options.js';
import type { CommandContext } from '../context.js';
import { payqVersion } from '../context.js';
import { startProgress } from '../progress.js';
import { formatCount, formatLatency, formatRate, keyValueTable } from '../render.js';
import { countOf } from '../../text.js';
import { produceInThreads } from './produce-procs.js';
import { refuseProcsOnMemory, scenarioOut } from '../threads.js';
import { DEFAULT_COUNT } from './produce.command.js';
import { CommandMetrics, serveMetrics } from '../live-metrics.js';
import { sharedAcrossProcesses } from '../../drivers/url.js';

export const schema = z.strictObject({
  ...CONNECTION_OPTIONS,
  ...METRICS_OPTIONS,
  broker: brokerSchema.optional(),
  json: flagSchema.default(false),
  topic: destinationSchema.optional(),
  count: wholeNumber(1).optional(),
  duration: durationSchema.optional(),
  rate: rateSchema.optional(),
  seed: wholeNumber(0).optional(),
  scenario: z.string(),
  lifecycle: flagSchema.default(false),
  fromFile: z.string().min(1, "must be a file name, or '-' for stdin").optional(),
  skipLines: wholeNumber(0).optional(),
  typeField: z.string().regex(/^[A-Za-z0-9_$][A-Za-z0-9_$.-]*$/, 'must be a field path such as event or meta.type'),
  size: wholeNumber(0, 1024 * 1024),
  partitions: wholeNumber(1, 10_000),
  dryRun: flagSchema.default(false),
  runId: z.string().regex(/^[A-Za-z0-9._-]{1,64}$/, 'must be letters, digits, . _ - (at most 64)').optional(),
  batchSize: wholeNumber(1, 100_000).optional(),
  maxInFlight: wholeNumber(1, 1024).optional(),
  shard: shardSchema.optional(),
  procs: procsSchema,
});

/** Payments of shard i/N among `payments`: those at positions ≡ i − 1 mod N. */
function shardPayments(payments: number, shard: Shard | undefined): number {
  if (!shard) return payments;
  return Math.max(0, Math.ceil((payments - (shard.index - 1)) / shard.count));
}

export async function run(o: z.output<typeof schema>, ctx: CommandContext): Promise<void> {
  if (o.count !== undefined && o.duration !== undefined) throw new UsageError('--count and --duration exclude each other');
  if (o.fromFile !== undefined && o.lifecycle) throw new UsageError('--lifecycle generates events; it does not apply to --from-file');
  if (o.fromFile !== undefined && o.size > 0) throw new UsageError('--size pads generated events; it does not apply to --from-file (your bodies are sent as written)');
  if (o.skipLines !== undefined && o.fromFile === undefined) throw new UsageError('--skip-lines applies to --from-file only');
  const seed = o.seed ?? randomInt(0, 2 ** 31);
  const scenario = loadScenario(o.scenario);
  const payments = o.count ?? (o.duration !== undefined ? Infinity : DEFAULT_COUNT);
  const topic = o.topic ?? scenario.destinationFor(scenario.entry);
  const out = ctx.out;
  if (o.fromFile !== undefined && (o.shard !== undefined || o.procs > 1)) {
    throw new UsageError('--shard and --procs split the seeded stream; they do not apply to --from-file');
  }
  if (o.shard !== undefined && o.procs > 1) throw new UsageError('--shard and --procs exclude each other (--procs N runs shards 1/N..N/N itself)');
  if (!o.dryRun && o.broker !== undefined) refuseProcsOnMemory(o.procs, o.broker);
  // --rate is the whole stream's: each of N shards sends rate/N.
  const shards = o.shard?.count ?? o.procs;
  const shardRate = o.rate === undefined ? undefined : o.rate / shards;

  const generator = { scenario, seed, payments, lifecycle: o.lifecycle, size: o.size, shard: o.shard };
  // Users' NDJSON (README, produce): a regular file is checked whole before anything is sent, so
  // a bad line sends nothing; stdin or a pipe streams, and a bad line stops it with what was sent.
  let fileSource: NdjsonSource | undefined;
  if (o.fromFile !== undefined) {
    const input = {
      file: o.fromFile,
      stdin: ctx.stdin as NodeJS.ReadStream,
      typeField: o.typeField,
      seed,
      skipLines: o.skipLines,
      maxEvents: o.count,
    };
    if (ndjsonInputKind(o.fromFile) === 'file') {
      const checked = await validateNdjsonFile(input).catch((err: unknown) => {
        throw err instanceof ConfigError ? new ConfigError(`${err.message}; nothing was ${o.dryRun ? 'printed' : 'sent'}`, { cause: err }) : err;
      });
      out.verbose(`${o.fromFile}: ${countOf(checked.events, 'event')} checked, up to line ${checked.lastLine}`);
    }
    fileSource = ndjsonSource(input);
  }

  if (o.dryRun) {
    if (payments === Infinity && o.fromFile === undefined) throw new UsageError('--dry-run needs --count (it does not run for a duration)');
    // With --procs N: shard 1/N's lines, then 2/N's… — the same lines as one process, grouped by shard.
    const sources =
      fileSource !== undefined
        ? [fileSource]
        : o.procs > 1
          ? Array.from({ length: o.procs }, (_, k) => generatedSource(new EventGenerator({ ...generator, shard: { index: k + 1, count: o.procs } })))
          : [generatedSource(new EventGenerator(generator))];
    let printed = 0;
    for (const source of sources) {
      for (;;) {
        const chunk = await source.pull(1000);
        if (chunk.length === 0) break;
        let text = '';
        for (const e of chunk) text += `${e.body}\n`;
        await out.dataAsync(text);
        printed += chunk.length;
      }
    }
    if (fileSource?.failure) throw stoppedAt(fileSource, `${countOf(printed, 'event')} before it printed`);
    return;
  }

  if (!o.broker) throw new UsageError('no broker: pass --broker URL or set PAYQ_BROKER (memory:// runs in this process)');
  // A stream is checked as it goes, but its first event is read before connecting: input that is
  // not NDJSON at all is refused before anything is created or sent.
  let firstEvents: GeneratedEvent[] = [];
  if (fileSource) {
    firstEvents = await fileSource.pull(1);
    if (fileSource.failure) throw stoppedAt(fileSource, 'nothing sent');
  }
  // memory:// lives in this process and nothing here reads what is produced: keeping it would
  // only grow memory with --count or --duration. ?maxLength=N in the URL keeps the last N.
  const brokerUrl =
    !sharedAcrossProcesses(o.broker) && o.broker.params.maxLength === undefined ? { ...o.broker, params: { ...o.broker.params, maxLength: '0' } } : o.broker;
  const live = new CommandMetrics();
  const produceFigures = (p: { sent: number; acked: number; failed: number }) => {
    live.counter('payq_events_sent', 'events handed to the broker', p.sent);
    live.counter('payq_events_acknowledged', 'events the broker acknowledged', p.acked);
    live.counter('payq_events_failed', 'events the broker did not acknowledge', p.failed);
  };
  produceFigures({ sent: 0, acked: 0, failed: 0 });
  const metrics = await serveMetrics(o, out, () => live.snapshot());
  const driver = await openDriver(brokerUrl, ctx, o);
  const runId = o.runId ?? randomBytes(6).toString('hex');
  const progress = await startProgress(out, `connecting to ${o.broker.redacted}`);
  const encode = { binding: driver.headerBinding, sourcePrefix: `/payq/${scenario.name}`, runId };
  const produceOptions = { destination: topic, rate: shardRate, durationMs: o.duration, batchSize: o.batchSize, maxInFlight: o.maxInFlight, encode };
  const onProgress = (p: { sent: number; acked: number; failed: number; elapsedMs: number }) => {
    produceFigures(p);
    progress.update(`${formatCount(p.acked)} acked · ${formatCount(p.sent - p.acked - p.failed)} in flight · ${formatRate(p.acked / Math.max(0.001, p.elapsedMs / 1000))} events/s`);
  };
  let result: ProduceResult;
  if (o.procs > 1) {
    // The destination is declared once, here; then each thread connects a client of its own.
    try {
      await driver.connect();
      for (const notice of await driver.declare([{ name: topic, partitions: o.partitions, deadLetter: true }])) out.warn(notice);
    } catch (err) {
      progress.stop();
      await driver.close();
      throw err;
    }
    await driver.close();
    out.verbose(`producing to ${topic} on ${o.broker.redacted} in ${o.procs} threads (seed ${seed}, run ${runId})`);
    try {
      const { scenario: _, ...plain } = generator;
      result = await produceInThreads(
        o.procs,
        (k) => ({
          broker: brokerUrl,
          reconnectTimeout: o.reconnectTimeout,
          scenario: scenarioOut(scenario),
          generator: { ...plain, shard: { index: k, count: o.procs } },
          produce: produceOptions,
        }),
        ctx.signal,
        onProgress,
      );
    } finally {
      progress.stop();
    }
  } else {
    // Generated events come from a generator thread, so this one only sends. It starts now, while
    // the connection is made, and ends with produce (or below, if connecting fails).
    const source: EventSource = fileSource ? withFirst(firstEvents, fileSource) : threadedSource(generator);
    try {
      await driver.connect();
      for (const notice of await driver.declare([{ name: topic, partitions: o.partitions, deadLetter: true }])) out.warn(notice);
      out.verbose(`producing to ${topic} on ${o.broker.redacted} (seed ${seed}, run ${runId})`);
      result = await produce(produceOptions, { driver, source, clock: systemClock, signal: ctx.signal, onProgress });
    } finally {
      source.close?.();
      progress.stop();
      await driver.close();
    }
  }

  // The final figures, then --metrics-linger for a last scrape.
  produceFigures(result);
  if (result.histograms?.publish) live.histogram('payq_publish_latency_seconds', 'send to broker acknowledgement', result.histograms.publish);
  await metrics.stop(ctx.signal);

  // A stream whose first event was bad sent nothing: one error line, as for a file.
  if (fileSource?.failure && result.sent === 0) throw stoppedAt(fileSource, 'nothing sent');
  const summary = {
    schema: 'payq.produce/v1',
    broker: o.broker.redacted,
    destination: topic,
    scenario: o.fromFile !== undefined ? null : scenario.name,
    source: o.fromFile ?? (o.lifecycle ? 'lifecycle' : 'entry'),
    seed,
    run_id: runId,
    rate_per_s: o.rate ?? null,
    shard: o.shard ? `${o.shard.index}/${o.shard.count}` : null,
    procs: o.procs,
    payments: result.payments,
    last_line: fileSource ? fileSource.lastLine : null,
    sent: result.sent,
    acked: result.acked,
    failed: result.failed,
    unconfirmed: result.unconfirmed,
    reconnects: result.reconnects,
    unavailable_s: result.unavailable_s,
    not_sent:
      Number.isFinite(payments) && o.fromFile === undefined && !o.lifecycle ? Math.max(0, shardPayments(payments, o.shard) - result.sent) : null,
    bytes_acked: result.bytes_acked,
    elapsed_s: result.elapsed_s,
    events_per_s: result.events_per_s,
    mb_per_s: result.mb_per_s,
    publish_latency: result.publish_latency,
    publish_delay: result.publish_delay ?? null,
    intended_latency: result.intended_latency ?? null,
    errors: result.errors,
    interrupted: result.interrupted,
    payq_version: payqVersion,
    node_version: process.version,
  };
  if (o.json) out.data(`${JSON.stringify(summary, null, 2)}\n`);
  const c = out.color;
  const rows: [string, string][] = [
    ['broker', summary.broker],
    ['destination', topic],
    ['source', `${summary.source}${summary.scenario ? ` (${summary.scenario}, seed ${seed})` : ''}`],
    ...(o.shard ? ([['shard', `${summary.shard} (payments at positions ≡ ${o.shard.index - 1} mod ${o.shard.count})`]] as [string, string][]) : []),
    ...(o.procs > 1 ? ([['threads', `${o.procs} (shards 1/${o.procs}..${o.procs}/${o.procs})`]] as [string, string][]) : []),
    // A file's events are not payments payq generated: count them as what they are.
    [fileSource ? 'events' : 'payments', formatCount(result.payments)],
    ['sent', formatCount(result.sent)],
    ['acked', result.acked === result.sent ? c.green(formatCount(result.acked)) : c.yellow(formatCount(result.acked))],
    ['failed', result.failed === 0 ? '0' : c.red(formatCount(result.failed))],
    ...(result.unconfirmed > 0 ? ([['unconfirmed', `${formatCount(result.unconfirmed)} of the failed (the broker may have stored them)`]] as [string, string][]) : []),
    ...(result.reconnects > 0 || result.unavailable_s > 0
      ? ([['broker away', `${result.unavailable_s.toFixed(1)} s, ${countOf(result.reconnects, 'reconnect')}`]] as [string, string][])
      : []),
    ['elapsed', `${result.elapsed_s} s`],
    ['throughput', `${formatRate(result.events_per_s)} events/s · ${result.mb_per_s} MB/s`],
    ['publish latency', formatLatency(result.publish_latency)],
  ];
  if (result.publish_delay) rows.push(['publish delay', formatLatency(result.publish_delay)]);
  if (result.intended_latency) rows.push(['latency from intended', formatLatency(result.intended_latency)]);
  if (!o.json) out.block(keyValueTable(rows, c));
  if (!sharedAcrossProcesses(o.broker)) {
    out.verbose(`memory:// lives in this process and nothing reads it here: the events ${brokerUrl === o.broker ? 'are gone when it exits' : 'were dropped as they were acknowledged'}`);
  }

  if (fileSource?.failure) {
    const failed = result.failed > 0 ? `, ${formatCount(result.failed)} not acknowledged` : '';
    throw stoppedAt(fileSource, `${countOf(result.sent, 'event')} before it sent (${formatCount(result.acked)} acknowledged${failed})`);
  }
  if (result.interrupted) throw new InterruptedError(`interrupted: ${formatCount(result.acked)} of ${formatCount(result.sent)} sent events acknowledged`);
  if (result.broker_gone) {
    // README "Failure drills": the broker stayed away past --reconnect-timeout.
    const unconfirmed = result.unconfirmed > 0 ? ` (${formatCount(result.unconfirmed)} unconfirmed: the broker may hold them)` : '';
    const notSent = summary.not_sent ? `, ${formatCount(summary.not_sent)} not sent` : '';
    throw new BrokerUnavailableError(
      `${result.errors[0] ?? 'the broker went away'}: ${formatCount(result.acked)} of ${countOf(result.sent, 'event')} acknowledged, ${formatCount(result.failed)} failed${unconfirmed}${notSent}`,
    );
  }
  if (result.failed > 0 || result.stopped_early) {
    throw new DataError(
      `${formatCount(result.failed)} of ${countOf(result.sent, 'event')} ${result.failed === 1 ? 'was' : 'were'} not acknowledged${result.stopped_early ? '; stopped early' : ''}: ${result.errors[0] ?? 'unknown error'}`,
    );
  }
}

/**
 * A bad line found after events went out (a stream cannot be checked first): what was done, and
 * the flag that resumes after it once the line is fixed.
 */
function stoppedAt(source: NdjsonSource, done: string): ConfigError {
  const failure = source.failure!;
  if (source.payments === 0) return new ConfigError(`${failure.message}; nothing was sent`, { cause: failure });
  const resume = `fix line ${failure.line} and resume with --skip-lines ${failure.line - 1}`;
  return new ConfigError(`${failure.message}; stopped there: ${done}, up to line ${source.lastLine}; ${resume}`, { cause: failure });
}

/** `source`, with the events already pulled from it handed out first. */
function withFirst(first: GeneratedEvent[], source: EventSource): EventSource {
  let pending = first;
  return {
    pull(max) {
      if (pending.length === 0) return source.pull(max);
      const out = pending.slice(0, max);
      pending = pending.slice(max);
      return out;
    },
    get payments() {
      return source.payments;
    },
    close: () => source.close?.(),
  };
}
