/**
 * What `--metrics-port` serves (README "Live metrics"). For bench: while a run goes, its live counts
 * and the tracer's histograms; once it ended, the figures of its report, so the last scrape
 * equals the report. Counters only grow: with --find-max each step's counts add to the earlier
 * steps' totals.
 */
import type { BenchProgress } from '../core/bench.js';
import type { LiveTraceHistograms } from '../core/trace.js';
import { createLatencyHistogram, decodeHistogram, type LatencyHistogram } from '../metrics/histogram.js';
import type { Metric } from '../metrics/openmetrics.js';
import { systemClock } from '../core/clock.js';
import { startMetricsServer } from './metrics-server.js';
import type { Output } from './output.js';
import type { Report } from '../metrics/report.js';

interface Totals {
  produced: number;
  consumed: number;
  finished: number;
  acknowledged: number;
  deadLettered: number;
  lost: number;
}

const ZERO: Totals = { produced: 0, consumed: 0, finished: 0, acknowledged: 0, deadLettered: 0, lost: 0 };

function add(a: Totals, b: Totals): Totals {
  return {
    produced: a.produced + b.produced,
    consumed: a.consumed + b.consumed,
    finished: a.finished + b.finished,
    acknowledged: a.acknowledged + b.acknowledged,
    deadLettered: a.deadLettered + b.deadLettered,
    lost: a.lost + b.lost,
  };
}

export class LiveBenchMetrics {
  /** Set by the run as it goes. */
  progress: BenchProgress | undefined;
  histograms: LiveTraceHistograms | undefined;
  /** Totals of the runs that ended. */
  private done: Totals = ZERO;
  private readonly endToEnd = createLatencyHistogram();
  private readonly hops = new Map<string, LatencyHistogram>();

  /** A run ended: its report's figures join the totals, its histograms the merged ones. */
  finished(report: Report): void {
    this.done = add(this.done, {
      produced: report.payments.produced,
      consumed: report.events.consumed,
      finished: report.payments.finished,
      acknowledged: report.events.acknowledged,
      deadLettered: report.dlq.total,
      lost: report.events.lost ?? 0,
    });
    this.endToEnd.add(decodeHistogram(report.histograms.end_to_end));
    for (const [stage, encoded] of Object.entries(report.histograms.hops)) {
      const h = this.hops.get(stage) ?? createLatencyHistogram();
      h.add(decodeHistogram(encoded));
      this.hops.set(stage, h);
    }
    this.progress = undefined;
    this.histograms = undefined;
  }

  snapshot(): Metric[] {
    const p = this.progress;
    const running = p !== undefined && p.phase !== 'starting' && p.phase !== 'warmup';
    const now: Totals = running ? add(this.done, { ...ZERO, produced: p.produced, consumed: p.consumed, finished: p.finished }) : this.done;
    const endToEnd = createLatencyHistogram();
    endToEnd.add(this.endToEnd);
    const hops = new Map<string, LatencyHistogram>();
    for (const [stage, h] of this.hops) hops.set(stage, h);
    if (running && this.histograms) {
      endToEnd.add(this.histograms.endToEnd);
      for (const [stage, h] of this.histograms.hops) {
        const merged = createLatencyHistogram();
        const before = this.hops.get(stage);
        if (before) merged.add(before);
        merged.add(h);
        hops.set(stage, merged);
      }
    }
    const metrics: Metric[] = [
      { kind: 'counter', name: 'payq_payments_produced', help: 'measured payments whose first event the broker acknowledged', value: now.produced },
      { kind: 'counter', name: 'payq_events_consumed', help: "first deliveries of the run's events to the pipeline's consumers", value: now.consumed },
      { kind: 'counter', name: 'payq_payments_finished', help: 'payments that reached an end (any class)', value: now.finished },
      { kind: 'counter', name: 'payq_events_acknowledged', help: 'sends of the run the broker acknowledged (counted when a run ends)', value: now.acknowledged },
      { kind: 'counter', name: 'payq_dead_letters', help: 'events dead-lettered (counted when a run ends)', value: now.deadLettered },
      { kind: 'counter', name: 'payq_events_lost', help: 'acknowledged events never consumed (counted when a run ends)', value: now.lost },
      { kind: 'gauge', name: 'payq_backlog_events', help: 'events sent and not yet consumed', value: running ? p.backlog : 0, unit: 'events' },
      { kind: 'histogram', name: 'payq_end_to_end_latency_seconds', help: "a payment's first event published to its last handled", histogram: endToEnd },
    ];
    for (const [stage, h] of hops) {
      metrics.push({ kind: 'histogram', name: 'payq_hop_latency_seconds', help: 'published to consumed by the next stage', histogram: h, labels: { stage } });
    }
    return metrics;
  }
}

/** The live figures of produce, worker or trace: set as the command goes, final at its end. */
export class CommandMetrics {
  private readonly metrics = new Map<string, Metric>();

  counter(name: string, help: string, value: number): void {
    this.metrics.set(name, { kind: 'counter', name, help, value });
  }

  gauge(name: string, help: string, value: number, unit?: string): void {
    this.metrics.set(name, { kind: 'gauge', name, help, value, ...(unit ? { unit } : {}) });
  }

  histogram(name: string, help: string, histogram: LatencyHistogram, labels?: Record<string, string>): void {
    const key = labels ? `${name}${JSON.stringify(labels)}` : name;
    this.metrics.set(key, { kind: 'histogram', name, help, histogram, ...(labels ? { labels } : {}) });
  }

  snapshot(): Metric[] {
    return [...this.metrics.values()];
  }
}

export interface MetricsFlags {
  metricsPort?: number | undefined;
  metricsHost: string;
  metricsLinger: number;
}

/**
 * Starts `--metrics-port`'s server (nothing without the flag) and says where it listens; `stop`
 * keeps the final figures up for `--metrics-linger`, then closes it.
 */
export async function serveMetrics(o: MetricsFlags, out: Output, snapshot: () => Metric[]): Promise<{ stop(signal: AbortSignal): Promise<void> }> {
  if (o.metricsPort === undefined) return { stop: async () => {} };
  const server = await startMetricsServer(o.metricsHost, o.metricsPort, snapshot);
  out.info(`metrics: http://${o.metricsHost.includes(':') ? `[${o.metricsHost}]` : o.metricsHost}:${server.port}/metrics (OpenMetrics)`);
  return {
    async stop(signal) {
      if (o.metricsLinger > 0 && !signal.aborted) await systemClock.sleep(o.metricsLinger, signal);
      await server.close();
    },
  };
}
