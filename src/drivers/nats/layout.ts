/**
 * How payq's destinations and groups map onto JetStream.
 *
 * One stream per destination: `PAYQ_<name with . as _>` holding the subjects `payq.<name>.*`,
 * and a message of type T is published on `payq.<name>.<T>`. Why a stream each rather than one
 * stream with many subjects:
 * - a destination is then what it is on Kafka (a topic) and RabbitMQ (a queue): declared,
 *   checked (`exists`), read from the beginning and deleted on its own, with its own limits;
 * - a DLQ `<name>.dlq` is just another destination, so its retention can differ and an
 *   operator can purge it without touching the pipeline;
 * - a consumer only ever reads its own destination's messages (no filtered scan of a shared log).
 * The subject filter has exactly one token after the name, so `payq.orders.*` and
 * `payq.orders.dlq.*` never overlap (JetStream refuses overlapping streams) although the
 * destination names nest. The type token lets NATS tools filter by event type
 * (`nats sub 'payq.checkout.orders.order_placed'`), as RabbitMQ's routing key does.
 *
 * Streams are found by subject (`STREAM.NAMES` with a subject filter), so an operator may create
 * the stream for `payq.<name>.*` under any name and with any settings before payq runs; payq
 * uses it as it is. A durable consumer per (destination, group) is the consumer group.
 */
import { createHash } from 'node:crypto';
import { ConfigError } from '../../errors.js';

export const SUBJECT_PREFIX = 'payq';
export const STREAM_PREFIX = 'PAYQ_';

/** Kafka's rule for names, which payq's pipelines already follow: letters, digits, . _ - */
const DESTINATION = /^[A-Za-z0-9_-]+(\.[A-Za-z0-9_-]+)*$/;
/** Stream and consumer names become file names on the server; keep well below 255 bytes. */
const MAX_NAME = 200;

/** Throws a ConfigError when `name` cannot be a NATS destination. */
export function validateDestination(name: string): void {
  if (typeof name !== 'string' || name === '') throw new ConfigError('a NATS destination needs a name');
  if (name.length > MAX_NAME || !DESTINATION.test(name)) {
    throw new ConfigError(`'${name}' is not a valid NATS destination name`, {
      hint: `letters, digits, _ and - in dot-separated parts (no empty part, no * or >), at most ${MAX_NAME} characters`,
    });
  }
}

export function isValidDestination(name: string): boolean {
  return typeof name === 'string' && name.length <= MAX_NAME && DESTINATION.test(name);
}

/** `payq.<destination>.*`: every subject of the destination's stream. */
export function streamSubject(destination: string): string {
  return `${SUBJECT_PREFIX}.${destination}.*`;
}

/**
 * The last subject token for an event type. Only informational (the type travels in the
 * headers and body), so a type NATS can't carry as one token is folded into one.
 */
export function typeToken(type: string): string {
  const token = type.replace(/[^A-Za-z0-9_-]/g, '_');
  return token === '' ? '_' : token.slice(0, 100);
}

export function publishSubject(destination: string, type: string): string {
  return `${SUBJECT_PREFIX}.${destination}.${typeToken(type)}`;
}

/** The event-type token of a subject published by payq (`payq.<dest>.<type>`). */
export function typeTokenOf(subject: string): string {
  const dot = subject.lastIndexOf('.');
  return dot === -1 ? '_' : subject.slice(dot + 1);
}

/** A subject inside the destination's stream, for looking the stream up by subject. */
export function probeSubject(destination: string): string {
  return `${SUBJECT_PREFIX}.${destination}._`;
}

/** The name payq gives a destination's stream when it creates one. */
export function streamName(destination: string): string {
  return `${STREAM_PREFIX}${destination.replace(/\./g, '_')}`;
}

/**
 * The durable consumer of a group: readable when the group name is a valid consumer name,
 * otherwise folded and suffixed with a hash so that two groups never share a consumer.
 */
export function consumerName(group: string): string {
  const folded = group.replace(/[^A-Za-z0-9_-]/g, '_');
  if (folded === group && group !== '' && group.length <= MAX_NAME) return group;
  const hash = createHash('sha256').update(group).digest('hex').slice(0, 10);
  return `${folded.slice(0, MAX_NAME - 12) || 'group'}_${hash}`;
}

/** The consumer's description: which payq group it is (shown by `nats consumer info`). */
export function consumerDescription(group: string, destination: string): string {
  return `payq group '${group}' on '${destination}'`;
}
