/**
 * The bench report (`"schema": "payq.report/v1"`): what `payq bench --json` writes and
 * `payq report` reads, renders, merges and compares.
 *
 * A report is built in one place (`buildReport`) from raw run data — counts and histograms — and
 * every derived figure (rates, percentiles, APT, loss, availability) is computed there. A report
 * keeps the raw counts and every histogram (compressed base64), so `reportData` gets the raw run
 * data back; merging (merge.ts) adds the raw data and builds again. Merged figures are therefore
 * exactly the figures of one run over the combined samples (percentiles within HdrHistogram's 3
 * significant digits, the same as any single report).
 *
 * Keys are stable and carry their unit (`_ms`, `_s`, `_per_s`, `mb_per_s`, `bytes`); counts have
 * no suffix; `loss` and `availability` are fractions from 0 to 1.
 */
import { randomBytes } from 'node:crypto';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { aptMs, handlerTMs } from './apt.js';
import type { AvailabilityWindows } from './availability.js';
import { createLatencyHistogram, decodeHistogram, encodeHistogram, summarize, type LatencyHistogram, type LatencySummary } from './histogram.js';
import type { TimeSeries } from './timeseries.js';

export const REPORT_SCHEMA = 'payq.report/v1';

const count = z.number().int().min(0);
const nonNegative = z.number().min(0);
const fraction = z.number().min(0).max(1);

// ------------------------------------------------------------------------------------------------
// Raw run data: what bench measured, before anything is derived.

/**
 * A stage's counts, defined once: they are StageData's, and the report's handlers carry them as
 * they are (in this order).
 */
const stageCountsShape = {
  /** Deliveries to the stage, redeliveries included. */
  received: count,
  redelivered: count,
  attempts: count,
  retries: count,
  transient_failures: count,
  /** Events the stage emitted that the broker acknowledged. */
  emitted: count,
  dead_lettered: count,
  bytes_received: count,
  bytes_handled: count,
  bytes_emitted: count,
};

export type StageCounts = { [K in keyof typeof stageCountsShape]: number };

const STAGE_COUNTS = Object.keys(stageCountsShape) as (keyof StageCounts)[];

/** The stage counts of `from`, and nothing else. */
export function stageCounts(from: StageCounts): StageCounts {
  const out = {} as StageCounts;
  for (const k of STAGE_COUNTS) out[k] = from[k];
  return out;
}

export interface StageData extends StageCounts {
  /** Successful handlings (events processed). */
  handled: number;
  /** Processing time of each handled event, µs: APT's tᵢ is its mean. */
  processing: LatencyHistogram;
  /** Wall time the successful attempt took, µs (the processing time plus timer lateness). */
  wall: LatencyHistogram;
  /** Published (intended, when the event has an intended send time) → handed to the stage, µs. */
  delivery: LatencyHistogram;
}

export interface RunData {
  /** The measured window: first measured send → end of the drain. */
  elapsed_s: number;
  producers: { sent: number; acked: number; failed: number; bytes: number };
  /** By stage name, in the scenario's order. */
  stages: Record<string, StageData>;
  sink: { destination: string; consumed: number; bytes: number; delivery: LatencyHistogram };
  events: {
    /** Events of the run the broker acknowledged (producers and workers), each once. */
    acknowledged: number;
    /** Events of the run delivered to the pipeline's consumers (stages and sink), each once. */
    consumed: number;
    unacknowledged: number;
    redelivered: number;
    duplicates: number;
    out_of_order: number;
    missing_steps: number;
    undecodable: number;
    /**
     * Acknowledged events of the run not consumed when an interrupted run ended (Ctrl-C): their
     * fate is unknown, so they are not counted as lost (README "Loss probability").
     */
    in_flight?: number;
    /** The same when the drain timed out: the run's backlog left on the broker. */
    not_drained?: number;
  };
  payments: { finished: number; in_flight: number; stuck: number; by_class: Record<string, number> };
  dlq_by_reason: Record<string, number>;
  windows: AvailabilityWindows;
  latency: {
    publish: LatencyHistogram;
    publish_delay: LatencyHistogram | undefined;
    publish_from_intended: LatencyHistogram | undefined;
    end_to_end: LatencyHistogram;
  };
  errors: string[];
  /** Per second of the measured run (absent in reports of older payq versions). */
  timeseries?: TimeSeries;
  /** The broker link over the run (Driver.link); absent in reports of older payq versions. */
  connection?: ConnectionData;
}

/** Reconnects after a loss, and milliseconds without a connection (README "Failure drills"). */
export interface ConnectionData {
  reconnects: number;
  down_ms: number;
  /** The run stopped because the broker stayed away past the reconnect timeout; absent: false. */
  broker_gone?: boolean;
}

// ------------------------------------------------------------------------------------------------
// The report as written: the zod schema is the documented schema (README "JSON report").

export const latencySummarySchema = z.strictObject({
  count,
  mean_ms: nonNegative,
  p50_ms: nonNegative,
  p90_ms: nonNegative,
  p99_ms: nonNegative,
  p999_ms: nonNegative,
  max_ms: nonNegative,
});

const rateSchema = z.strictObject({ events: count, bytes: count, events_per_s: nonNegative, mb_per_s: nonNegative });

const handlerSchema = z.strictObject({
  /** tᵢ: the mean processing time (ms). */
  t_ms: nonNegative,
  /** cᵢ: events handled. */
  count,
  p50_ms: nonNegative,
  p99_ms: nonNegative,
  max_ms: nonNegative,
  /** Mean wall time of the successful attempt (ms): t_ms plus the timers' lateness. */
  wall_t_ms: nonNegative,
  ...stageCountsShape,
});

const encoded = z.string().regex(/^[A-Za-z0-9+/=]*$/, 'must be a compressed base64 HdrHistogram');

/**
 * What one bench process runs (core/bench.ts `role`): `all` of the pipeline, or one part of a run
 * whose reports merge (merge.ts).
 */
export const BENCH_ROLES = ['all', 'producer', 'worker', 'tracer'] as const;
export type BenchRole = (typeof BENCH_ROLES)[number];

export const reportSchema = z.strictObject({
  schema: z.literal(REPORT_SCHEMA),
  run_id: z.string(),
  /** Which part of the pipeline this report measured; `all` for a one-process bench. */
  role: z.enum([...BENCH_ROLES, 'merged']),
  /** How many reports were merged into this one (1 for a plain run). */
  merged_from: z.number().int().min(1),
  /**
   * This report's own id, random: one per report bench writes, so the parts of one run (same
   * run_id) stay apart. Absent in a merged report, and in reports written before it existed.
   */
  part_id: z.string().min(1).optional(),
  /** A merged report: the ids of the parts it covers (merge.ts `reportParts`), so none is merged twice. */
  parts: z.array(z.string().min(1)).min(1).optional(),
  settings: z.strictObject({
    broker: z.string(),
    broker_version: z.string().nullable(),
    scenario: z.string(),
    seed: count,
    rate_per_s: nonNegative.nullable(),
    duration_s: nonNegative.nullable(),
    count: count.nullable(),
    warmup_s: nonNegative,
    producers: count,
    consumers: count,
    /** bench --procs: threads running the producers and workers (absent from older reports). */
    procs: z.number().int().min(1).optional(),
    max_backlog: count.nullable(),
    time_scale: nonNegative,
    failures: z.boolean(),
    payq_version: z.string(),
    node_version: z.string(),
    started_at: z.string(),
  }),
  elapsed_s: nonNegative,
  /** APT = Σ tᵢ·cᵢ / Σ cᵢ over the handlers (ms). */
  apt_ms: nonNegative,
  /** The same over the handlers' wall times (ms). */
  apt_wall_ms: nonNegative,
  handlers: z.record(z.string(), handlerSchema),
  throughput: z.strictObject({
    /** Events delivered to the pipeline's consumers per second (stages and sink). */
    events_per_s: nonNegative,
    /** Payments that finished (any class) per second. */
    payments_per_s: nonNegative,
    produced: rateSchema,
    consumed: rateSchema,
    processed: rateSchema,
  }),
  latency: z.strictObject({
    publish: latencySummarySchema,
    publish_delay: latencySummarySchema.nullable(),
    publish_from_intended: latencySummarySchema.nullable(),
    end_to_end: latencySummarySchema,
    hops: z.record(z.string(), latencySummarySchema),
  }),
  /**
   * lost / (acknowledged − in_flight − not_drained): 1 − consumed / acknowledged over the events
   * whose fate is known (0 when none is). null in the report of one part of a run (role producer,
   * worker or tracer): only the merged parts can tell.
   */
  loss: fraction.nullable(),
  events: z.strictObject({
    acknowledged: count,
    consumed: count,
    /** Acknowledged − consumed − in_flight − not_drained: what the drain proved missing. */
    lost: count.nullable(),
    /** Acknowledged, not consumed when the run was interrupted: fate unknown, not lost. */
    in_flight: count.default(0),
    /** Acknowledged, not consumed when the drain timed out (the run's backlog): not lost. */
    not_drained: count.default(0),
    unacknowledged: count,
    redelivered: count,
    duplicates: count,
    out_of_order: count,
    missing_steps: count,
    undecodable: count,
  }),
  /** windows.available / windows.total (1 when there were no windows). */
  availability: fraction,
  windows: z.strictObject({ total: count, available: count }),
  /**
   * The broker link over the run (README "Failure drills"): connections re-established after a
   * loss, the seconds spent without one, and whether the run stopped because the broker stayed
   * away past the reconnect timeout. Absent from older reports.
   */
  connection: z.strictObject({ reconnects: count, unavailable_s: nonNegative, broker_gone: z.boolean().default(false) }).optional(),
  producers: z.strictObject({ sent: count, acked: count, failed: count, bytes: count }),
  sink: z.strictObject({ destination: z.string(), consumed: count, bytes: count }),
  payments: z.strictObject({ produced: count, finished: count, in_flight: count, stuck: count, by_class: z.record(z.string(), count) }),
  dlq: z.strictObject({ total: count, per_s: nonNegative, by_reason: z.record(z.string(), count) }),
  errors: z.array(z.string()),
  /** Per second of the measured run (README "JSON report"); absent from older reports. */
  timeseries: z
    .strictObject({
      start_epoch_s: nonNegative,
      interval_s: z.number().positive(),
      t_s: z.array(nonNegative),
      sent_per_s: z.array(nonNegative),
      acknowledged_per_s: z.array(nonNegative),
      consumed_per_s: z.array(nonNegative),
      completed_per_s: z.array(nonNegative),
      backlog: z.array(z.number()),
      availability: z.array(fraction.nullable()),
      e2e_p50_ms: z.array(nonNegative.nullable()),
      e2e_p99_ms: z.array(nonNegative.nullable()),
      e2e: z.array(encoded.nullable()),
    })
    .optional(),
  /** bench --find-max: the capacity search that chose this run (README "Capacity search"). */
  capacity: z
    .strictObject({
      /** The highest rate whose step met every SLO; null when even min_rate_per_s failed. */
      payments_per_s: nonNegative.nullable(),
      events_per_s: nonNegative.nullable(),
      slos: z.array(z.string()),
      min_rate_per_s: nonNegative,
      max_rate_per_s: nonNegative.nullable(),
      precision: nonNegative,
      /** The bracket was narrowed to the precision and a confirming run passed. */
      bracketed: z.boolean(),
      stopped_by: z.enum(['precision', 'max-rate', 'max-duration', 'min-rate-failed', 'interrupted']),
      /** The lowest failing rate above the capacity, and what limited it. */
      first_failure: z.strictObject({ rate_per_s: nonNegative, limit: z.string() }).nullable(),
      steps: z.array(
        z.strictObject({
          index: z.number().int().min(1),
          phase: z.enum(['search', 'bisect', 'confirm']),
          rate_per_s: nonNegative,
          achieved_per_s: nonNegative,
          events_per_s: nonNegative,
          p99_ms: nonNegative,
          passed: z.boolean(),
          limit: z.string().nullable(),
        }),
      ),
    })
    .optional(),
  histograms: z.strictObject({
    publish: encoded,
    publish_delay: encoded.nullable(),
    publish_from_intended: encoded.nullable(),
    end_to_end: encoded,
    hops: z.record(z.string(), encoded),
    processing: z.record(z.string(), encoded),
    wall: z.record(z.string(), encoded),
  }),
});

export type Report = z.infer<typeof reportSchema>;
export type ReportSettings = Report['settings'];
export type ReportRole = Report['role'];

export interface ReportMeta {
  run_id: string;
  role: ReportRole;
  merged_from?: number;
  /** Default: a new random id. */
  part_id?: string;
  /** A merged report's parts (then it has no part_id). */
  parts?: string[];
  settings: ReportSettings;
}

/** A new part id: random, 12 hex digits. */
export function newPartId(): string {
  return randomBytes(6).toString('hex');
}

// ------------------------------------------------------------------------------------------------

/** The key of the sink's hop in latency.hops: `sink`, unless a stage has that name. */
export function sinkHopKey(stageNames: string[]): string {
  return stageNames.includes('sink') ? 'sink-consumer' : 'sink';
}

const round = (n: number, digits: number) => {
  const f = 10 ** digits;
  return Math.round(n * f) / f;
};
const perS = (n: number, s: number) => (s > 0 ? round(n / s, 1) : 0);
const mbPerS = (bytes: number, s: number) => (s > 0 ? round(bytes / 1e6 / s, 3) : 0);
const rate = (events: number, bytes: number, s: number) => ({ events, bytes, events_per_s: perS(events, s), mb_per_s: mbPerS(bytes, s) });
const sum = (values: number[]) => values.reduce((a, b) => a + b, 0);

/**
 * A histogram's summary as any reader of the report gets it: from the encoded form (the exact
 * maximum a live histogram tracks is not kept by the encoding; its bucket's highest equivalent
 * value is). So a report summarises the same way whether it was just measured or merged.
 */
function encodedSummary(h: LatencyHistogram): { summary: LatencySummary; encoded: string; histogram: LatencyHistogram } {
  const encoded = encodeHistogram(h);
  const histogram = decodeHistogram(encoded);
  return { summary: summarize(histogram), encoded, histogram };
}

/** Every derived figure of a report, from raw run data. */
export function buildReport(data: RunData, meta: ReportMeta): Report {
  const s = data.elapsed_s;
  const stages = Object.entries(data.stages);
  const handlers: Report['handlers'] = {};
  const hops: Report['latency']['hops'] = {};
  const histHops: Record<string, string> = {};
  const histProcessing: Record<string, string> = {};
  const histWall: Record<string, string> = {};
  const processingHistograms: LatencyHistogram[] = [];
  const wallHistograms: LatencyHistogram[] = [];
  for (const [name, st] of stages) {
    const processing = encodedSummary(st.processing);
    const wall = encodedSummary(st.wall);
    const delivery = encodedSummary(st.delivery);
    processingHistograms.push(processing.histogram);
    wallHistograms.push(wall.histogram);
    const p = processing.summary;
    handlers[name] = {
      t_ms: handlerTMs(processing.histogram),
      count: st.processing.totalCount,
      p50_ms: p.p50_ms,
      p99_ms: p.p99_ms,
      max_ms: p.max_ms,
      wall_t_ms: handlerTMs(wall.histogram),
      ...stageCounts(st),
    };
    hops[name] = delivery.summary;
    histHops[name] = delivery.encoded;
    histProcessing[name] = processing.encoded;
    histWall[name] = wall.encoded;
  }
  const sinkHop = sinkHopKey(Object.keys(data.stages));
  const sinkDelivery = encodedSummary(data.sink.delivery);
  hops[sinkHop] = sinkDelivery.summary;
  histHops[sinkHop] = sinkDelivery.encoded;
  const publish = encodedSummary(data.latency.publish);
  const endToEnd = encodedSummary(data.latency.end_to_end);
  const publishDelay = data.latency.publish_delay && encodedSummary(data.latency.publish_delay);
  const fromIntended = data.latency.publish_from_intended && encodedSummary(data.latency.publish_from_intended);

  const stageList = stages.map(([, st]) => st);
  const producedEvents = data.producers.acked + sum(stageList.map((st) => st.emitted));
  const producedBytes = data.producers.bytes + sum(stageList.map((st) => st.bytes_emitted));
  const consumedEvents = sum(stageList.map((st) => st.received)) + data.sink.consumed;
  const consumedBytes = sum(stageList.map((st) => st.bytes_received)) + data.sink.bytes;
  const processedEvents = sum(stageList.map((st) => st.handled));
  const processedBytes = sum(stageList.map((st) => st.bytes_handled));
  const { acknowledged, consumed } = data.events;
  // A part of a run sees one side of the books only (a producer acknowledges, a worker consumes).
  const partial = meta.role === 'producer' || meta.role === 'worker' || meta.role === 'tracer';
  // Only what the drain proved missing is lost; what was in flight or not drained is apart.
  const inFlight = data.events.in_flight ?? 0;
  const notDrained = data.events.not_drained ?? 0;
  const known = Math.max(0, acknowledged - inFlight - notDrained);
  const lost = partial ? null : Math.max(0, known - consumed);
  const dlqTotal = sum(Object.values(data.dlq_by_reason));
  const w = data.windows;

  return {
    schema: REPORT_SCHEMA,
    run_id: meta.run_id,
    role: meta.role,
    merged_from: meta.merged_from ?? 1,
    ...(meta.parts === undefined ? { part_id: meta.part_id ?? newPartId() } : { parts: [...meta.parts] }),
    settings: meta.settings,
    elapsed_s: round(s, 3),
    apt_ms: aptMs(processingHistograms),
    apt_wall_ms: aptMs(wallHistograms),
    handlers,
    throughput: {
      events_per_s: perS(consumedEvents, s),
      payments_per_s: perS(data.payments.finished, s),
      produced: rate(producedEvents, producedBytes, s),
      consumed: rate(consumedEvents, consumedBytes, s),
      processed: rate(processedEvents, processedBytes, s),
    },
    latency: {
      publish: publish.summary,
      publish_delay: publishDelay ? publishDelay.summary : null,
      publish_from_intended: fromIntended ? fromIntended.summary : null,
      end_to_end: endToEnd.summary,
      hops,
    },
    loss: lost === null ? null : known === 0 ? 0 : round(lost / known, 6),
    events: { ...data.events, lost, in_flight: inFlight, not_drained: notDrained },
    availability: w.total === 0 ? 1 : round(w.available / w.total, 4),
    windows: { ...w },
    ...(data.connection
      ? { connection: { reconnects: data.connection.reconnects, unavailable_s: round(data.connection.down_ms / 1000, 3), broker_gone: data.connection.broker_gone ?? false } }
      : {}),
    producers: { ...data.producers },
    sink: { destination: data.sink.destination, consumed: data.sink.consumed, bytes: data.sink.bytes },
    payments: { produced: data.producers.acked, ...data.payments, by_class: { ...data.payments.by_class } },
    dlq: { total: dlqTotal, per_s: perS(dlqTotal, s), by_reason: { ...data.dlq_by_reason } },
    errors: [...data.errors],
    ...(data.timeseries ? { timeseries: data.timeseries } : {}),
    histograms: {
      publish: publish.encoded,
      publish_delay: publishDelay ? publishDelay.encoded : null,
      publish_from_intended: fromIntended ? fromIntended.encoded : null,
      end_to_end: endToEnd.encoded,
      hops: histHops,
      processing: histProcessing,
      wall: histWall,
    },
  };
}

/** The raw run data a report was built from (histograms decoded). */
export function reportData(report: Report): RunData {
  const h = report.histograms;
  const dec = (text: string | undefined) => (text === undefined ? createLatencyHistogram() : decodeHistogram(text));
  const stages: Record<string, StageData> = {};
  for (const [name, x] of Object.entries(report.handlers)) {
    stages[name] = {
      handled: x.count,
      ...stageCounts(x),
      processing: dec(h.processing[name]),
      wall: dec(h.wall[name]),
      delivery: dec(h.hops[name]),
    };
  }
  const sinkHop = sinkHopKey(Object.keys(report.handlers));
  return {
    elapsed_s: report.elapsed_s,
    producers: { ...report.producers },
    stages,
    sink: { destination: report.sink.destination, consumed: report.sink.consumed, bytes: report.sink.bytes, delivery: dec(h.hops[sinkHop]) },
    events: {
      acknowledged: report.events.acknowledged,
      consumed: report.events.consumed,
      unacknowledged: report.events.unacknowledged,
      redelivered: report.events.redelivered,
      duplicates: report.events.duplicates,
      out_of_order: report.events.out_of_order,
      missing_steps: report.events.missing_steps,
      undecodable: report.events.undecodable,
      in_flight: report.events.in_flight,
      not_drained: report.events.not_drained,
    },
    payments: {
      finished: report.payments.finished,
      in_flight: report.payments.in_flight,
      stuck: report.payments.stuck,
      by_class: { ...report.payments.by_class },
    },
    dlq_by_reason: { ...report.dlq.by_reason },
    windows: { ...report.windows },
    latency: {
      publish: dec(h.publish),
      publish_delay: h.publish_delay === null ? undefined : dec(h.publish_delay),
      publish_from_intended: h.publish_from_intended === null ? undefined : dec(h.publish_from_intended),
      end_to_end: dec(h.end_to_end),
    },
    errors: [...report.errors],
    ...(report.timeseries ? { timeseries: report.timeseries } : {}),
    ...(report.connection
      ? { connection: { reconnects: report.connection.reconnects, down_ms: Math.round(report.connection.unavailable_s * 1000), broker_gone: report.connection.broker_gone } }
      : {}),
  };
}

/** Parses and validates a report (text of a `--json` file); a ConfigError names what is wrong. */
export function parseReport(text: string, origin: string): Report {
  let raw: unknown;
  try {
    raw = JSON.parse(text);
  } catch {
    throw new ConfigError(`${origin}: not JSON (expected a payq bench --json report)`);
  }
  const schema = (raw as { schema?: unknown } | null)?.schema;
  if (typeof schema === 'string' && schema !== REPORT_SCHEMA) {
    throw new ConfigError(`${origin}: schema '${schema}' is not ${REPORT_SCHEMA}; this payq reads ${REPORT_SCHEMA} reports`);
  }
  const parsed = reportSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    throw new ConfigError(`${origin}: not a valid ${REPORT_SCHEMA} report: ${issue.path.join('.') || '(top)'}: ${issue.message}`);
  }
  return parsed.data;
}

export type { LatencySummary };
