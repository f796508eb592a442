/**
 * The defaults of the core runs that `--help` also shows, in a module that imports nothing, so
 * the command descriptions (src/cli/commands/*.command.ts) can state them without loading the
 * runs themselves. Each core module re-exports its own.
 */

export const WORKER_DEFAULTS = { prefetch: 64, seed: 0, failures: true, timeScale: 1, partitions: 6 } as const;

export const BENCH_DEFAULTS = {
  durationMs: 10_000,
  warmupMs: 2_000,
  producers: 1,
  consumers: WORKER_DEFAULTS.prefetch,
  drainTimeoutMs: 30_000,
  quietMs: 3_000,
  idleTimeoutMs: 10_000,
  startTimeoutMs: 300_000,
} as const;

export const REPLAY_DEFAULTS = {
  maxReplays: 3,
  maxBytes: 1024 * 1024,
  idleTimeoutMs: 3000,
  group: 'payq-replay',
  window: 10_000,
} as const;

/** How long consume waits for a missing destination. */
export const DEFAULT_START_TIMEOUT_MS = 60_000;
