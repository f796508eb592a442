/**
 * nats.js errors → payq's error hierarchy. nats.js is given the servers and credentials as
 * options, never the URL; messages name the broker by `url.redacted`, and nats.js' errors (kept
 * as the cause, shown by --debug) are scrubbed of the URL's userinfo, so a password cannot leak.
 */
import { JetStreamApiError } from '@nats-io/jetstream';
import {
  AuthorizationError,
  ClosedConnectionError,
  ConnectionError,
  DrainingConnectionError,
  NoRespondersError,
  PermissionViolationError,
  TimeoutError,
  UserAuthenticationExpiredError,
} from '@nats-io/transport-node';
import {
  AuthError,
  BrokerUnavailableError,
  DeliveryError,
  isPayqError,
  messageOf,
  TopologyError,
  type PayqError,
} from '../../errors.js';
import { scrubClientError, scrubClientText, urlForErrors, type UrlForErrors } from '../../secrets.js';
import { tlsProblem } from '../tls.js';

export type NatsOperation = 'connect' | 'declare' | 'send' | 'subscribe' | 'dead-letter' | 'exists';

const DOING: Record<NatsOperation, string> = {
  connect: 'connecting',
  declare: 'declaring streams',
  send: 'publishing',
  subscribe: 'subscribing',
  'dead-letter': 'dead-lettering',
  exists: 'looking up streams',
};

/** JetStream API error codes payq reacts to (nats-server's errors.json). */
export const JsCode = {
  streamNotFound: 10059,
  consumerNotFound: 10014,
  streamNameInUse: 10058,
  consumerNameExists: 10013,
  consumerExists: 10148,
  subjectsOverlap: 10065,
  insufficientResources: 10023,
  storageResourcesExceeded: 10047,
  maxMessageSize: 10054,
} as const;

export function apiCode(err: unknown): number | undefined {
  return err instanceof JetStreamApiError ? err.code : undefined;
}

function chain(err: unknown): unknown[] {
  const out: unknown[] = [];
  let e: unknown = err;
  while (e !== undefined && e !== null && out.length < 8 && !out.includes(e)) {
    out.push(e);
    e = (e as { cause?: unknown }).cause;
  }
  return out;
}

function has(err: unknown, ...classes: Array<abstract new (...args: never[]) => Error>): boolean {
  return chain(err).some((e) => classes.some((c) => e instanceof c));
}

/** nats.js' JetStreamNotEnabled is not exported by @nats-io/jetstream: known by its name. */
function jetStreamNotEnabled(err: unknown): boolean {
  return chain(err).some((e) => (e as { name?: unknown }).name === 'JetStreamNotEnabled');
}

export interface NatsErrorContext {
  operation: NatsOperation;
  /** The parsed broker URL (its userinfo is scrubbed from nats.js' text), or its redacted form. */
  url: UrlForErrors;
  /** The destination(s) or group the operation was about. */
  subject?: string;
}

/** Any failure of a NATS operation as a PayqError. */
export function mapNatsError(err: unknown, ctx: NatsErrorContext): PayqError {
  if (isPayqError(err)) return err;
  const { shown, secrets } = urlForErrors(ctx.url);
  scrubClientError(err, secrets);
  const about = ctx.subject ? ` (${ctx.subject})` : '';
  const detail = scrubClientText(messageOf(err), secrets);
  const doing = DOING[ctx.operation];
  const text = (what: string) => `NATS ${shown}: ${what}${about}: ${detail}`;

  if (has(err, AuthorizationError, UserAuthenticationExpiredError)) {
    return new AuthError(text('the server refused our credentials'), {
      cause: err,
      hint: 'check the user and password in the URL (nats://user:pass@host:port, or nats://:TOKEN@host:port for a token)',
    });
  }
  if (has(err, PermissionViolationError)) {
    return new AuthError(text(`the server refused a permission while ${doing}`), {
      cause: err,
      hint: "the user needs publish/subscribe permissions on 'payq.>', '$JS.API.>', '$JS.ACK.>' and '_INBOX.>'",
    });
  }
  const tls = ctx.operation === 'connect' ? tlsProblem(err, typeof ctx.url !== 'string' && (ctx.url as { tls?: boolean }).tls === true) : undefined;
  if (tls) return new BrokerUnavailableError(text(tls.what), { cause: err, hint: tls.hint });
  if (has(err, ConnectionError, ClosedConnectionError, DrainingConnectionError)) {
    return new BrokerUnavailableError(text(`server unreachable while ${doing}`), {
      cause: err,
      retriable: true,
      hint: 'is nats-server running with JetStream (-js) on that host and port?',
    });
  }
  if (jetStreamNotEnabled(err) && ctx.operation === 'connect') {
    return new BrokerUnavailableError(text('JetStream is not enabled on this server'), {
      cause: err,
      hint: 'start nats-server with -js (or jetstream {} in its configuration)',
    });
  }
  // Publishing to a subject no stream holds: JetStream answers nobody (nats.js reports it as
  // "not enabled"; connect() checked that it is).
  if ((jetStreamNotEnabled(err) || has(err, NoRespondersError)) && (ctx.operation === 'send' || ctx.operation === 'dead-letter')) {
    return new TopologyError(text(`no stream holds the destination while ${doing}`), {
      cause: err,
      hint: 'declare the destination first (payq produce and worker do), or create a stream for its subjects payq.<destination>.*',
    });
  }
  const code = apiCode(err);
  if (code === JsCode.streamNotFound || code === JsCode.consumerNotFound) {
    return new TopologyError(text(`missing while ${doing}`), { cause: err, hint: 'declare the destination first' });
  }
  if (code === JsCode.maxMessageSize) {
    return new DeliveryError(text(`message larger than the stream allows while ${doing}`), { cause: err });
  }
  if (has(err, TimeoutError)) {
    // A publish whose PubAck did not come in time may well be stored: unconfirmed, not refused.
    if (ctx.operation === 'send' || ctx.operation === 'dead-letter') {
      return new DeliveryError(text(`no acknowledgement in time while ${doing}`), { cause: err, retriable: true, unconfirmed: true });
    }
    return new BrokerUnavailableError(text(`no answer in time while ${doing}`), { cause: err, retriable: true });
  }
  switch (ctx.operation) {
    case 'send':
    case 'dead-letter':
      return new DeliveryError(text(`not acknowledged while ${doing}`), { cause: err, retriable: true });
    case 'declare':
      return new TopologyError(text(`failed while ${doing}`), { cause: err });
    case 'connect':
    case 'subscribe':
    case 'exists':
      return new BrokerUnavailableError(text(`failed while ${doing}`), { cause: err, retriable: true });
  }
}
