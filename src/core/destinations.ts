/**
 * Readers never create (README "Read-only by default"; src/drivers/types.ts): before subscribing,
 * consume and trace check their destinations passively with `Driver.exists`, wait for the missing
 * ones up to the start timeout, then report them (TopologyError, exit 3, naming them).
 */
import type { Driver } from '../drivers/types.js';
import { InterruptedError, TopologyError } from '../errors.js';
import type { Clock } from './clock.js';

/** How often a missing destination is looked for again. */
const POLL_MS = 500;
/** After the destinations appeared, how long their optional companions (DLQs) may lag behind. */
const COMPANION_GRACE_MS = 2_000;

export interface AwaitDestinationsOptions {
  /** Must all exist; waited for. */
  required: string[];
  /** Read when they exist (a scenario's DLQs); never waited for long, never an error. */
  optional?: string[] | undefined;
  startTimeoutMs: number;
  clock: Clock;
  signal?: AbortSignal | undefined;
}

export interface AwaitDestinationsResult {
  /** The required destinations and the optional ones that exist. */
  present: string[];
  /** Every required destination was missing at first: all they hold was written after the reader started. */
  createdWhileWaiting: boolean;
}

export async function awaitDestinations(driver: Driver, options: AwaitDestinationsOptions): Promise<AwaitDestinationsResult> {
  const required = [...new Set(options.required)];
  const optional = [...new Set(options.optional ?? [])].filter((d) => !required.includes(d));
  // ZeroMQ: a destination is only a topic name; there is nothing to look up.
  if (!driver.capabilities.storedDestinations) return { present: [...required, ...optional], createdWhileWaiting: false };
  const { clock, signal } = options;
  const startUs = clock.nowUs();
  let first = true;
  let createdWhileWaiting = false;
  for (;;) {
    const found = await driver.exists([...required, ...optional]);
    const missing = required.filter((d) => !found.has(d));
    if (first) createdWhileWaiting = required.length > 0 && missing.length === required.length;
    if (missing.length === 0) {
      let present = optional.filter((d) => found.has(d));
      // Created while we waited (trace started before the pipeline): the DLQs come a moment later.
      if (!first && present.length < optional.length) present = await graceForCompanions(driver, optional, options);
      return { present: [...required, ...present], createdWhileWaiting: !first && createdWhileWaiting };
    }
    first = false;
    const waitedMs = (clock.nowUs() - startUs) / 1000;
    if (signal?.aborted) throw new InterruptedError(`interrupted while waiting for ${missing.join(', ')} to exist`);
    if (waitedMs >= options.startTimeoutMs) {
      throw new TopologyError(
        `no such destination on ${driver.url.redacted}: ${missing.join(', ')} (waited ${Math.round(waitedMs / 100) / 10} s; payq only reads here and never creates it)`,
        { hint: 'check the name, or start what creates it (payq produce, worker and bench create their layout); --start-timeout waits longer' },
      );
    }
    await clock.sleep(Math.min(POLL_MS, options.startTimeoutMs - waitedMs), signal);
  }
}

async function graceForCompanions(driver: Driver, optional: string[], options: AwaitDestinationsOptions): Promise<string[]> {
  const { clock, signal } = options;
  const startUs = clock.nowUs();
  for (;;) {
    const found = await driver.exists(optional);
    const present = optional.filter((d) => found.has(d));
    if (present.length === optional.length || signal?.aborted || (clock.nowUs() - startUs) / 1000 >= COMPANION_GRACE_MS) return present;
    await clock.sleep(100, signal);
  }
}
