/**
 * amqplib errors → payq's error hierarchy. amqplib is given the connection settings as an
 * object, never the URL string, so its messages should not contain the password; still, where an
 * error is mapped here its text (and the cause --debug shows) is scrubbed of the URL's userinfo,
 * and the broker is named by `url.redacted` only.
 */
import {
  AuthError,
  BrokerUnavailableError,
  DeliveryError,
  PayqError,
  TopologyError,
  messageOf,
} from '../../errors.js';
import { redactUrlsIn, scrubClientError, scrubClientText } from '../../secrets.js';
import { tlsProblem } from '../tls.js';
import type { BrokerUrl } from '../url.js';

/** AMQP reply codes payq reacts to. */
export const ReplyCode = {
  connectionForced: 320,
  noRoute: 312,
  accessRefused: 403,
  notFound: 404,
  resourceLocked: 405,
  preconditionFailed: 406,
  notAllowed: 530,
} as const;

const SOCKET_CODES: Record<string, string> = {
  ECONNREFUSED: 'connection refused',
  ETIMEDOUT: 'connection timed out',
  ENOTFOUND: 'host not found',
  EAI_AGAIN: 'host name lookup failed',
  EHOSTUNREACH: 'host unreachable',
  ENETUNREACH: 'network unreachable',
  ECONNRESET: 'connection reset',
  EPIPE: 'connection reset',
};

/**
 * The broker's own sentence from an amqplib close error (`… with message "NOT_FOUND - …"`),
 * scrubbed of the URL's userinfo when the URL is given (structurally otherwise).
 */
export function serverText(err: unknown, url?: BrokerUrl): string {
  if (url) scrubClientError(err, url);
  const text = messageOf(err);
  const m = /with message "(.*)"\s*$/s.exec(text);
  const sentence = m ? m[1]! : text;
  return url ? scrubClientText(sentence, url) : redactUrlsIn(sentence);
}

/** The AMQP reply code of a channel/connection close error, when amqplib recorded one. */
export function replyCode(err: unknown): number | undefined {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'number' ? code : undefined;
}

export function connectError(err: unknown, url: BrokerUrl, vhost: string): PayqError {
  if (err instanceof PayqError) return err;
  scrubClientError(err, url);
  const text = scrubClientText(messageOf(err), url);
  const code = (err as { code?: unknown } | null)?.code;
  const where = `RabbitMQ at ${url.redacted}`;
  if (/ACCESS.REFUSED/.test(text)) {
    return new AuthError(`${where} refused the login of user '${url.username ?? 'guest'}'`, {
      cause: err,
      hint: 'check the user name and password in the URL (percent-encode special characters)',
    });
  }
  // amqplib reports the server's Close during connection.open only as this; RabbitMQ sends it
  // for a missing vhost and for a user without permission on it, and the two can't be told
  // apart here, so both are an AuthError (exit code 3 either way).
  if (/Expected ConnectionOpenOk; got <ConnectionClose/.test(text)) {
    return new AuthError(`${where} refused to open virtual host '${vhost}' for user '${url.username ?? 'guest'}': it does not exist or the user has no permission on it`, {
      cause: err,
      hint: "the vhost is the URL path ('/' is written %2F or left empty); see rabbitmqctl list_vhosts / list_permissions",
    });
  }
  // amqplib's own connect timeout carries no code, only this text.
  const socketCode = typeof code === 'string' ? code : /ETIMEDOUT/.test(text) ? 'ETIMEDOUT' : undefined;
  if (socketCode && SOCKET_CODES[socketCode]) {
    return new BrokerUnavailableError(`cannot reach ${where}: ${SOCKET_CODES[socketCode]}`, {
      cause: err,
      retriable: true,
      hint: 'is RabbitMQ running and listening on that host and port?',
    });
  }
  const tls = tlsProblem(err, url.tls);
  if (tls) return new BrokerUnavailableError(`${tls.what}: ${where} (${typeof code === 'string' ? code : text})`, { cause: err, hint: tls.hint });
  if (typeof code === 'string' && (code.startsWith('ERR_SSL') || code.startsWith('ERR_TLS'))) {
    return new BrokerUnavailableError(`TLS handshake with ${where} failed (${code})`, {
      cause: err,
      hint: 'amqps:// needs the TLS port (5671 by default); ?ca=FILE for a private CA',
    });
  }
  return new BrokerUnavailableError(`cannot connect to ${where}: ${text}`, { cause: err, retriable: true });
}

/** The connection ended without payq closing it. */
export function connectionLost(url: BrokerUrl, cause: unknown): BrokerUnavailableError {
  const why = cause === undefined ? 'the socket closed' : serverText(cause, url);
  return new BrokerUnavailableError(`lost the connection to RabbitMQ at ${url.redacted}: ${why}`, {
    cause,
    retriable: true,
  });
}

/**
 * A failed AMQP operation on a channel (declare, bind, consume). `what` says what payq was doing,
 * e.g. "declare queue 'payments'".
 */
export function operationError(err: unknown, what: string, url: BrokerUrl, lost?: PayqError): PayqError {
  if (err instanceof PayqError) return err;
  const code = replyCode(err);
  const text = serverText(err, url);
  switch (code) {
    case ReplyCode.accessRefused:
      return new AuthError(`RabbitMQ at ${url.redacted} refused to ${what}: ${text}`, {
        cause: err,
        hint: "the user needs configure/write/read permissions on the vhost (rabbitmqctl set_permissions)",
      });
    case ReplyCode.notFound:
      return new TopologyError(`cannot ${what}: ${text}`, {
        cause: err,
        hint: 'declare the destinations first (payq produce declares them)',
      });
    case ReplyCode.preconditionFailed:
      return new TopologyError(`cannot ${what}: it already exists with different settings (${text})`, {
        cause: err,
        hint: 'delete it (rabbitmqctl delete_queue NAME) or declare it the way it was first declared',
      });
    case ReplyCode.resourceLocked:
      return new TopologyError(`cannot ${what}: ${text}`, { cause: err });
    default:
      if (lost) return lost;
      return new BrokerUnavailableError(`RabbitMQ at ${url.redacted} failed to ${what}: ${text}`, {
        cause: err,
        retriable: true,
      });
  }
}

export function nackedError(destination: string, count: number, total: number): DeliveryError {
  return new DeliveryError(`RabbitMQ rejected ${count} of ${total} message(s) sent to '${destination}' (basic.nack)`, {
    retriable: true,
    hint: 'a queue length limit with overflow=reject-publish, or a broker-side failure; see the broker log',
  });
}

export function unroutableError(destination: string, count: number, total: number): DeliveryError {
  return new DeliveryError(`${count} of ${total} message(s) sent to '${destination}' were returned unroutable: the queue no longer exists or lost its binding`, {
    retriable: true,
    hint: 'the next send checks the queue again; re-declare the destination if it was deleted',
  });
}
