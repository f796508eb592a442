/**
 * RabbitMQ (AMQP 0-9-1, amqplib): what this driver folder declares about itself (types.ts,
 * DriverDescriptor), read without loading the client library.
 */
import type { DriverDescriptor } from '../types.js';
import { RABBITMQ_URL_SPEC } from './config.js';

/**
 * sendBatchSize / sendMaxInFlight: measured with 200 000 × 500-byte persistent events to one
 * durable queue (RabbitMQ 3.10, 2 shared cores): ~9.6–10.3k events/s, the broker (disk) being the
 * limit, not the client. 1 in flight was ~20% slower; 1000–2000 × 4–16 was within the noise
 * and only adds latency per batch.
 */
export const RABBITMQ_DRIVER: DriverDescriptor = {
  name: 'rabbitmq',
  url: RABBITMQ_URL_SPEC,
  capabilities: {
    consumerGroups: true,
    persistence: true,
    ordering: 'per-destination',
    replayFromBeginning: false,
    nativeDeadLetter: true,
    partitions: false,
    storedDestinations: true,
    createsOnSubscribe: false,
    exchangeTaps: true,
    streamOffsets: true,
    competingConsumers: true,
    tapReads: "a queue of its own bound to payq's exchange, seeing what is published after it starts",
  },
  tuning: { sendBatchSize: 500, sendMaxInFlight: 8 },
  headerBinding: 'amqp',
  load: () => import('./rabbitmq-driver.js'),
};
