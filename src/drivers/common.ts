/**
 * What every network driver does the same way: the error for a driver used after close(), and
 * keeping track of the subscriptions it has started (close() closes them).
 */
import { DeliveryError } from '../errors.js';

/** A driver used after close(): the caller's bug, said alike by every driver. */
export function usedAfterClose(broker: string, redactedUrl: string, what: string): DeliveryError {
  return new DeliveryError(`${broker} ${redactedUrl}: ${what} after the driver was closed`, {
    hint: 'a bug in the caller: close() ends the driver for good',
  });
}

/** Starts a subscription, tracked in `live` from the start (a close() meanwhile closes it too); forgotten if it fails to start. */
export async function startTracked<S extends { start(): Promise<S> }>(live: Set<S>, subscription: S): Promise<S> {
  live.add(subscription);
  try {
    return await subscription.start();
  } catch (err) {
    live.delete(subscription);
    throw err;
  }
}
