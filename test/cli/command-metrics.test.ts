/**
 * --metrics-port on produce (memory://), trace (real Kafka) and worker (real RabbitMQ): valid
 * OpenMetrics, counters that only grow, final figures equal the summary.
 */
import amqplib from 'amqplib';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { parse as parseYaml, stringify as stringifyYaml } from 'yaml';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';
import { parseOpenMetrics, sampleValue } from '../helpers/openmetrics.js';
import { startCli, type Background } from '../helpers/spawn.js';
import { sleep } from '../helpers/wait.js';

const tmp = mkdtempSync(path.join(tmpdir(), 'payq-metrics-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

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

/** Scrapes until the counter is above 0 (a counter only grows meanwhile), then until the command exits. */
async function scrapeWhileRunning(cli: Background, name: string): Promise<ReturnType<typeof parseOpenMetrics>> {
  await cli.waitForStderr(/metrics: http:\/\/127\.0\.0\.1:\d+\/metrics/);
  const url = /metrics: (http:\/\/127\.0\.0\.1:\d+\/metrics)/.exec(cli.stderr())![1]!;
  let previous = 0;
  for (let i = 0; i < 300 && previous === 0; i++) {
    const v = sampleValue(parseOpenMetrics(await (await fetch(url)).text()), name)!;
    expect(v).toBeGreaterThanOrEqual(previous);
    previous = v;
    if (v === 0) await sleep(200);
  }
  expect(previous, `${name} stayed 0`).toBeGreaterThan(0);
  const m = await lastScrape(cli, parseOpenMetrics(await (await fetch(url)).text()));
  expect(sampleValue(m, name)!).toBeGreaterThanOrEqual(previous);
  return m;
}

// Side by side: each case has its port (0: any free one), topic or queue of its own.
describe.concurrent('--metrics-port on produce, trace and worker', () => {
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

  it('worker: events handled, emitted and dead-lettered, in flight and each stage\'s processing count equal its JSON summary', async () => {
    await brokerAvailable(AMQP_URL);
    // The checkout scenario with queues of its own.
    const config = parseYaml(readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')) as { name: string; sink: string; stages: { name: string; destination: string }[] };
    const base = uniqueName('metrics-worker');
    config.name = base.replace(/[^a-z0-9-]/gi, '-');
    config.sink = `${base}.events`;
    for (const stage of config.stages) stage.destination = `${base}.${stage.name}`;
    const file = path.join(tmp, 'scenario.yaml');
    writeFileSync(file, stringifyYaml(config));
    try {
      const produced = await runCli(['produce', '--broker', AMQP_URL, '--scenario', file, '--count', '300', '--seed', '3', '--json']);
      expect(produced.code, produced.stderr).toBe(0);
      const cli = startCli(['worker', '--broker', AMQP_URL, '--scenario', file, '--seed', '3', '--time-scale', '0.2', '--idle-timeout', '3s', '--json', '--metrics-port', '0', '--metrics-linger', '6s']);
      try {
        const last = await scrapeWhileRunning(cli, 'payq_events_handled_total');
        expect(await cli.exited, cli.stderr()).toBe(0);
        const summary = JSON.parse(cli.stdout());
        // Every payment's entry event was handled or dead-lettered by the first stage.
        const first = summary.stages[0];
        expect(first.handled + first.dead_lettered_total).toBe(300);
        expect(sampleValue(last, 'payq_events_handled_total')).toBe(summary.totals.handled);
        expect(sampleValue(last, 'payq_events_emitted_total')).toBe(summary.totals.emitted);
        expect(sampleValue(last, 'payq_dead_letters_total')).toBe(summary.totals.dead_lettered_total);
        expect(sampleValue(last, 'payq_in_flight_events')).toBe(0);
        for (const stage of summary.stages) {
          expect(sampleValue(last, 'payq_processing_seconds_count', { stage: stage.stage }), stage.stage).toBe(stage.handled);
        }
      } finally {
        cli.child.kill('SIGKILL');
      }
    } finally {
      const conn = await amqplib.connect(AMQP_URL);
      const ch = await conn.createChannel();
      for (const d of [...config.stages.map((s) => s.destination), config.sink]) {
        await ch.deleteQueue(d);
        await ch.deleteQueue(`${d}.dlq`);
      }
      await conn.close();
    }
  });
});
