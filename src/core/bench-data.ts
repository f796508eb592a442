/**
 * A bench run's raw data (metrics/report.ts RunData), put together from what its parts returned:
 * the producers' results, the worker's, the tracer's, the sink's counts and what the metered
 * driver counted. Nothing is derived here; the report builder does that.
 */
import type { LinkStatus } from '../drivers/types.js';
import type { AvailabilityWindows } from '../metrics/availability.js';
import { createLatencyHistogram } from '../metrics/histogram.js';
import { mergeHistograms } from '../metrics/merge.js';
import { stageCounts, type BenchRole, type RunData, type StageData } from '../metrics/report.js';
import type { TimeSeries } from '../metrics/timeseries.js';
import type { RunCounts } from './bench-driver.js';
import type { DrainEnd } from './bench-drain.js';
import type { ProduceResult } from './produce.js';
import type { TraceResult } from './trace.js';
import type { WorkerResult } from './worker.js';

export interface BenchParts {
  role: BenchRole;
  drained: DrainEnd;
  /** A rate was set and this process produced: the paced latencies exist. */
  withRate: boolean;
  measureStartUs: number;
  measureEndUs: number;
  produced: ProduceResult[];
  worked: WorkerResult | undefined;
  traced: TraceResult | undefined;
  sink: RunData['sink'];
  /** The metered driver's counts of the measured run. */
  run: RunCounts;
  /**
   * Acknowledged events of the run not consumed at its end: known to a process that ran the
   * whole pipeline (with --procs, over its threads), 0 in a part's books (merge decides).
   */
  unconsumed: number;
  windows: AvailabilityWindows;
  timeseries: TimeSeries | undefined;
  /** The driver's link at the end of the run (Driver.link). */
  link: LinkStatus;
}

function stagesOf(worked: WorkerResult | undefined): Record<string, StageData> {
  const stages: Record<string, StageData> = {};
  for (const s of worked?.stages ?? []) {
    const m = worked!.measures[s.stage]!;
    stages[s.stage] = {
      handled: s.handled,
      ...stageCounts({ ...s, ...m, dead_lettered: s.dead_lettered_total }),
      processing: m.planned,
      wall: worked!.histograms[s.stage]!,
      delivery: m.delivery,
    };
  }
  return stages;
}

export function benchRunData(p: BenchParts): RunData {
  const { produced, worked, traced, run, unconsumed } = p;
  const errors = [...new Set([...produced.flatMap((r) => r.errors), ...(worked?.errors ?? [])])].slice(0, 10);
  return {
    elapsed_s: Math.max(0.001, (p.measureEndUs - p.measureStartUs) / 1e6),
    producers: {
      sent: produced.reduce((n, r) => n + r.sent, 0),
      acked: produced.reduce((n, r) => n + r.acked, 0),
      failed: produced.reduce((n, r) => n + r.failed, 0),
      bytes: produced.reduce((n, r) => n + r.bytes_acked, 0),
    },
    stages: stagesOf(worked),
    sink: p.sink,
    events: {
      acknowledged: run.acknowledged,
      consumed: run.consumed,
      unacknowledged: run.unacknowledged,
      redelivered: run.redelivered,
      duplicates: traced?.events.duplicates ?? 0,
      out_of_order: traced?.events.out_of_order ?? 0,
      missing_steps: traced?.events.missing_steps ?? 0,
      undecodable: traced?.events.undecodable ?? 0,
      // Cut off by Ctrl-C or a broker gone for good: their fate is unknown, not lost.
      in_flight: p.drained === 'interrupted' || p.drained === 'broker-gone' ? unconsumed : 0,
      not_drained: p.drained === 'timeout' ? unconsumed : 0,
    },
    payments: {
      finished: traced?.payments.finished ?? 0,
      in_flight: traced?.payments.in_flight ?? 0,
      stuck: traced?.payments.stuck ?? 0,
      by_class: traced?.payments.by_class ?? {},
    },
    dlq_by_reason: worked ? { ...worked.totals.dead_lettered } : {},
    windows: p.windows,
    latency: {
      publish: mergeHistograms(produced.map((r) => r.histograms.publish)),
      publish_delay: p.withRate ? mergeHistograms(produced.map((r) => r.histograms.publishDelay)) : undefined,
      publish_from_intended: p.withRate ? mergeHistograms(produced.map((r) => r.histograms.intended)) : undefined,
      end_to_end: traced?.histograms.endToEnd ?? createLatencyHistogram(),
    },
    errors,
    ...(p.timeseries ? { timeseries: p.timeseries } : {}),
    connection: { reconnects: p.link.reconnects, down_ms: Math.round(p.link.downMs), broker_gone: p.drained === 'broker-gone' },
  };
}
