/**
 * replay-dlq --dry-run's table on a real broker fits in 100 columns (issue 11, defect 13) with the
 * long names real pipelines have: a long origin queue and a Java exception class as the reason.
 * The dead letters are written with amqplib, as a foreign pipeline would.
 */
import amqplib from 'amqplib';
import { describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';

describe('replay-dlq --dry-run on RabbitMQ', async () => {
  const up = await brokerAvailable(AMQP_URL);

  it.skipIf(!up)('the table of long origins and reasons fits in 100 columns, nothing cut', async () => {
    const origin = `${uniqueName('width')}.payments.order-placed-events-from-the-checkout-frontend.v2`;
    const dlq = `${origin}.dlq`;
    const reason = 'com.example.payments.fraud.FraudScoringServiceUnavailableAndRetriesExhaustedException';
    const conn = await amqplib.connect(AMQP_URL);
    try {
      const ch = await conn.createConfirmChannel();
      await ch.assertQueue(origin, { durable: true });
      await ch.assertQueue(dlq, { durable: true });
      for (let i = 0; i < 3; i++) {
        ch.sendToQueue(dlq, Buffer.from(JSON.stringify({ event: 'payment_authorized', id: `e${i}`, payment_id: `p${i}`, data: { order_id: i } })), {
          persistent: true,
          headers: { 'payq-original-destination': origin, 'payq-dlq-reason': reason, ce_type: 'payment_authorized' },
        });
      }
      await ch.waitForConfirms();
      const r = await runCli(['replay-dlq', '--broker', AMQP_URL, '--dlq', dlq, '--dry-run', '--idle-timeout', '2s']);
      expect(r.code, r.stderr).toBe(0);
      const table = r.stderr.split('\n').filter((l) => /^[│┌├└]/.test(l));
      expect(table.length).toBeGreaterThan(4);
      for (const line of table) expect([...line].length, line).toBeLessThanOrEqual(100);
      // Wrapped, not truncated: the whole origin and reason are there.
      const column = (i: number) =>
        table
          .filter((l) => l.startsWith('│'))
          .map((l) => l.split('│')[i + 1]!.trim())
          .join('');
      expect(column(0)).toContain(origin);
      expect(column(1)).toContain('FraudScoringServiceUnavailableAndRetriesExhaustedException');
      await ch.close();
    } finally {
      const ch = await conn.createChannel();
      await ch.deleteQueue(origin).catch(() => undefined);
      await ch.deleteQueue(dlq).catch(() => undefined);
      await conn.close().catch(() => undefined);
    }
  });
});
