/**
 * Issue #3's pipeline check, on every broker (NATS JetStream included): 10,000 seeded payments, the checkout workers with
 * failures on, and trace accounting for every payment exactly once. The DLQs are read back on
 * their own and must hold exactly the dead-lettered payments, each with payq's provenance
 * headers (and RabbitMQ's own x-death). Core functions run in this process with real drivers.
 */
import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { produce } from '../../src/core/produce.js';
import { generatedSource } from '../../src/core/sources.js';
import { trace } from '../../src/core/trace.js';
import { runWorker } from '../../src/core/worker.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, Headers } from '../../src/drivers/types.js';
import { EventGenerator } from '../../src/events/generator.js';
import { PayqHeader } from '../../src/events/headers.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';
import { AMQP_URL, KAFKA_URL, NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';

const PAYMENTS = 10_000;
const SEED = 4242;

/** checkout with destinations no other run uses, and failure rates high enough to matter. */
function uniqueCheckout(prefix: string): Scenario {
  const text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')
    .replaceAll('checkout.', `${prefix}.`)
    .replace('failures: { transient: 0.01, permanent: 0.001 }', 'failures: { transient: 0.05, permanent: 0.004 }');
  return parseScenario(text, 'checkout (test copy)');
}

async function readAll(driver: Driver, destination: string, count: number, fromBeginning: boolean): Promise<{ key?: string; headers: Headers }[]> {
  const got: { key?: string; headers: Headers }[] = [];
  let done: () => void = () => undefined;
  const finished = new Promise<void>((r) => (done = r));
  const sub = await driver.subscribe({ destinations: [destination], group: uniqueName('dlq-reader'), fromBeginning, prefetch: 500 }, (ds) => {
    for (const d of ds) {
      got.push({ key: d.key, headers: d.headers });
      d.ack();
    }
    if (got.length >= count) done();
  });
  if (count > 0) await Promise.race([finished, new Promise((r) => setTimeout(r, 20_000))]);
  else await new Promise((r) => setTimeout(r, 1_500));
  await sub.close();
  return got;
}

for (const [name, url] of [
  ['memory', `memory://pipeline-${Date.now()}`],
  ['Kafka', KAFKA_URL],
  ['RabbitMQ', AMQP_URL],
  ['NATS', NATS_URL],
] as const) {
  describe(`checkout pipeline on ${name}`, async () => {
    const up = name === 'memory' ? true : await brokerAvailable(url);

    it.skipIf(!up)(`trace accounts for each of ${PAYMENTS} payments once; the DLQs hold exactly the dead-lettered ones`, async () => {
      const prefix = uniqueName('pipe');
      const scenario = uniqueCheckout(prefix);
      const driver = await createDriver(url);
      await driver.connect();
      const controller = new AbortController();
      try {
        // The pipeline's layout first, as its workers create it: trace only reads (it never creates).
        await driver.declare(scenario.destinations.map((name) => ({ name, partitions: 6, deadLetter: true })));
        let ready: () => void = () => undefined;
        const tapped = new Promise<void>((r) => (ready = r));
        const tracing = trace(
          {
            scenario, destinations: scenario.destinations, decode: { typeField: 'event', correlate: 'payment_id' },
            stuckAfterMs: 60_000, expect: undefined, withinMs: undefined, payment: undefined, runId: undefined,
            fromBeginning: false, idleTimeoutMs: 20_000, durationMs: 240_000, untilFinished: PAYMENTS,
          },
          { driver, clock: systemClock, onReady: () => ready() },
        );
        await tapped;
        const working = runWorker({ scenario, timeScale: 0, seed: 9, prefetch: 200 }, { driver, clock: systemClock, signal: controller.signal });
        const produced = await produce(
          { destination: scenario.destinationFor(scenario.entry), encode: { binding: driver.headerBinding, sourcePrefix: '/payq/checkout', runId: prefix } },
          { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario, seed: SEED, payments: PAYMENTS, lifecycle: false })) },
        );
        expect(produced.acked).toBe(PAYMENTS);
        const traced = await tracing;
        controller.abort();
        const worked = await working;

        const classes = traced.payments.by_class;
        const total = Object.values(classes).reduce((a, b) => a + b, 0);
        expect(traced.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, in_flight: 0, stuck: 0 });
        expect(total).toBe(PAYMENTS);
        expect(Object.keys(classes).sort()).toEqual(['completed', 'dead-lettered', 'declined', 'refunded']);
        expect(classes['completed']).toBeGreaterThan(PAYMENTS * 0.8);
        expect(classes['declined']).toBeGreaterThan(0);
        expect(classes['refunded']).toBeGreaterThan(0);
        expect(classes['dead-lettered']).toBeGreaterThan(0);
        expect(traced.events.undecodable).toBe(0);
        expect(worked.totals.dead_lettered_total).toBe(classes['dead-lettered']);

        // The DLQs, read on their own: exactly the dead-lettered payments, with provenance.
        const letters: { key?: string; headers: Headers }[] = [];
        const perStage = Object.fromEntries(worked.stages.map((s) => [s.destination, s.dead_lettered_total]));
        for (const stage of scenario.stages) {
          letters.push(...(await readAll(driver, `${stage.destination}.dlq`, perStage[stage.destination] ?? 0, true)));
        }
        expect(letters).toHaveLength(classes['dead-lettered']!);
        expect(new Set(letters.map((l) => l.headers['ce_subject'] ?? l.headers['cloudEvents_subject'])).size).toBe(classes['dead-lettered']);
        for (const l of letters) {
          for (const h of [PayqHeader.dlqReason, PayqHeader.dlqError, PayqHeader.originalDestination, PayqHeader.attempts, PayqHeader.firstFailedAt, PayqHeader.stage]) {
            expect(l.headers[h], `${h} on a dead letter`).toBeTruthy();
          }
          expect(['permanent-failure', 'retries-exhausted']).toContain(l.headers[PayqHeader.dlqReason]);
          if (name === 'RabbitMQ') expect(l.headers['x-death']).toBeTruthy();
        }
      } finally {
        controller.abort();
        await driver.close();
        await deleteDestinations(url, scenario.destinations);
      }
    });
  });
}
