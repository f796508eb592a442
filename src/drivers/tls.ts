/**
 * TLS from broker URL parameters, the same for every TLS-capable driver (README "TLS and SASL"):
 * `?ca=FILE` (PEM, trusted instead of the system CAs), `?cert=FILE&key=FILE` (mutual TLS), and
 * `?insecure=true` (no certificate check; the CLI warns). Files are read here; their contents
 * never reach a message.
 */
import { readFileSync } from 'node:fs';
import { ConfigError } from '../errors.js';
import type { BrokerUrl, UrlParamSpec } from './url.js';

export const TLS_URL_PARAMS: readonly UrlParamSpec[] = [
  { name: 'ca', type: 'string', meaning: 'PEM file with the CA certificate(s) to trust instead of the system ones' },
  { name: 'cert', type: 'string', meaning: 'PEM client certificate for mutual TLS (with key)' },
  { name: 'key', type: 'string', meaning: 'PEM private key of the client certificate (with cert)' },
  { name: 'insecure', type: 'boolean', meaning: "do not verify the broker's certificate (a warning says so; never in production)" },
];

/** What Node's tls.connect takes, as far as payq sets it. */
export interface TlsOptions {
  ca?: string;
  cert?: string;
  key?: string;
  rejectUnauthorized: boolean;
}

function readPem(url: BrokerUrl, param: 'ca' | 'cert' | 'key'): string | undefined {
  const file = url.params[param];
  if (file === undefined) return undefined;
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    const code = (err as NodeJS.ErrnoException).code;
    const why = code === 'ENOENT' ? 'no such file' : code === 'EACCES' ? 'permission denied' : code === 'EISDIR' ? 'is a folder' : (code ?? 'unreadable');
    throw new ConfigError(`--broker ?${param}=${file}: ${why}`);
  }
  if (!/-----BEGIN [A-Z0-9 ]+-----/.test(text)) throw new ConfigError(`--broker ?${param}=${file}: not a PEM file (expected -----BEGIN …-----)`);
  return text;
}

/**
 * The TLS options for a URL: undefined without TLS; with TLS, the system CAs unless `ca` says
 * otherwise. A TLS parameter on a plaintext URL is refused (it would silently do nothing).
 */
export function tlsOptionsFromUrl(url: BrokerUrl): TlsOptions | undefined {
  const given = TLS_URL_PARAMS.map((p) => p.name).filter((name) => url.params[name] !== undefined);
  if (!url.tls) {
    if (given.length > 0) {
      throw new ConfigError(`--broker ?${given[0]}= needs TLS, and ${url.redacted} is plaintext`, { hint: `use the TLS scheme (kafkas://, amqps://) or add ?tls=true` });
    }
    return undefined;
  }
  if ((url.params['cert'] === undefined) !== (url.params['key'] === undefined)) {
    throw new ConfigError(`--broker: ?cert= and ?key= go together (mutual TLS needs both)`);
  }
  const options: TlsOptions = { rejectUnauthorized: url.params['insecure'] !== 'true' };
  const ca = readPem(url, 'ca');
  const cert = readPem(url, 'cert');
  const key = readPem(url, 'key');
  if (ca !== undefined) options.ca = ca;
  if (cert !== undefined) options.cert = cert;
  if (key !== undefined) options.key = key;
  return options;
}

/** Lines the CLI prints before connecting: what weakens the connection's security. */
export function tlsWarnings(url: BrokerUrl): string[] {
  return url.tls && url.params['insecure'] === 'true'
    ? [`${url.redacted}: ?insecure=true — the broker's certificate is not verified; anyone on the path can read and change the traffic`]
    : [];
}

const CERTIFICATE_CODES = new Set([
  'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT',
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE',
  'UNABLE_TO_GET_ISSUER_CERT',
  'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED',
  'CERT_NOT_YET_VALID',
  'CERT_UNTRUSTED',
  'ERR_TLS_CERT_ALTNAME_INVALID',
]);
const CERTIFICATE_TEXT = /self[- ]signed certificate|unable to verify the first certificate|unable to get (local )?issuer certificate|certificate has expired|certificate is not yet valid|does not match certificate's altnames/i;
const NOT_TLS_CODES = new Set(['ERR_SSL_WRONG_VERSION_NUMBER', 'ERR_SSL_PACKET_LENGTH_TOO_LONG', 'ERR_SSL_HTTP_REQUEST']);
const CLOSED_IN_HANDSHAKE = /Closed connection|Socket closed abruptly during opening handshake/;

/** A TLS failure told apart from an unreachable broker, with what to do about it. */
export interface TlsProblem {
  kind: 'certificate' | 'protocol';
  /** "the broker's TLS certificate is not trusted", … */
  what: string;
  hint: string;
}

function chainOf(err: unknown): { code?: unknown; message?: unknown }[] {
  const out: { code?: unknown; message?: unknown }[] = [];
  let cur: unknown = err;
  for (let i = 0; i < 8 && cur !== null && typeof cur === 'object'; i++) {
    out.push(cur as { code?: unknown; message?: unknown });
    cur = (cur as { cause?: unknown }).cause ?? (cur as { originalError?: unknown }).originalError;
  }
  return out;
}

/**
 * Whether a connect failure was TLS's: an untrusted certificate, or one side speaking TLS to a
 * side that does not (a plaintext client on a TLS port, or the other way round).
 */
export function tlsProblem(err: unknown, tls: boolean): TlsProblem | undefined {
  const chain = chainOf(err);
  const codes = chain.map((e) => e.code).filter((c): c is string => typeof c === 'string');
  const texts = chain.map((e) => (typeof e.message === 'string' ? e.message : '')).join(' | ');
  if (codes.some((c) => CERTIFICATE_CODES.has(c)) || CERTIFICATE_TEXT.test(texts)) {
    return {
      kind: 'certificate',
      what: "the broker's TLS certificate is not trusted",
      hint: 'give its CA certificate with ?ca=FILE (PEM); ?insecure=true skips the check (test brokers only)',
    };
  }
  if (tls && (codes.some((c) => NOT_TLS_CODES.has(c)) || /wrong version number|packet length too long|disconnected before secure TLS connection|does not support 'tls'/i.test(texts))) {
    return { kind: 'protocol', what: 'the server did not answer TLS on that port', hint: 'is this the TLS port? a plaintext listener takes the plain scheme (kafka://, amqp://, nats:// without tls=true)' };
  }
  if (!tls && CLOSED_IN_HANDSHAKE.test(texts)) {
    return {
      kind: 'protocol',
      what: 'the server closed the connection during the handshake (a TLS or SASL listener?)',
      hint: 'for a TLS listener use the TLS scheme (kafkas://, amqps://) or ?tls=true, with ?ca=FILE for a private CA; for SASL put user:password@ in the URL',
    };
  }
  return undefined;
}
