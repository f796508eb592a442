/**
 * bench --metrics-port: valid OpenMetrics while the run goes (checked by a strict reader),
 * counters that only grow, and a last scrape that equals the final report.
 */
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseOpenMetrics, sampleValue } from '../helpers/openmetrics.js';
import { startCli } from '../helpers/spawn.js';
import { sleep } from '../helpers/wait.js';

async function scrape(url: string): Promise<ReturnType<typeof parseOpenMetrics>> {
  const r = await fetch(url);
  expect(r.status).toBe(200);
  expect(r.headers.get('content-type')).toMatch(/^application\/openmetrics-text; version=1\.0\.0/);
  return parseOpenMetrics(await r.text());
}

describe('payq bench --metrics-port', () => {
  it('serves live OpenMetrics whose final counters equal the report', async () => {
    const dir = mkdtempSync(path.join(os.tmpdir(), 'payq-metrics-'));
    const reportFile = path.join(dir, 'report.json');
    const bench = startCli(['bench', '--broker', 'memory://', '--rate', '300', '--duration', '4s', '--warmup', '1s', '--metrics-port', '0', '--metrics-linger', '6s', '--json', reportFile]);
    try {
      await bench.waitForStderr(/metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/);
      const url = /metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(bench.stderr())![1]!;
      let previous = { produced: 0, consumed: 0, finished: 0, e2e: 0 };
      let sawTraffic = false;
      while (!existsSync(reportFile)) {
        const m = await scrape(url);
        const now = {
          produced: sampleValue(m, 'payq_payments_produced_total')!,
          consumed: sampleValue(m, 'payq_events_consumed_total')!,
          finished: sampleValue(m, 'payq_payments_finished_total')!,
          e2e: sampleValue(m, 'payq_end_to_end_latency_seconds_count')!,
        };
        for (const k of Object.keys(now) as (keyof typeof now)[]) expect(now[k], k).toBeGreaterThanOrEqual(previous[k]);
        if (now.produced > 0 && now.e2e > 0) sawTraffic = true;
        previous = now;
        await sleep(300);
      }
      expect(sawTraffic).toBe(true);
      await sleep(500); // the file is written; the figures were final before it
      const report = JSON.parse(readFileSync(reportFile, 'utf8'));
      const last = await scrape(url);
      expect(sampleValue(last, 'payq_payments_produced_total')).toBe(report.payments.produced);
      expect(sampleValue(last, 'payq_events_consumed_total')).toBe(report.events.consumed);
      expect(sampleValue(last, 'payq_payments_finished_total')).toBe(report.payments.finished);
      expect(sampleValue(last, 'payq_events_acknowledged_total')).toBe(report.events.acknowledged);
      expect(sampleValue(last, 'payq_dead_letters_total')).toBe(report.dlq.total);
      expect(sampleValue(last, 'payq_events_lost_total')).toBe(report.events.lost);
      expect(sampleValue(last, 'payq_end_to_end_latency_seconds_count')).toBe(report.latency.end_to_end.count);
      for (const [stage, s] of Object.entries(report.latency.hops) as [string, { count: number }][]) {
        expect(sampleValue(last, 'payq_hop_latency_seconds_count', { stage }), stage).toBe(s.count);
      }
      expect(await bench.exited).toBe(0);
    } finally {
      bench.child.kill('SIGKILL');
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
