/**
 * Kafka (kafkajs): what this driver folder declares about itself (types.ts,
 * DriverDescriptor), read without loading the client library.
 */
import type { DriverDescriptor } from '../types.js';
import { KAFKA_TUNING, KAFKA_URL_SPEC } from './config.js';

export const KAFKA_DRIVER: DriverDescriptor = {
  name: 'kafka',
  url: KAFKA_URL_SPEC,
  capabilities: {
    consumerGroups: true,
    persistence: true,
    ordering: 'per-key',
    replayFromBeginning: true,
    nativeDeadLetter: false,
    partitions: true,
    storedDestinations: true,
    createsOnSubscribe: false,
    exchangeTaps: false,
    streamOffsets: false,
    competingConsumers: false,
    tapReads: 'a consumer group of its own',
  },
  tuning: { sendBatchSize: KAFKA_TUNING.sendBatchSize, sendMaxInFlight: KAFKA_TUNING.sendMaxInFlight },
  headerBinding: 'kafka',
  load: () => import('./kafka-driver.js'),
};
