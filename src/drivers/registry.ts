/**
 * The one list of drivers: each entry is what a driver folder declares about itself (its
 * descriptor.ts: URL schemes and parameters, capabilities, tuning, header binding, and how to
 * load it). Adding a broker is its folder plus its entry here. Drivers are imported only when
 * their scheme is used, so `--broker amqp://…` never loads kafkajs and `payq --help` loads no
 * client at all. URL parsing and validation, `--broker`'s help and the scheme hint (url.ts)
 * derive from this list.
 */
import { ConfigError } from '../errors.js';
import { KAFKA_DRIVER } from './kafka/descriptor.js';
import { MEMORY_DRIVER } from './memory/descriptor.js';
import { NATS_DRIVER } from './nats/descriptor.js';
import { RABBITMQ_DRIVER } from './rabbitmq/descriptor.js';
import { ZMQ_DRIVER } from './zeromq/descriptor.js';
import { DEFAULT_DRIVER_OPTIONS, type Driver, type DriverDescriptor, type DriverOptions } from './types.js';
import type { BrokerUrl } from './url.js';

export const DRIVERS: readonly DriverDescriptor[] = [MEMORY_DRIVER, KAFKA_DRIVER, RABBITMQ_DRIVER, NATS_DRIVER, ZMQ_DRIVER];

/** The driver a URL's scheme names (`BrokerUrl.scheme`, the driver's main scheme). */
export function descriptorFor(scheme: string): DriverDescriptor | undefined {
  return DRIVERS.find((d) => d.url.scheme === scheme);
}

/** "memory://, kafka://, …": one scheme a driver, as the hints name them. */
export function driverSchemes(): string {
  return DRIVERS.map((d) => `${d.url.scheme}://`).join(', ');
}

export async function createDriver(url: string | BrokerUrl, options: DriverOptions = DEFAULT_DRIVER_OPTIONS): Promise<Driver> {
  // url.ts reads this list when it loads, so it is imported here only when a string needs parsing.
  const parsed = typeof url === 'string' ? (await import('./url.js')).parseBrokerUrl(url) : url;
  const entry = descriptorFor(parsed.scheme);
  if (!entry) {
    throw new ConfigError(`no driver for ${parsed.scheme}:// (${parsed.redacted})`, { hint: `use ${driverSchemes()}` });
  }
  const mod = await entry.load();
  return mod.createDriver(parsed, options);
}
