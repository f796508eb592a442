/**
 * The existing pipeline on NATS JetStream, unchanged: core produce + the checkout workers (failures
 * on) + trace in this process, then the DLQs read back on their own; and the CLI end to end
 * (`payq produce` then `payq consume` in child processes). Plus what only a real server shows:
 * refused credentials exit 3 without printing the password (a second nats-server with a user
 * and password, started here on a free port when the binary is installed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import net from 'node:net';
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
import { NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

const PAYMENTS = 2_000;
const SEED = 4242;
const up = await brokerAvailable(NATS_URL);

/** checkout with destinations no other run uses, and failure rates high enough to matter. */
function uniqueCheckout(prefix: string): Scenario {
  const text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8')
    .replaceAll('checkout.', `${prefix}.`)
    .replace('failures: { transient: 0.01, permanent: 0.001 }', 'failures: { transient: 0.05, permanent: 0.01 }');
  return parseScenario(text, 'checkout (test copy)');
}

async function readAll(driver: Driver, destination: string, count: number): Promise<{ key?: string; headers: Headers }[]> {
  const got: { key?: string; headers: Headers }[] = [];
  const sub = await driver.subscribe({ destinations: [destination], group: uniqueName('dlq-reader'), fromBeginning: true, prefetch: 500 }, (ds) => {
    for (const d of ds) {
      got.push({ ...(d.key === undefined ? {} : { key: d.key }), headers: d.headers });
      d.ack();
    }
  });
  try {
    if (count > 0) await waitFor(() => got.length >= count, 20_000, () => `${count} dead letters on ${destination}, got ${got.length}`);
    // Long enough for a stray extra message to show up.
    await new Promise((r) => setTimeout(r, 500));
  } finally {
    await sub.close();
  }
  return got;
}

describe.skipIf(!up)('checkout pipeline on NATS JetStream', () => {
  it(`trace accounts for each of ${PAYMENTS} payments once; the DLQs hold exactly the dead-lettered ones`, async () => {
    const prefix = uniqueName('pipe');
    const scenario = uniqueCheckout(prefix);
    const driver = await createDriver(NATS_URL);
    await driver.connect();
    const controller = new AbortController();
    try {
      let ready: () => void = () => undefined;
      const tapped = new Promise<void>((r) => (ready = r));
      const tracing = trace(
        {
          scenario, destinations: scenario.destinations, decode: { typeField: 'event', correlate: 'payment_id' },
          stuckAfterMs: 30_000, expect: undefined, withinMs: undefined, payment: undefined, runId: undefined,
          fromBeginning: false, idleTimeoutMs: 15_000, durationMs: 45_000, untilFinished: PAYMENTS,
        },
        { driver, clock: systemClock, onReady: () => ready() },
      );
      await tapped;
      const working = runWorker({ scenario, timeScale: 0, seed: 9, prefetch: 200 }, { driver, clock: systemClock, signal: controller.signal });
      const produced = await produce(
        { destination: scenario.destinationFor(scenario.entry), encode: { binding: driver.capabilities.headerBinding, sourcePrefix: '/payq/checkout', runId: prefix } },
        { driver, clock: systemClock, source: generatedSource(new EventGenerator({ scenario, seed: SEED, payments: PAYMENTS, lifecycle: false })) },
      );
      expect(produced.acked).toBe(PAYMENTS);
      const traced = await tracing;
      controller.abort();
      const worked = await working;

      const classes = traced.payments.by_class;
      expect(traced.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, in_flight: 0, stuck: 0 });
      expect(Object.values(classes).reduce((a, b) => a + b, 0)).toBe(PAYMENTS);
      expect(Object.keys(classes).sort()).toEqual(['completed', 'dead-lettered', 'declined', 'refunded']);
      expect(traced.events.undecodable).toBe(0);
      expect(worked.totals.dead_lettered_total).toBe(classes['dead-lettered']);

      const letters: { key?: string; headers: Headers }[] = [];
      const perStage = Object.fromEntries(worked.stages.map((s) => [s.destination, s.dead_lettered_total]));
      for (const stage of scenario.stages) letters.push(...(await readAll(driver, `${stage.destination}.dlq`, perStage[stage.destination] ?? 0)));
      expect(letters).toHaveLength(classes['dead-lettered']!);
      expect(new Set(letters.map((l) => l.headers['ce_subject'])).size).toBe(classes['dead-lettered']);
      for (const l of letters) {
        // The payment id travels as the key on NATS too (payq-key header, given back as `key`).
        expect(l.key).toBe(l.headers['ce_subject']);
        for (const h of [PayqHeader.dlqReason, PayqHeader.dlqError, PayqHeader.originalDestination, PayqHeader.attempts, PayqHeader.firstFailedAt, PayqHeader.stage]) {
          expect(l.headers[h], `${h} on a dead letter`).toBeTruthy();
        }
        expect(['permanent-failure', 'retries-exhausted']).toContain(l.headers[PayqHeader.dlqReason]);
      }
    } finally {
      controller.abort();
      await driver.close();
      await deleteDestinations(NATS_URL, scenario.destinations);
    }
  }, 60_000);

  it('CLI: payq produce acks 1000 payments, payq consume reads exactly them back', async () => {
    const topic = uniqueName('cli');
    try {
      const p = await runCli(['produce', '--broker', NATS_URL, '--topic', topic, '--count', '1000', '--seed', '7', '--json']);
      expect(p.code, p.stderr).toBe(0);
      expect(JSON.parse(p.stdout)).toMatchObject({ sent: 1000, acked: 1000, failed: 0 });

      const c = await runCli(['consume', '--broker', NATS_URL, '--topic', topic, '--group', uniqueName('g'), '--from-beginning', '--idle-timeout', '2s', '--json']);
      expect(c.code, c.stderr).toBe(0);
      const events = c.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; event: string });
      expect(events).toHaveLength(1000);
      expect(new Set(events.map((e) => e.id)).size).toBe(1000);
      expect(new Set(events.map((e) => e.event))).toEqual(new Set(['order_placed']));
    } finally {
      await deleteDestinations(NATS_URL, [topic]);
    }
  }, 30_000);

  it('CLI: an unreachable server exits 3 at once with one line', async () => {
    const port = await freePort();
    const r = await runCli(['produce', '--broker', `nats://127.0.0.1:${port}`, '--count', '1']);
    expect(r.code).toBe(3);
    expect(r.ms).toBeLessThan(15_000);
    expectOneErrorLine(r.stderr, /NATS nats:\/\/127\.0\.0\.1:\d+: server unreachable/);
  });

  const NATS_SERVER = '/usr/sbin/nats-server';
  it.skipIf(!existsSync(NATS_SERVER))('refused credentials exit 3, and the password is never printed', async () => {
    const port = await freePort();
    const server = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), '--user', 'payq', '--pass', 'right-pass'], { stdio: 'ignore' });
    try {
      await waitFor(() => canConnect(port), 10_000, `nats-server with a password on port ${port}`);
      const r = await runCli(['produce', '--broker', `nats://payq:wrong-secret-pw@127.0.0.1:${port}`, '--count', '1']);
      expect(r.code).toBe(3);
      expectOneErrorLine(r.stderr, /refused our credentials/);
      expect(r.stderr).toContain('nats://payq:***@127.0.0.1');
      expect(r.stdout + r.stderr).not.toContain('wrong-secret-pw');
    } finally {
      await stop(server);
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
