#!/usr/bin/env node
/**
 * npm run bench:trace — how many events/s `trace` keeps up with, and its memory after 1M payments.
 *
 *   memory:  1,000,000 payments (lifecycle stream, ~3.9M events) produced into memory:// while a
 *            tracer in the same process follows them; prints events/s and the heap after the run
 *            (trace holds only in-flight payments, so it must stay flat).
 *   kafka:   N lifecycle payments written first, then trace --from-beginning reads them flat out.
 *   amqp:    a tap subscribed, then N lifecycle payments produced; events/s while keeping up.
 *
 *   worker:  a no-op worker (one stage, zero processing time, no failures, emits one event per
 *            input) over N events already waiting: events/s it handles, outputs confirmed.
 *
 *   PAYQ_BENCH_PAYMENTS=1000000 PAYQ_BENCH_BROKER_PAYMENTS=50000 npm run bench:trace
 */
import { randomBytes } from 'node:crypto';
import { systemClock } from '../dist/core/clock.js';
import { produce } from '../dist/core/produce.js';
import { generatedSource } from '../dist/core/sources.js';
import { trace } from '../dist/core/trace.js';
import { createDriver } from '../dist/drivers/registry.js';
import { EventGenerator } from '../dist/events/generator.js';
import { loadScenario, parseScenario } from '../dist/events/scenario.js';
import { runWorker } from '../dist/core/worker.js';
import { deleteBenchDestinations } from './bench-cleanup.js';

const MEMORY_PAYMENTS = Number(process.env.PAYQ_BENCH_PAYMENTS ?? 1_000_000);
const BROKER_PAYMENTS = Number(process.env.PAYQ_BENCH_BROKER_PAYMENTS ?? 50_000);
const BROKERS = (process.env.PAYQ_BENCH_BROKERS ?? 'memory,kafka,amqp').split(',');
const URLS = { memory: `memory://bench-trace-${randomBytes(3).toString('hex')}`, kafka: process.env.PAYQ_TEST_KAFKA ?? 'kafka://127.0.0.1:9092', amqp: process.env.PAYQ_TEST_AMQP ?? 'amqp://guest:guest@127.0.0.1:5672' };
const scenario = loadScenario('checkout');
const mb = (b) => Math.round(b / 1e6);

function traceOptions(topic, payments, fromBeginning) {
  return {
    scenario, destinations: [topic], decode: { typeField: 'event', correlate: 'payment_id' }, stuckAfterMs: 600_000,
    expect: undefined, withinMs: undefined, payment: undefined, runId: undefined, fromBeginning,
    idleTimeoutMs: 15_000, durationMs: 900_000, untilFinished: payments,
  };
}

async function produceInto(driver, topic, payments) {
  return produce(
    { destination: topic, encode: { binding: driver.capabilities.headerBinding, sourcePrefix: '/payq/checkout', runId: 'bench' } },
    { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario, seed: 1, payments, lifecycle: true })) },
  );
}

async function run(name) {
  const url = URLS[name];
  const payments = name === 'memory' ? MEMORY_PAYMENTS : BROKER_PAYMENTS;
  const topic = `payq-bench.trace.${randomBytes(3).toString('hex')}`;
  const driver = await createDriver(url);
  await driver.connect();
  await driver.declare([{ name: topic, deadLetter: true }]);
  global.gc?.();
  const heapBefore = process.memoryUsage().heapUsed;
  let peakHeap = heapBefore;
  const sampler = setInterval(() => (peakHeap = Math.max(peakHeap, process.memoryUsage().heapUsed)), 250);
  let result;
  let t0;
  if (name === 'kafka') {
    await produceInto(driver, topic, payments);
    t0 = performance.now();
    result = await trace(traceOptions(topic, payments, true), { driver, clock: systemClock });
  } else {
    let ready;
    const tapped = new Promise((r) => (ready = r));
    t0 = performance.now();
    const tracing = trace(traceOptions(topic, payments, false), { driver, clock: systemClock, onReady: () => ready() });
    await tapped;
    await produceInto(driver, topic, payments);
    result = await tracing;
  }
  const seconds = (performance.now() - t0) / 1000;
  clearInterval(sampler);
  global.gc?.();
  const heapAfter = process.memoryUsage().heapUsed;
  await driver.close();
  await deleteBenchDestinations(url, [topic]);
  return {
    broker: name, payments, finished: result.payments.finished, events: result.events.seen,
    events_per_s: Math.round(result.events.seen / seconds), heap_before_mb: mb(heapBefore), heap_peak_mb: mb(peakHeap), heap_after_mb: mb(heapAfter), rss_mb: mb(process.memoryUsage().rss),
  };
}

async function noopWorker(name) {
  const url = name === 'memory' ? `memory://bench-worker-${randomBytes(3).toString('hex')}` : URLS[name];
  const events = name === 'memory' ? 500_000 : BROKER_PAYMENTS;
  const topic = `payq-bench.worker.${randomBytes(3).toString('hex')}`;
  const noop = parseScenario(
    `name: noop\nentry: noop_in\nsink: ${topic}.out\nstages:\n  - { name: noop, input: [noop_in], destination: ${topic}, emits: [{ event: noop_out, p: 1 }] }\n`,
    'noop',
  );
  const driver = await createDriver(url);
  await driver.connect();
  await driver.declare([{ name: topic, deadLetter: true, partitions: 6 }, { name: `${topic}.out`, deadLetter: true, partitions: 6 }]);
  await produce(
    { destination: topic, encode: { binding: driver.capabilities.headerBinding, sourcePrefix: '/payq/noop', runId: 'bench' } },
    { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario: noop, seed: 1, payments: events, lifecycle: false })) },
  );
  const r = await runWorker({ scenario: noop, timeScale: 0, failures: false, prefetch: 500, idleTimeoutMs: 3_000, partitions: 6 }, { driver, clock: systemClock });
  await driver.close();
  await deleteBenchDestinations(url, [topic, `${topic}.out`]);
  // The idle timeout is part of elapsed: take it out.
  const busy = Math.max(0.001, r.elapsed_s - 3);
  return { broker: name, events, handled: r.totals.handled, handled_per_s: Math.round(r.totals.handled / busy) };
}

const rows = [];
for (const b of BROKERS) {
  try {
    const r = await run(b);
    rows.push(r);
    console.log(`${b.padEnd(7)} ${r.finished.toLocaleString('en-US')}/${r.payments.toLocaleString('en-US')} payments finished, ${r.events.toLocaleString('en-US')} events, ${r.events_per_s.toLocaleString('en-US')} events/s traced; heap ${r.heap_before_mb} MB before, ${r.heap_peak_mb} MB peak, ${r.heap_after_mb} MB after`);
  } catch (err) {
    console.log(`${b.padEnd(7)} failed: ${err.message}`);
  }
}
// After the trace runs: the memory broker keeps the no-op worker's output for the process's life.
for (const b of BROKERS) {
  try {
    const w = await noopWorker(b);
    rows.push({ worker: w });
    console.log(`${b.padEnd(7)} no-op worker: ${w.handled.toLocaleString('en-US')}/${w.events.toLocaleString('en-US')} handled, ${w.handled_per_s.toLocaleString('en-US')} events/s (input acked after its output was confirmed)`);
  } catch (err) {
    console.log(`${b.padEnd(7)} no-op worker failed: ${err.message}`);
  }
}
console.log(JSON.stringify({ bench: 'trace', rows }));
process.exit(0);
