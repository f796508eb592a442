/**
 * Issue #3 with separate processes, as CI would run them: `payq trace --expect` passes while the
 * workers run and fails (exit 4, the stuck payments listed) when one stage is not running; a
 * worker killed with SIGKILL mid-run loses nothing once restarted.
 */
import { describe, expect, it } from 'vitest';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';
import { declareLayout } from '../helpers/layout.js';
import { scenarioCopy } from '../helpers/scenario-file.js';

// Every case at once: each has a scenario (destinations, groups) of its own, and they mostly wait.
describe.concurrent('trace --expect and worker crashes', () => {
for (const [name, url] of [
  ['Kafka', KAFKA_URL],
  ['RabbitMQ', AMQP_URL],
] as const) {
  describe(`trace --expect and worker crashes on ${name}`, async () => {
    const up = await brokerAvailable(url);

    it.skipIf(!up)('passes while the workers run, and exits 4 listing stuck payments when a stage is down', async () => {
      const { file, destinations, groups } = scenarioCopy(uniqueName('expect'));
      // The pipeline's layout first, as its workers create it: trace only reads, waiting for what is missing.
      await declareLayout(url, destinations);
      try {
        // 1. Every stage running: every payment completes (or is refunded) or is declined, in time
        // (60 s: a fresh Kafka can take many seconds to admit the workers' first group join).
        const tracer = startCli(['trace', '--broker', url, '--scenario', file, '--expect', 'order_placed,order_completed|payment_declined', '--within', '60s', '--json', '-v']);
        await tracer.waitForStderr('trace: watching');
        const worker = startCli(['worker', '--broker', url, '--scenario', file, '--failures', 'off', '--time-scale', '0.1', '--idle-timeout', '6s', '-v']);
        // Traffic once the workers have joined: a group join slowed by a loaded machine is not the pipeline's latency.
        await worker.waitForStderr('worker: subscribed');
        expect((await runCli(['produce', '--broker', url, '--scenario', file, '--count', '300', '--seed', '1'])).code).toBe(0);
        expect(await tracer.exited, tracer.stderr()).toBe(0);
        const ok = JSON.parse(tracer.stdout());
        expect(ok.expectation).toMatchObject({ passed: 300, failed: 0 });
        expect(await worker.exited, worker.stderr()).toBe(0);

        // 2. capture-service not running: authorised payments stop there.
        const tracer2 = startCli(['trace', '--broker', url, '--scenario', file, '--expect', 'order_placed,order_completed|payment_declined', '--within', '6s', '--stuck-after', '4s', '--json', '-v']);
        await tracer2.waitForStderr('trace: watching');
        const partial = startCli(['worker', '--broker', url, '--scenario', file, '--stage', 'payment-service,fulfilment-service,refund-service', '--failures', 'off', '--time-scale', '0', '--idle-timeout', '5s']);
        expect((await runCli(['produce', '--broker', url, '--scenario', file, '--count', '200', '--seed', '2'])).code).toBe(0);
        expect(await tracer2.exited, tracer2.stderr()).toBe(4);
        const bad = JSON.parse(tracer2.stdout());
        expect(bad.expectation.failed).toBeGreaterThan(150);
        expect(bad.expectation.failed + bad.expectation.passed).toBe(200);
        expect(bad.expectation.failures[0].last_type).toBe('payment_authorized');
        expect(tracer2.stderr()).toMatch(/payq: error: \d+ of 200 payments did not meet --expect order_placed,order_completed\|payment_declined within 6s/);
        expect(await partial.exited).toBe(0);
      } finally {
        await deleteDestinations(url, destinations, { groups: name === 'Kafka' ? groups : [] });
      }
    }, 300_000);

    it.skipIf(!up)('loses nothing when a worker is killed with SIGKILL mid-run and restarted', async () => {
      const { file, destinations, groups } = scenarioCopy(uniqueName('kill'));
      await declareLayout(url, destinations);
      try {
        // Kafka hands the dead worker's partitions over only after its session times out (10 s):
        // the restarted worker and the tracer must wait longer than that in silence.
        const tracer = startCli(['trace', '--broker', url, '--scenario', file, '--idle-timeout', '25s', '--stuck-after', '60s', '--json', '-v']);
        await tracer.waitForStderr('trace: watching');
        expect((await runCli(['produce', '--broker', url, '--scenario', file, '--count', '2000', '--seed', '3'])).code).toBe(0);
        // Real processing times: the first worker is busy with in-flight events when it dies.
        const first = startCli(['worker', '--broker', url, '--scenario', file, '--failures', 'off', '--prefetch', '32']);
        await new Promise((r) => setTimeout(r, 2_500));
        first.child.kill('SIGKILL');
        expect(await first.exited).toBe(null);
        const second = startCli(['worker', '--broker', url, '--scenario', file, '--failures', 'off', '--time-scale', '0', '--idle-timeout', '15s']);
        expect(await second.exited, second.stderr()).toBe(0);
        expect(await tracer.exited, tracer.stderr()).toBe(0);
        const r = JSON.parse(tracer.stdout());
        expect(r.payments).toMatchObject({ seen: 2000, finished: 2000, in_flight: 0, stuck: 0 });
        const total = Object.values(r.payments.by_class as Record<string, number>).reduce((a, b) => a + b, 0);
        expect(total).toBe(2000);
        expect(r.payments.by_class['dead-lettered']).toBe(0);
        // Redelivered events are re-handled with the same child ids: duplicates, never new payments.
        expect(r.events.duplicates).toBeGreaterThanOrEqual(0);
        expect(r.events.missing_steps).toBe(0);
      } finally {
        await deleteDestinations(url, destinations, { groups: name === 'Kafka' ? groups : [] });
      }
    }, 300_000);
  });
}
});
