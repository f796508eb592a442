/**
 * The one list of drivers: each entry is what a driver folder declares about its URLs (its
 * config.ts) and how to load it. Drivers are imported only when their scheme is used, so
 * `--broker amqp://…` never loads kafkajs and `payq --help` loads no client at all. URL parsing
 * and validation (url.ts) derive from this list.
 */
import { ConfigError } from '../errors.js';
import { KAFKA_URL_SPEC } from './kafka/config.js';
import { MEMORY_URL_SPEC } from './memory/config.js';
import { NATS_URL_SPEC } from './nats/config.js';
import { RABBITMQ_URL_SPEC } from './rabbitmq/config.js';
import { ZMQ_URL_SPEC } from './zeromq/config.js';
import { DEFAULT_DRIVER_OPTIONS, type Driver, type DriverOptions } from './types.js';
import type { BrokerUrl, DriverUrlSpec } from './url.js';

export interface DriverEntry {
  url: DriverUrlSpec;
  load: () => Promise<{ createDriver(url: BrokerUrl, options?: DriverOptions): Driver }>;
}

export const DRIVERS: readonly DriverEntry[] = [
  { url: MEMORY_URL_SPEC, load: () => import('./memory/memory-driver.js') },
  { url: KAFKA_URL_SPEC, load: () => import('./kafka/kafka-driver.js') },
  { url: RABBITMQ_URL_SPEC, load: () => import('./rabbitmq/rabbitmq-driver.js') },
  { url: NATS_URL_SPEC, load: () => import('./nats/nats-driver.js') },
  { url: ZMQ_URL_SPEC, load: () => import('./zeromq/zeromq-driver.js') },
];

export async function createDriver(url: string | BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Promise<Driver> {
  // url.ts reads this list when it loads, so it is imported here only when a string needs parsing.
  const parsed = typeof url === 'string' ? (await import('./url.js')).parseBrokerUrl(url) : url;
  const entry = DRIVERS.find((d) => d.url.scheme === parsed.scheme);
  if (!entry) {
    throw new ConfigError(`no driver for ${parsed.scheme}:// (${parsed.redacted})`, {
      hint: `use ${DRIVERS.map((d) => `${d.url.scheme}://`).join(', ')}`,
    });
  }
  const mod = await entry.load();
  return mod.createDriver(parsed, options);
}
