/**
 * The in-process memory:// broker: what this driver folder declares about itself (types.ts,
 * DriverDescriptor), read without loading the client library.
 */
import type { DriverDescriptor } from '../types.js';
import { MEMORY_URL_SPEC } from './config.js';

export const MEMORY_DRIVER: DriverDescriptor = {
  name: 'memory',
  url: MEMORY_URL_SPEC,
  capabilities: {
    consumerGroups: true,
    persistence: false,
    ordering: 'per-destination',
    replayFromBeginning: true,
    nativeDeadLetter: false,
    partitions: false,
    storedDestinations: true,
    createsOnSubscribe: true,
    exchangeTaps: false,
    streamOffsets: false,
    competingConsumers: false,
    tapReads: undefined,
  },
  tuning: { sendBatchSize: 1000, sendMaxInFlight: 4 },
  headerBinding: 'kafka',
  load: () => import('./memory-driver.js'),
};
