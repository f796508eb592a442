import { ConfigError } from '../errors.js';
import { redact as redactUrl, registerSecret } from '../secrets.js';

export type BrokerScheme = 'memory' | 'kafka' | 'amqp' | 'nats' | 'zmq';

export interface HostPort {
  host: string;
  port: number;
}

/** A parsed, validated broker URL. `redacted` is the only form that may be printed. */
export interface BrokerUrl {
  scheme: BrokerScheme;
  /** The scheme as written (kafkas, amqps…): drivers read TLS from `tls`. */
  protocol: string;
  hosts: HostPort[];
  username: string | undefined;
  password: string | undefined;
  /** AMQP virtual host (decoded), memory:// instance name. */
  path: string;
  tls: boolean;
  params: Record<string, string>;
  redacted: string;
}

const SCHEMES: Record<string, { scheme: BrokerScheme; tls: boolean; defaultPort: number }> = {
  'memory:': { scheme: 'memory', tls: false, defaultPort: 0 },
  'kafka:': { scheme: 'kafka', tls: false, defaultPort: 9092 },
  'kafkas:': { scheme: 'kafka', tls: true, defaultPort: 9093 },
  'amqp:': { scheme: 'amqp', tls: false, defaultPort: 5672 },
  'amqps:': { scheme: 'amqp', tls: true, defaultPort: 5671 },
  'nats:': { scheme: 'nats', tls: false, defaultPort: 4222 },
  'zmq:': { scheme: 'zmq', tls: false, defaultPort: 5555 },
};

export const SUPPORTED_SCHEMES = Object.keys(SCHEMES).map((s) => s.replace(':', '://'));


function bad(input: string, why: string): ConfigError {
  return new ConfigError(`invalid broker URL '${redactUrl(input)}': ${why}`, {
    hint: `expected one of ${SUPPORTED_SCHEMES.join(', ')}, e.g. kafka://127.0.0.1:9092`,
  });
}

function parsePort(text: string, input: string, fallback: number): number {
  if (text === '') return fallback;
  if (!/^\d{1,5}$/.test(text)) throw bad(input, `port '${text}' is not a number`);
  const port = Number(text);
  if (port < 1 || port > 65535) throw bad(input, `port ${port} is out of range 1-65535`);
  return port;
}

function parseHostList(authority: string, input: string, defaultPort: number): HostPort[] {
  if (authority === '') return [];
  return authority.split(',').map((part) => {
    const m = /^(\[[0-9a-fA-F:.]+\]|[^:[\]]+)(?::(.*))?$/.exec(part);
    if (!m) throw bad(input, `'${part}' is not host:port`);
    const host = m[1]!.replace(/^\[|\]$/g, '');
    if (!/^[A-Za-z0-9._:-]+$/.test(host)) throw bad(input, `'${host}' is not a host name`);
    return { host, port: parsePort(m[2] ?? '', input, defaultPort) };
  });
}

/**
 * Parses a broker URL. WHATWG URL can't hold Kafka's comma-separated bootstrap list, so the
 * authority is split by hand; the rest goes through URL for percent-decoding.
 */
export function parseBrokerUrl(input: string): BrokerUrl {
  const text = input.trim();
  const schemeMatch = /^([a-z][a-z0-9+.-]*:)\/\//i.exec(text);
  if (!schemeMatch) throw bad(text, 'it has no scheme://');
  const protocol = schemeMatch[1]!.toLowerCase();
  const known = SCHEMES[protocol];
  if (!known) throw bad(text, `unknown scheme '${protocol.slice(0, -1)}'`);

  const rest = text.slice(schemeMatch[0].length);
  const slash = rest.search(/[/?#]/);
  const authorityWithUser = slash === -1 ? rest : rest.slice(0, slash);
  const tail = slash === -1 ? '' : rest.slice(slash);
  const at = authorityWithUser.lastIndexOf('@');
  const userinfo = at === -1 ? undefined : authorityWithUser.slice(0, at);
  const authority = at === -1 ? authorityWithUser : authorityWithUser.slice(at + 1);

  let username: string | undefined;
  let password: string | undefined;
  if (userinfo !== undefined) {
    const colon = userinfo.indexOf(':');
    try {
      username = decodeURIComponent(colon === -1 ? userinfo : userinfo.slice(0, colon));
      password = colon === -1 ? undefined : decodeURIComponent(userinfo.slice(colon + 1));
    } catch {
      throw bad(text, 'credentials are not valid percent-encoding');
    }
    if (password) registerSecret(password);
  }

  const hosts = parseHostList(authority, text, known.defaultPort);
  if (known.scheme !== 'memory' && hosts.length === 0) throw bad(text, 'it names no host');
  if (known.scheme === 'amqp' && hosts.length > 1) throw bad(text, 'AMQP takes one host');

  let parsedTail: URL;
  try {
    parsedTail = new URL(`x://h${tail}`);
  } catch {
    throw bad(text, 'its path or query is malformed');
  }
  const params: Record<string, string> = {};
  parsedTail.searchParams.forEach((value, key) => {
    params[key] = value;
  });
  let path: string;
  try {
    path = decodeURIComponent(parsedTail.pathname.replace(/^\//, ''));
  } catch {
    throw bad(text, 'its path is not valid percent-encoding');
  }
  const tls = known.tls || params['tls'] === 'true';

  const shownUser = userinfo === undefined ? '' : `${encodeURIComponent(username ?? '')}${password === undefined ? '' : ':***'}@`;
  const redacted = `${protocol}//${shownUser}${authority}${tail}`;
  return { scheme: known.scheme, protocol, hosts, username, password, path, tls, params, redacted };
}
