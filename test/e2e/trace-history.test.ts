/**
 * `payq trace --from-beginning` on Kafka and NATS JetStream (the brokers that keep history for a
 * new reader), as CI would run it: a pipeline (trace + worker +
 * produce, separate processes) runs once, watched live; reading its history afterwards gives the
 * same payments, classes and latencies, with no duplicates or missing steps, and `--expect` and
 * `--payment` on that history give true verdicts (a run that must fail, fails).
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { parseScenario } from '../../src/events/scenario.js';
import { KAFKA_URL, NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';
import { declareLayout } from '../helpers/layout.js';

const PAYMENTS = 1500;

/** A copy of checkout with destinations and a name (so worker groups) of its own, in a file the CLI can read. */
function scenarioFile(prefix: string, name: string): { file: string; destinations: string[] } {
  const text = readFileSync('fixtures/scenarios/checkout.yaml', 'utf8').replaceAll('checkout.', `${prefix}.`).replace('name: checkout', `name: ${name}`);
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'payq-scn-')), 'checkout.yaml');
  writeFileSync(file, text);
  return { file, destinations: parseScenario(text, file).destinations };
}

// The brokers side by side (sibling describes run one after the other).
describe.concurrent('trace --from-beginning', () => {
for (const [brokerName, url] of [
  ['Kafka', KAFKA_URL],
  ['NATS', NATS_URL],
] as const) {
  describe(`trace --from-beginning on ${brokerName}`, async () => {
    const up = await brokerAvailable(url);

    it.skipIf(!up)('reads a pipeline’s history into the verdict a live trace gave', async () => {
      const name = `history-${Date.now().toString(36)}`;
      const { file, destinations } = scenarioFile(uniqueName('history'), name);
      const stages = ['payment-service', 'capture-service', 'fulfilment-service', 'refund-service'].map((s) => `payq-worker.${name}.${s}`);
      // The pipeline's layout first, as its workers create it: trace only reads, waiting for what is missing.
      await declareLayout(url, destinations);
      try {
        // 1. The run, watched live. Failures on: dead letters are part of the history too.
        const live = startCli(['trace', '--broker', url, '--scenario', file, '--idle-timeout', '8s', '--stuck-after', '60s', '--json', '-v']);
        await live.waitForStderr('trace: watching');
        const worker = startCli(['worker', '--broker', url, '--scenario', file, '--time-scale', '0.1', '--idle-timeout', '6s']);
        const produced = await runCli(['produce', '--broker', url, '--scenario', file, '--count', String(PAYMENTS), '--rate', '500', '--seed', '8']);
        expect(produced.code, produced.stderr).toBe(0);
        expect(await worker.exited, worker.stderr()).toBe(0);
        expect(await live.exited, live.stderr()).toBe(0);
        const l = JSON.parse(live.stdout());
        expect(l.payments).toMatchObject({ seen: PAYMENTS, finished: PAYMENTS, in_flight: 0, stuck: 0 });

        // The history is read by several independent runs at once (each ends on its idle timeout).
        const history = (...args: string[]) => runCli(['trace', '--broker', url, '--scenario', file, '--from-beginning', ...args]);
        const firstDeclined = async () =>
          JSON.parse(
            (await runCli(['consume', '--broker', url, '--topic', destinations.at(-1)!, '--from-beginning', '--type', 'payment_declined', '--limit', '1', '--idle-timeout', '5s', '--json'])).stdout.split('\n')[0]!,
          ).payment_id as string;
        const [h1, ended, refunds, one, none] = await Promise.all([
          history('--idle-timeout', '6s', '--json'),
          history('--idle-timeout', '6s', '--json', '--expect', 'order_placed,order_completed|payment_declined', '--within', '60s'),
          history('--idle-timeout', '6s', '--json', '--expect', 'order_placed,refund_completed'),
          firstDeclined().then((declined) => history('--idle-timeout', '5s', '--json', '--payment', declined)),
          history('--idle-timeout', '5s', '--payment', 'pay_0000000000000000'),
        ]);

        // 2. The same run read from history.
        expect(h1.code, h1.stderr).toBe(0);
        const h = JSON.parse(h1.stdout);
        expect(h.payments).toEqual(l.payments);
        expect(h.events).toMatchObject({ seen: l.events.seen, from_history: l.events.seen, duplicates: 0, missing_steps: 0, out_of_order: 0, undecodable: 0 });
        expect(l.events).toMatchObject({ from_history: 0, duplicates: 0, missing_steps: 0 });
        // Latency from the events' own timestamps: the same figures as live, however late it is read.
        expect(h.latency.end_to_end).toEqual(l.latency.end_to_end);
        expect(h.latency.hops).toEqual(l.latency.hops);
        expect(h.latency.transit.count).toBe(0);
        expect(l.latency.transit.count).toBe(l.events.seen);

        // 3. --expect on history: a pass where every payment met it, a fail where most cannot.
        const byClass = l.payments.by_class as Record<string, number>;
        const e = JSON.parse(ended.stdout).expectation;
        expect(e.passed + e.failed).toBe(PAYMENTS);
        expect(e.passed).toBeGreaterThanOrEqual(byClass['completed']! + byClass['refunded']! + byClass['declined']!);
        expect(e.failed).toBeLessThanOrEqual(byClass['dead-lettered']!);
        expect(ended.code, ended.stderr).toBe(e.failed === 0 ? 0 : 4);
        expect(refunds.code, refunds.stderr).toBe(4);
        expect(JSON.parse(refunds.stdout).expectation).toMatchObject({ passed: byClass['refunded'], failed: PAYMENTS - byClass['refunded']! });
        expect(refunds.stderr).toMatch(new RegExp(`payq: error: ${(PAYMENTS - byClass['refunded']!).toLocaleString('en-US')} of 1,500 payments did not meet --expect order_placed,refund_completed`));

        // 4. --payment on history: a declined payment's whole timeline, its order first; an unknown id exits 4.
        expect(one.code, one.stderr).toBe(0);
        expect(JSON.parse(one.stdout).timeline.map((t: { type: string }) => t.type)).toEqual(['order_placed', 'payment_declined']);
        expect(none.code, none.stderr).toBe(4);
        expect(none.stderr).toMatch(/payq: error: --payment pay_0000000000000000: no event of this payment was seen on /);
      } finally {
        await deleteDestinations(url, destinations, { groups: stages });
      }
    }, 300_000);
  });
}
});

describe('trace --expect with a scenario', () => {
  it('refuses, before connecting, an expected type the scenario never produces', async () => {
    // Port 1: nothing listens there; the usage error must come first.
    for (const [expectArg, bad] of [
      ['order_placed,no_such_event', "'no_such_event'"],
      ['order_placed|ordr_placed', "'ordr_placed'"],
      ['payment_captured,Order_Completed,refund', "'Order_Completed', 'refund'"],
    ] as const) {
      const r = await runCli(['trace', '--broker', 'kafka://127.0.0.1:1', '--expect', expectArg, '--within', '30s']);
      expect(r.code, r.stderr).toBe(2);
      expectOneErrorLine(r.stderr, new RegExp(`--expect: scenario checkout never produces ${bad}; its event types are order_placed, payment_authorized, payment_declined, payment_captured, order_completed, refund_requested, refund_completed`));
    }
  });
});
