#!/usr/bin/env node
/**
 * npm run bench:pipeline — how far `payq bench` itself goes: the harness's own limits.
 *
 *   ceiling  memory://, checkout with zero processing time and no failures, flat out: events/s
 *            through the whole pipeline (producers → four stages → sink, a tracer tapping all of it).
 *   rss      memory://, the same pipeline flat out for PAYQ_BENCH_RSS_S seconds (default 30; the
 *            issue's figure is 300): resident memory sampled every second — it must stay flat.
 *   kafka, amqp  open-loop rates from PAYQ_BENCH_START_RATE payments/s, ×1.5 each step of
 *            PAYQ_BENCH_STEP_S seconds, until a step is not sustained: fewer than 97% of the
 *            payments sent, publish delay p99 above 250 ms (the producers fell behind their
 *            schedule), end-to-end p99 above 1 s (the pipeline fell behind: queues grew), loss, or
 *            an unfinished drain. For each step:
 *            CPU of this process (the whole harness: producers, workers, tracer) and of the broker
 *            process (from /proc), in % of one core, so it is plain which side was the limit.
 *
 *   PAYQ_BENCH_PARTS=ceiling,rss,kafka,amqp PAYQ_BENCH_CEILING_S=10 PAYQ_BENCH_RSS_S=300 npm run bench:pipeline
 */
import { readdirSync, readFileSync } from 'node:fs';
import { randomBytes } from 'node:crypto';
import { systemClock } from '../dist/core/clock.js';
import { runBench } from '../dist/core/bench.js';
import { createDriver } from '../dist/drivers/registry.js';
import { loadScenario, parseScenario } from '../dist/events/scenario.js';
import { buildReport } from '../dist/metrics/report.js';

const PARTS = (process.env.PAYQ_BENCH_PARTS ?? 'ceiling,rss,kafka,amqp').split(',');
const CEILING_S = Number(process.env.PAYQ_BENCH_CEILING_S ?? 10);
const RSS_S = Number(process.env.PAYQ_BENCH_RSS_S ?? 30);
const STEP_S = Number(process.env.PAYQ_BENCH_STEP_S ?? 5);
const START_RATE = Number(process.env.PAYQ_BENCH_START_RATE ?? 500);
const MAX_RATE = Number(process.env.PAYQ_BENCH_MAX_RATE ?? 64_000);
const URLS = {
  kafka: process.env.PAYQ_TEST_KAFKA ?? 'kafka://127.0.0.1:9092',
  amqp: process.env.PAYQ_TEST_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672',
};
const TICKS = 100; // USER_HZ on Linux

const settings = {
  broker: 'bench', broker_version: null, scenario: 'checkout', seed: 1, rate_per_s: null, duration_s: null, count: null, warmup_s: 0,
  producers: 1, consumers: 64, max_backlog: null, time_scale: 0, failures: false, payq_version: 'bench', node_version: process.version,
  started_at: new Date().toISOString(),
};

/** checkout with destinations and groups of its own, so runs never see each other's events. */
function freshCheckout() {
  const tag = `bp${Date.now().toString(36)}${randomBytes(2).toString('hex')}`;
  const text = readFileSync(new URL('../fixtures/scenarios/checkout.yaml', import.meta.url), 'utf8')
    .replaceAll('checkout.', `payq-bench.${tag}.`)
    .replace(/^name: checkout$/m, `name: ${tag}`);
  return parseScenario(text, 'checkout (bench copy)');
}

/** CPU seconds (user + system) of the processes whose command line matches. */
function brokerCpuSeconds(match) {
  let total = 0;
  let found = false;
  for (const pid of readdirSync('/proc').filter((d) => /^\d+$/.test(d))) {
    try {
      const cmd = readFileSync(`/proc/${pid}/cmdline`, 'utf8');
      if (!match.test(cmd)) continue;
      const fields = readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1].split(' ');
      total += (Number(fields[11]) + Number(fields[12])) / TICKS;
      found = true;
    } catch {
      // gone, or not ours to read
    }
  }
  return found ? total : undefined;
}

const BROKER_PROCESS = { kafka: /kafka\.Kafka|kafka_2\.13/, amqp: /rabbit/ };

async function once(url, options, { sampleRss = false } = {}) {
  const driver = await createDriver(url);
  await driver.connect();
  const rss = [];
  const sampler = sampleRss ? setInterval(() => rss.push(Math.round(process.memoryUsage().rss / 1e6)), 1000) : undefined;
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  try {
    const result = await runBench({ seed: 1, runId: `bp-${randomBytes(4).toString('hex')}`, timeScale: 0, failures: false, ...options }, { driver, clock: systemClock });
    const wallS = (performance.now() - t0) / 1000;
    const cpu = process.cpuUsage(cpu0);
    const report = buildReport(result.data, { run_id: 'bench', role: 'all', settings });
    return { report, drained: result.drained, wallS, cpuS: (cpu.user + cpu.system) / 1e6, rss };
  } finally {
    if (sampler) clearInterval(sampler);
    await driver.close();
  }
}

async function ceiling() {
  const { report: r, cpuS, wallS } = await once(`memory://bench-pipeline-${randomBytes(3).toString('hex')}`, {
    scenario: loadScenario('checkout'), durationMs: CEILING_S * 1000, warmupMs: 2000,
  });
  console.log(JSON.stringify({
    part: 'ceiling (memory://, zero processing time, flat out)', seconds: r.elapsed_s,
    events_per_s: r.throughput.events_per_s, payments_per_s: r.throughput.payments_per_s,
    produced_events_per_s: r.throughput.produced.events_per_s, processed_events_per_s: r.throughput.processed.events_per_s,
    end_to_end_p99_ms: r.latency.end_to_end.p99_ms, loss: r.loss, harness_cpu_pct: Math.round((cpuS / wallS) * 100),
  }));
}

async function rss() {
  const { report: r, rss: samples } = await once(`memory://bench-pipeline-rss-${randomBytes(3).toString('hex')}`, {
    scenario: loadScenario('checkout'), durationMs: RSS_S * 1000, warmupMs: 2000,
  }, { sampleRss: true });
  const half = Math.floor(samples.length / 2);
  const max = (xs) => Math.max(...xs);
  console.log(JSON.stringify({
    part: `rss over ${RSS_S} s (memory://, flat out)`, payments: r.payments.produced, events_per_s: r.throughput.events_per_s,
    rss_mb_first: samples[0], rss_mb_max_first_half: max(samples.slice(0, half)), rss_mb_max_second_half: max(samples.slice(half)),
    rss_mb_last: samples.at(-1), samples_mb: samples.length <= 40 ? samples : undefined,
  }));
}

async function rates(name) {
  const url = URLS[name];
  let best;
  for (let rate = START_RATE; rate <= MAX_RATE; rate = Math.round(rate * 1.5)) {
    const brokerBefore = brokerCpuSeconds(BROKER_PROCESS[name]);
    const { report: r, drained, wallS, cpuS } = await once(url, {
      scenario: freshCheckout(), rate, durationMs: STEP_S * 1000, warmupMs: 1000, drainTimeoutMs: 15_000, partitions: 6,
    });
    const brokerAfter = brokerCpuSeconds(BROKER_PROCESS[name]);
    const expected = rate * STEP_S;
    const delayP99 = r.latency.publish_delay?.p99_ms ?? 0;
    const sustained =
      r.payments.produced >= 0.97 * expected && delayP99 <= 250 && r.latency.end_to_end.p99_ms <= 1000 && r.loss === 0 && drained === 'complete';
    const row = {
      part: name, rate_payments_per_s: rate, sustained, payments: r.payments.produced, of: expected,
      events_per_s: r.throughput.events_per_s, publish_delay_p99_ms: delayP99, publish_p99_ms: r.latency.publish.p99_ms,
      end_to_end_p99_ms: r.latency.end_to_end.p99_ms, loss: r.loss, drained,
      harness_cpu_pct: Math.round((cpuS / wallS) * 100),
      broker_cpu_pct: brokerBefore === undefined || brokerAfter === undefined ? null : Math.round(((brokerAfter - brokerBefore) / wallS) * 100),
    };
    console.log(JSON.stringify(row));
    if (!sustained) break;
    best = row;
  }
  console.log(JSON.stringify({ part: `${name}: highest sustained`, rate_payments_per_s: best?.rate_payments_per_s ?? null, events_per_s: best?.events_per_s ?? null }));
}

for (const part of PARTS) {
  if (part === 'ceiling') await ceiling();
  else if (part === 'rss') await rss();
  else if (part === 'kafka' || part === 'amqp') {
    try {
      await rates(part);
    } catch (err) {
      console.log(JSON.stringify({ part, error: err instanceof Error ? err.message : String(err) }));
    }
  } else console.error(`unknown part ${part}`);
}
process.exit(0);
