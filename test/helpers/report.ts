/** Report settings for reports that tests build from runBench results directly (not through the CLI). */
import type { ReportSettings } from '../../src/metrics/report.js';

export function testReportSettings(broker: string): ReportSettings {
  return {
    broker,
    broker_version: null,
    scenario: 'test',
    seed: 1,
    rate_per_s: null,
    duration_s: null,
    count: null,
    warmup_s: 0,
    producers: 1,
    consumers: 64,
    max_backlog: null,
    time_scale: 1,
    failures: true,
    payq_version: 'test',
    node_version: process.version,
    started_at: new Date().toISOString(),
  };
}
