/** replay-dlq's warnings say where each message is: partition@offset, or its place in the DLQ. */
import { afterEach, describe, expect, it } from 'vitest';
import { systemClock } from '../../src/core/clock.js';
import { replayDlq } from '../../src/core/replay.js';
import { createDriver } from '../../src/drivers/registry.js';
import type { Driver, OutgoingMessage } from '../../src/drivers/types.js';

const drivers: Driver[] = [];
afterEach(async () => {
  await Promise.all(drivers.splice(0).map((d) => d.close()));
});

const good = (i: number): OutgoingMessage => ({
  key: `pay_${i}`,
  type: 'order_placed',
  value: Buffer.from(JSON.stringify({ event: 'order_placed', id: `e${i}`, payment_id: `pay_${i}` })),
  headers: { 'payq-original-destination': 'shop.orders', 'payq-dlq-reason': 'retries-exhausted' },
});
// No origin header, not JSON, no key: nothing names it but its place.
const anonymous = (text: string): OutgoingMessage => ({ key: '', type: 'unknown', value: Buffer.from(text), headers: {} });

describe('replay-dlq problem lines', () => {
  it.each([
    [[1, 4], 5],
    [[2, 3, 6], 6],
    [[1], 1],
  ])('messages without id or key at %j of %i are named by their place in the DLQ', async (badAt, total) => {
    const driver = await createDriver(`memory://replay-positions-${process.pid}-${badAt.join('-')}`);
    drivers.push(driver);
    await driver.connect();
    await driver.declare([{ name: 'shop.orders', deadLetter: true }]);
    const messages = Array.from({ length: total }, (_, i) => (badAt.includes(i + 1) ? anonymous(`garbage ${i}`) : good(i + 1)));
    await driver.send('shop.orders.dlq', messages);
    for (const dryRun of [true, false]) {
      const r = await replayDlq(
        { dlqs: ['shop.orders.dlq'], dryRun, filter: {}, idleTimeoutMs: 300 },
        { driver, clock: systemClock },
      );
      expect(r.problems).toHaveLength(badAt.length);
      // Positions count the messages as read from the DLQ in this run (a real run reads them all too).
      r.problems.forEach((line, i) => expect(line).toMatch(new RegExp(`^shop\\.orders\\.dlq #${badAt[i]} a message without id or key: `)));
      if (!dryRun) expect(r.replayed).toBe(total - badAt.length);
    }
  });
});
