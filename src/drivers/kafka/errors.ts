/**
 * kafkajs errors → payq's error hierarchy. kafkajs wraps the real failure (a refused socket, a
 * broker error code) in retry and "non-retriable" wrappers, so the decision looks at the whole
 * `cause` chain (and the `errors` of an aggregate), not at the outer error's class.
 */
import {
  AuthError,
  BrokerUnavailableError,
  DeliveryError,
  InternalError,
  isPayqError,
  messageOf,
  TopologyError,
  type PayqError,
} from '../../errors.js';
import { scrubClientError, scrubClientText, urlForErrors, type UrlForErrors } from '../../secrets.js';
import { tlsProblem } from '../tls.js';

export type KafkaOperation = 'connect' | 'declare' | 'send' | 'subscribe' | 'commit' | 'dead-letter';

const OPERATION_TEXT: Record<KafkaOperation, string> = {
  connect: 'connecting',
  declare: 'declaring topics',
  send: 'sending',
  subscribe: 'subscribing',
  commit: 'committing offsets',
  'dead-letter': 'dead-lettering',
};

/** kafkajs error classes that mean "no usable connection to the cluster". */
const UNAVAILABLE_NAMES = new Set([
  'KafkaJSConnectionError',
  'KafkaJSConnectionClosedError',
  'KafkaJSRequestTimeoutError',
  'KafkaJSNoBrokerAvailableError',
  'KafkaJSBrokerNotFound',
  'KafkaJSGroupCoordinatorNotFound',
]);

/** Socket / DNS / TLS codes from Node. */
const UNAVAILABLE_CODES = new Set([
  'ECONNREFUSED',
  'ECONNRESET',
  'ETIMEDOUT',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EPIPE',
  'EPROTO',
  'ERR_SSL_WRONG_VERSION_NUMBER',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'SELF_SIGNED_CERT_IN_CHAIN',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'CERT_HAS_EXPIRED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);

/** Broker error codes (kafkajs `type`) for refused credentials or missing ACLs. */
const AUTH_TYPES = new Set([
  'SASL_AUTHENTICATION_FAILED',
  'ILLEGAL_SASL_STATE',
  'UNSUPPORTED_SASL_MECHANISM',
  'TOPIC_AUTHORIZATION_FAILED',
  'GROUP_AUTHORIZATION_FAILED',
  'CLUSTER_AUTHORIZATION_FAILED',
  'TRANSACTIONAL_ID_AUTHORIZATION_FAILED',
  'DELEGATION_TOKEN_AUTH_DISABLED',
]);

/** Broker error codes for a destination that is missing or cannot be created as asked. */
const TOPOLOGY_TYPES = new Set([
  'UNKNOWN_TOPIC_OR_PARTITION',
  'UNKNOWN_TOPIC_ID',
  'INVALID_TOPIC_EXCEPTION',
  'INVALID_PARTITIONS',
  'INVALID_REPLICATION_FACTOR',
  'INVALID_REPLICA_ASSIGNMENT',
  'INVALID_CONFIG',
  'POLICY_VIOLATION',
  'TOPIC_DELETION_DISABLED',
]);

/**
 * Broker error codes for a partition that has no usable leader right now: a broker restarting
 * (its partitions come back one by one after a crash), a leader election under way. The cluster
 * answers, but cannot take writes for that partition yet.
 */
const LEADERLESS_TYPES = new Set(['NOT_LEADER_FOR_PARTITION', 'LEADER_NOT_AVAILABLE']);

/** Errors thrown by JavaScript itself: a bug (ours or kafkajs'), never the broker's doing. */
const BUG_NAMES = new Set(['TypeError', 'RangeError', 'ReferenceError', 'SyntaxError']);

interface ErrorLike {
  name?: unknown;
  message?: unknown;
  type?: unknown;
  code?: unknown;
  retriable?: unknown;
  cause?: unknown;
  errors?: unknown;
}

/** The error, its causes and the members of aggregates, outermost first (cycle-safe). */
export function errorChain(err: unknown): ErrorLike[] {
  const out: ErrorLike[] = [];
  const seen = new Set<unknown>();
  const queue: unknown[] = [err];
  while (queue.length > 0 && out.length < 32) {
    const next = queue.shift();
    if (next === null || typeof next !== 'object' || seen.has(next)) continue;
    seen.add(next);
    const e = next as ErrorLike;
    out.push(e);
    if (e.cause !== undefined) queue.push(e.cause);
    if (Array.isArray(e.errors)) queue.push(...(e.errors as unknown[]));
  }
  return out;
}

function str(v: unknown): string | undefined {
  return typeof v === 'string' ? v : undefined;
}

/** The most specific message: the innermost error that has one, without kafkajs' wrappers. */
function innermostMessage(chain: ErrorLike[], fallback: unknown): string {
  for (let i = chain.length - 1; i >= 0; i--) {
    const message = str(chain[i]!.message);
    if (message) return message;
  }
  return messageOf(fallback);
}

export type KafkaErrorKind = 'auth' | 'unavailable' | 'topology' | 'bug' | 'other';

/** What kind of failure a kafkajs error is, whatever wrappers it arrived in. */
export function classifyKafkaError(err: unknown): KafkaErrorKind {
  const chain = errorChain(err);
  const has = (test: (e: ErrorLike) => boolean) => chain.some(test);
  if (has((e) => e.name === 'KafkaJSSASLAuthenticationError' || AUTH_TYPES.has(str(e.type) ?? ''))) return 'auth';
  if (has((e) => TOPOLOGY_TYPES.has(str(e.type) ?? '') || e.name === 'KafkaJSTopicMetadataNotLoaded')) return 'topology';
  if (
    has(
      (e) =>
        UNAVAILABLE_NAMES.has(str(e.name) ?? '') ||
        UNAVAILABLE_CODES.has(str(e.code) ?? '') ||
        // kafkajs throws a plain Error when a broker never answered its ApiVersions request.
        e.message === 'Broker not connected',
    )
  ) {
    return 'unavailable';
  }
  const root = chain[chain.length - 1];
  if (root && BUG_NAMES.has(str(root.name) ?? '')) return 'bug';
  return 'other';
}

/** The failure was a partition without a leader (LEADERLESS_TYPES), whatever wrappers it arrived in. */
export function isLeaderless(err: unknown): boolean {
  return errorChain(err).some((e) => LEADERLESS_TYPES.has(str(e.type) ?? ''));
}

/** kafkajs marks errors retriable; its retry wrapper is not, but what it wraps may be. */
function rootRetriable(chain: ErrorLike[]): boolean {
  for (let i = chain.length - 1; i >= 0; i--) {
    const r = chain[i]!.retriable;
    if (typeof r === 'boolean') return r;
  }
  return false;
}

export interface KafkaErrorContext {
  operation: KafkaOperation;
  /** The parsed broker URL (its userinfo is scrubbed from kafkajs' text), or its redacted form. */
  url: UrlForErrors;
  /** Topic(s) or group the operation was about, for the message. */
  subject?: string;
  /** A send that may have reached the broker before it failed (PayqErrorOptions.unconfirmed). */
  unconfirmed?: boolean;
}

/**
 * Maps any failure of a Kafka operation into the payq hierarchy. Messages name the redacted URL,
 * and kafkajs' errors (kept as the cause, shown by --debug) are scrubbed of the URL's userinfo
 * first, so a password can't leak even if kafkajs echoed one.
 */
export function mapKafkaError(err: unknown, ctx: KafkaErrorContext): PayqError {
  if (isPayqError(err)) return err;
  const { shown, secrets } = urlForErrors(ctx.url);
  scrubClientError(err, secrets);
  const chain = errorChain(err);
  const kind = classifyKafkaError(err);
  const about = ctx.subject ? ` (${ctx.subject})` : '';
  const detail = scrubClientText(innermostMessage(chain, err), secrets);
  const doing = OPERATION_TEXT[ctx.operation];
  const text = (what: string) => `kafka ${shown}: ${what}${about}: ${detail}`;

  switch (kind) {
    case 'auth':
      return new AuthError(text(`the broker refused our credentials or permissions while ${doing}`), {
        cause: err,
        hint: 'check the user and password in the URL and ?sasl=plain|scram-sha-256|scram-sha-512, and the ACLs',
      });
    case 'unavailable': {
      const tls = ctx.operation === 'connect' ? tlsProblem(err, typeof ctx.url !== 'string' && (ctx.url as { tls?: boolean }).tls === true) : undefined;
      if (tls) return new BrokerUnavailableError(text(tls.what), { cause: err, hint: tls.hint });
      return new BrokerUnavailableError(text(`broker unreachable while ${doing}`), {
        cause: err,
        retriable: true,
        unconfirmed: ctx.unconfirmed ?? false,
        hint: 'is Kafka running (npm run brokers:up)? Does its listener need TLS (kafkas://) or SASL (user:password@…)?',
      });
    }
    case 'topology':
      return new TopologyError(text(`topic missing or not creatable while ${doing}`), {
        cause: err,
        hint: 'declare the topics first (partitions, replication) or check the topic name',
      });
    case 'bug':
      return new InternalError(text(`unexpected failure while ${doing}`), { cause: err });
    case 'other':
      break;
  }
  switch (ctx.operation) {
    case 'send':
    case 'dead-letter':
    case 'commit':
      return new DeliveryError(text(`not acknowledged while ${doing}`), { cause: err, retriable: rootRetriable(chain), unconfirmed: ctx.unconfirmed ?? false });
    case 'declare':
      return new TopologyError(text(`failed while ${doing}`), { cause: err });
    case 'connect':
    case 'subscribe':
      return new BrokerUnavailableError(text(`failed while ${doing}`), { cause: err, retriable: rootRetriable(chain) });
  }
}
