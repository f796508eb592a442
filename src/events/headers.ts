/**
 * Header names, defined once. CloudEvents 1.0 binary mode: `ce_*` in the Kafka protocol binding,
 * `cloudEvents_*` application properties in the AMQP binding. payq's own headers are kebab-case.
 */
export type HeaderBinding = 'kafka' | 'amqp';

export const CE_ATTRIBUTES = ['specversion', 'id', 'type', 'source', 'time', 'subject'] as const;
export type CeAttribute = (typeof CE_ATTRIBUTES)[number];

export function ceHeader(binding: HeaderBinding, attribute: CeAttribute): string {
  return binding === 'kafka' ? `ce_${attribute}` : `cloudEvents_${attribute}`;
}

export const PayqHeader = {
  /** Epoch microseconds when payq handed the event to the client (the batch's send time). */
  publishedUs: 'payq-published-us',
  /** Epoch microseconds the rate limiter meant to send it (coordinated-omission correction). */
  intendedUs: 'payq-intended-us',
  /** Epoch microseconds the payment's first event was published; carried along the chain. */
  startUs: 'payq-start-us',
  /** The id of the event whose handling emitted this one (causation), for trace. */
  parentId: 'payq-parent-id',
  /** How many events the parent's handling emitted together (this one included), for trace. */
  siblings: 'payq-siblings',
  /** The event's position within its payment, from 0 (also the body's `sequence`, when it has one). */
  sequence: 'payq-sequence',
  /** The run that produced the event, so several runs can share destinations. */
  runId: 'payq-run-id',
  /** Dead-letter provenance. */
  dlqReason: 'payq-dlq-reason',
  dlqError: 'payq-dlq-error',
  originalDestination: 'payq-original-destination',
  attempts: 'payq-attempts',
  firstFailedAt: 'payq-first-failed-at',
  stage: 'payq-stage',
  replayCount: 'payq-replay-count',
} as const;

export const TRACEPARENT = 'traceparent';
export const CONTENT_TYPE = 'content-type';
export const JSON_CONTENT_TYPE = 'application/json';
