/**
 * The one error hierarchy. Every failure that reaches the CLI is a PayqError carrying the exit
 * code of README "Exit codes"; drivers map their client's errors into these classes, and the CLI entry
 * is the only place that turns one into a process exit.
 */

export const ExitCode = {
  ok: 0,
  internal: 1,
  usage: 2,
  broker: 3,
  data: 4,
  threshold: 5,
  interrupted: 130,
} as const;
export type ExitCode = (typeof ExitCode)[keyof typeof ExitCode];

export interface PayqErrorOptions {
  cause?: unknown;
  hint?: string;
  retriable?: boolean;
  /**
   * A send that failed without the broker saying no: the connection went away while it waited
   * for the acknowledgement, so the broker may have stored it (counted as failed and reported as
   * unconfirmed, not lost: README "Failure drills").
   */
  unconfirmed?: boolean;
}

export class PayqError extends Error {
  readonly exitCode: ExitCode = ExitCode.internal;
  readonly retriable: boolean;
  readonly hint: string | undefined;
  readonly unconfirmed: boolean;

  constructor(message: string, options: PayqErrorOptions = {}) {
    super(message, options.cause === undefined ? undefined : { cause: options.cause });
    this.name = new.target.name;
    this.retriable = options.retriable ?? false;
    this.unconfirmed = options.unconfirmed ?? false;
    this.hint = options.hint;
  }
}

/** Bad flags or arguments. */
export class UsageError extends PayqError {
  override readonly exitCode = ExitCode.usage;
}

/** A bad URL, scenario file, input line or environment value. */
export class ConfigError extends PayqError {
  override readonly exitCode = ExitCode.usage;
}

/** The broker cannot be reached (refused, timed out, DNS). */
export class BrokerUnavailableError extends PayqError {
  override readonly exitCode = ExitCode.broker;
}

/** The broker refused our credentials or permissions. */
export class AuthError extends PayqError {
  override readonly exitCode = ExitCode.broker;
}

/** A destination that must exist does not, or cannot be declared as asked. */
export class TopologyError extends PayqError {
  override readonly exitCode = ExitCode.broker;
}

/** A send the broker did not acknowledge. */
export class DeliveryError extends PayqError {
  override readonly exitCode = ExitCode.data;
}

/** The run finished but its data is wrong (unacknowledged, lost, failed expectations). */
export class DataError extends PayqError {
  override readonly exitCode = ExitCode.data;
}

/** A `--assert` threshold was breached. */
export class ThresholdError extends PayqError {
  override readonly exitCode = ExitCode.threshold;
}

/** Ctrl-C / SIGTERM: in-flight work was drained and a partial result exists. */
export class InterruptedError extends PayqError {
  override readonly exitCode = ExitCode.interrupted;
}

/** A bug in payq. */
export class InternalError extends PayqError {
  override readonly exitCode = ExitCode.internal;
}

export function isPayqError(err: unknown): err is PayqError {
  return err instanceof PayqError;
}

/** Best-effort text of any thrown value, for wrapping foreign errors. */
export function messageOf(err: unknown): string {
  if (err instanceof Error) return err.message;
  return String(err);
}
