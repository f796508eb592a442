/**
 * ZeroMQ (brokerless): what this driver folder declares about itself (types.ts,
 * DriverDescriptor), read without loading the client library.
 */
import type { DriverDescriptor } from '../types.js';
import { ZMQ_URL_SPEC } from './config.js';

/**
 * ordering: one publisher's messages reach a subscriber in the order sent (TCP, one forwarder
 * thread); several publishers interleave; a nacked message comes back after later ones.
 * sendBatchSize: a batch is only queued into the socket; one in flight keeps send order.
 */
export const ZMQ_DRIVER: DriverDescriptor = {
  name: 'zeromq',
  url: ZMQ_URL_SPEC,
  capabilities: {
    consumerGroups: false,
    persistence: false,
    ordering: 'per-destination',
    replayFromBeginning: false,
    nativeDeadLetter: false,
    partitions: false,
    storedDestinations: false,
    createsOnSubscribe: false,
    exchangeTaps: false,
    streamOffsets: false,
    competingConsumers: false,
    tapReads: undefined,
  },
  tuning: { sendBatchSize: 1000, sendMaxInFlight: 1 },
  headerBinding: 'kafka',
  load: () => import('./zeromq-driver.js'),
};
