/**
 * payq's own pipeline layout, declared as payq produce and worker declare it, for tests that start
 * a reader (trace, consume) before anything else: readers never create destinations, they wait for
 * them, so a test that waits for the reader to be ready before producing declares the layout first.
 */
import { createDriver } from '../../src/drivers/registry.js';

export async function declareLayout(url: string, names: string[], partitions = 6): Promise<void> {
  const driver = await createDriver(url);
  try {
    await driver.connect();
    await driver.declare(names.map((name) => ({ name, partitions, deadLetter: true })));
  } finally {
    await driver.close();
  }
}
