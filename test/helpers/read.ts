/**
 * Reading what a destination holds, as an independent consumer would: everything its group has
 * not taken yet, acked, until nothing has arrived for `quietMs`.
 */
import type { Delivery, Driver } from '../../src/drivers/types.js';
import { sleep } from './wait.js';

export async function readUntilQuiet(driver: Driver, destination: string, group: string, quietMs: number, prefetch = 1000): Promise<Delivery[]> {
  const got: Delivery[] = [];
  let last = Date.now();
  const sub = await driver.subscribe({ destinations: [destination], group, fromBeginning: true, prefetch }, (ds) => {
    for (const d of ds) {
      got.push(d);
      d.ack();
    }
    last = Date.now();
  });
  while (Date.now() - last < quietMs) await sleep(Math.min(100, quietMs / 6));
  await sub.close();
  return got;
}
