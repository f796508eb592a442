import { ConfigError } from '../errors.js';
import type { Driver } from './types.js';
import { parseBrokerUrl, type BrokerScheme, type BrokerUrl } from './url.js';

/**
 * Scheme → driver module, imported only when that scheme is used, so `--broker amqp://…`
 * never loads kafkajs and `payq --help` loads no client at all.
 */
const loaders: Partial<Record<BrokerScheme, () => Promise<{ createDriver(url: BrokerUrl): Driver }>>> = {
  memory: () => import('./memory/memory-driver.js'),
  kafka: () => import('./kafka/kafka-driver.js'),
  amqp: () => import('./rabbitmq/rabbitmq-driver.js'),
  nats: () => import('./nats/nats-driver.js'),
  zmq: () => import('./zeromq/zeromq-driver.js'),
};

export async function createDriver(url: string | BrokerUrl): Promise<Driver> {
  const parsed = typeof url === 'string' ? parseBrokerUrl(url) : url;
  const load = loaders[parsed.scheme];
  if (!load) {
    throw new ConfigError(`the ${parsed.scheme}:// driver is not available yet (${parsed.redacted})`, {
      hint: 'use memory://, kafka://, amqp://, nats:// or zmq://',
    });
  }
  const mod = await load();
  return mod.createDriver(parsed);
}
