/** --metrics-port on produce (memory://) and trace (real Kafka): valid OpenMetrics, final figures equal the summary. */
import { describe, expect, it } from 'vitest';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { parseOpenMetrics, sampleValue } from '../helpers/openmetrics.js';
import { startCli, type Background } from '../helpers/spawn.js';
import { sleep } from '../helpers/wait.js';

async function scrapeUntil(cli: Background, name: string, want: number): Promise<ReturnType<typeof parseOpenMetrics>> {
  await cli.waitForStderr(/metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/);
  const url = /metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(cli.stderr())![1]!;
  let previous = 0;
  for (let i = 0; i < 300; i++) {
    const r = await fetch(url);
    const m = parseOpenMetrics(await r.text());
    const v = sampleValue(m, name)!;
    expect(v).toBeGreaterThanOrEqual(previous); // a counter only grows
    previous = v;
    if (v === want) return m;
    await sleep(200);
  }
  throw new Error(`${name} never reached ${want} (last ${previous})`);
}

/** Keeps scraping until the command exits: the last scrape holds the final figures (--metrics-linger). */
async function lastScrape(cli: Background, first: ReturnType<typeof parseOpenMetrics>): Promise<ReturnType<typeof parseOpenMetrics>> {
  const url = /metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(cli.stderr())![1]!;
  let last = first;
  let exited = false;
  void cli.exited.then(() => (exited = true));
  while (!exited) {
    try {
      last = parseOpenMetrics(await (await fetch(url)).text());
    } catch {
      break; // closed: the process is ending
    }
    await sleep(250);
  }
  return last;
}

describe('--metrics-port on produce and trace', () => {
  it('produce: the counters reach the summary\'s figures', async () => {
    const cli = startCli(['produce', '--broker', 'memory://', '--count', '3000', '--rate', '1500', '--json', '--metrics-port', '0', '--metrics-linger', '5s']);
    try {
      let m = await scrapeUntil(cli, 'payq_events_acknowledged_total', 3000);
      m = await lastScrape(cli, m);
      expect(await cli.exited).toBe(0);
      const summary = JSON.parse(cli.stdout());
      expect(summary.acked).toBe(3000);
      expect(sampleValue(m, 'payq_events_sent_total')).toBe(summary.sent);
      expect(sampleValue(m, 'payq_events_failed_total')).toBe(0);
      expect(sampleValue(m, 'payq_publish_latency_seconds_count')).toBe(summary.publish_latency.count);
    } finally {
      cli.child.kill('SIGKILL');
    }
  });

  it('trace: events seen and payments finished equal its JSON summary', async () => {
    await brokerAvailable(KAFKA_URL);
    const topic = uniqueName('metrics');
    const produced = await runCli(['produce', '--broker', KAFKA_URL, '--topic', topic, '--lifecycle', '--count', '50', '--seed', '3', '--json']);
    expect(produced.code, produced.stderr).toBe(0);
    const sent = JSON.parse(produced.stdout).acked as number;
    const cli = startCli(['trace', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--idle-timeout', '3s', '--json', '--metrics-port', '0', '--metrics-linger', '6s']);
    try {
      let last = await scrapeUntil(cli, 'payq_events_seen_total', sent);
      last = await lastScrape(cli, last);
      expect(await cli.exited).toBe(0);
      const summary = JSON.parse(cli.stdout());
      expect(summary.events.seen).toBe(sent);
      expect(sampleValue(last, 'payq_events_seen_total')).toBe(summary.events.seen);
      expect(sampleValue(last, 'payq_payments_finished_total')).toBe(summary.payments.finished);
      expect(sampleValue(last, 'payq_in_flight_payments')).toBe(summary.payments.in_flight);
      expect(sampleValue(last, 'payq_end_to_end_latency_seconds_count')).toBe(summary.latency.end_to_end.count);
    } finally {
      cli.child.kill('SIGKILL');
    }
  });
});
