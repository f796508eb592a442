/**
 * Broker URLs: parsed once, checked against what the scheme's driver declares it understands
 * (its schemes, hosts, path and URL parameters, in its folder's config.ts, listed by the
 * registry), and printable only through `redacted`. README "Brokers and URLs" documents them.
 */
import { ConfigError } from '../errors.js';
import { redactedUserinfo } from '../secrets.js';
import { descriptorFor, DRIVERS } from './registry.js';

/** A driver's main scheme (DriverUrlSpec.scheme): `memory`, `kafka`, `amqp`, … (registry.ts lists them). */
export type BrokerScheme = string;

export interface HostPort {
  /** A name or an IP address; an IPv6 literal without its brackets (`::1`). */
  host: string;
  port: number;
}

/** A parsed, validated broker URL. `redacted` is the only form that may be printed. */
export interface BrokerUrl {
  scheme: BrokerScheme;
  /** The scheme as written with its colon (`kafkas:`, `amqps:`…): drivers read TLS from `tls`. */
  protocol: string;
  hosts: HostPort[];
  username: string | undefined;
  password: string | undefined;
  /** The userinfo as written, percent-encoded (for scrubbing client error text). */
  rawUserinfo: string | undefined;
  /** AMQP virtual host (decoded), memory:// instance name. */
  path: string;
  tls: boolean;
  /** Only parameters the driver declares, each with a value of its declared type. */
  params: Record<string, string>;
  redacted: string;
}

/** One URL parameter a driver understands. */
export interface UrlParamSpec {
  name: string;
  type: 'boolean' | 'integer' | 'enum' | 'string';
  /** What it does, in a few words (README's URL table says more). */
  meaning: string;
  /** integer: the smallest and largest value (`orMinusOne`: -1 is accepted too, "unlimited"). */
  min?: number;
  max?: number;
  orMinusOne?: boolean;
  /** enum: the accepted values. */
  values?: readonly string[];
  ignoreCase?: boolean;
}

export interface SchemeSpec {
  /** As written before `://`. */
  name: string;
  tls: boolean;
  defaultPort: number;
}

/** What a driver's URLs may hold; anything else is refused with the list of what it accepts. */
export interface DriverUrlSpec {
  scheme: BrokerScheme;
  schemes: readonly SchemeSpec[];
  hosts: { min: number; max: number };
  /** Whether `user:password@` means anything to this broker. */
  credentials: boolean;
  /** What the path is (AMQP: the vhost); undefined when the driver uses no path. */
  path?: string;
  params: readonly UrlParamSpec[];
  /**
   * Whether another process can reach the same broker through this URL (false for memory://,
   * which lives inside one process): commands that only make sense across processes check this.
   */
  sharedAcrossProcesses: boolean;
}

export const SUPPORTED_SCHEMES = DRIVERS.flatMap((d) => d.url.schemes.map((s) => `${s.name}://`));

const ENCODE_HINT = 'percent-encode @ : / ? # % in a user name or password (%40 %3A %2F %3F %23 %25)';

function bad(shown: string, why: string, hint?: string): ConfigError {
  return new ConfigError(`invalid broker URL '${shown}': ${why}`, {
    hint: hint ?? `expected one of ${SUPPORTED_SCHEMES.join(', ')}, e.g. kafka://127.0.0.1:9092`,
  });
}

function findScheme(protocol: string): { driver: DriverUrlSpec; scheme: SchemeSpec } | undefined {
  for (const { url } of DRIVERS) {
    const scheme = url.schemes.find((s) => s.name === protocol);
    if (scheme) return { driver: url, scheme };
  }
  return undefined;
}

interface RawHost {
  host: string;
  portText: string | undefined;
}

/** `host[:port]` or `[v6]:port`, split by hand: WHATWG URL can't hold Kafka's bootstrap list. */
function splitHosts(authority: string): RawHost[] | string {
  if (authority === '') return [];
  const out: RawHost[] = [];
  for (const part of authority.split(',')) {
    const m = /^(?:\[([0-9A-Fa-f:.]+)\]|([^:[\]]+))(?::(.*))?$/.exec(part);
    if (!m) return `'${part}' is not host:port (an IPv6 address goes in brackets: [::1]:9092)`;
    const host = m[1] ?? m[2]!;
    if (m[1] !== undefined && !m[1].includes(':')) return `'[${m[1]}]' is not an IPv6 address`;
    if (m[2] !== undefined && !/^[A-Za-z0-9._-]+$/.test(host)) return `'${host}' is not a host name`;
    out.push({ host, portText: m[3] });
  }
  return out;
}

function checkParam(spec: UrlParamSpec, value: string): string | undefined {
  switch (spec.type) {
    case 'boolean':
      return value === 'true' || value === 'false' ? undefined : 'must be true or false';
    case 'integer': {
      const n = /^-?\d+$/.test(value) ? Number(value) : NaN;
      const min = spec.min ?? 0;
      const max = spec.max ?? Number.MAX_SAFE_INTEGER;
      if (Number.isSafeInteger(n) && ((n >= min && n <= max) || (spec.orMinusOne === true && n === -1))) return undefined;
      const range = max === Number.MAX_SAFE_INTEGER ? `of at least ${min}` : `from ${min} to ${max}`;
      return `must be a whole number ${range}${spec.orMinusOne ? ' (or -1)' : ''}`;
    }
    case 'enum': {
      const values = spec.values ?? [];
      const ok = spec.ignoreCase ? values.includes(value.toLowerCase()) : values.includes(value);
      return ok ? undefined : `must be one of ${values.join(', ')}`;
    }
    case 'string':
      return value === '' ? 'must not be empty' : undefined;
  }
}

/**
 * Parses a broker URL. Nothing of the userinfo is ever shown in an error: a URL whose userinfo
 * cannot be found for certain (an unencoded / ? # after it) is refused without echoing it.
 */
export function parseBrokerUrl(input: string): BrokerUrl {
  const text = input.trim();
  const schemeMatch = /^([a-z][a-z0-9+.-]*):\/\//i.exec(text);
  if (!schemeMatch) {
    // Without a scheme there is no telling where a password would be: show none of it.
    const shown = text.includes('@') ? `***@${text.slice(text.lastIndexOf('@') + 1)}` : text;
    throw bad(shown, 'it has no scheme://');
  }
  const protocol = schemeMatch[1]!.toLowerCase();
  const rest = text.slice(schemeMatch[0].length);
  const found = findScheme(protocol);
  if (!found) {
    throw bad(`${protocol}://${rest.includes('@') ? `***@${rest.slice(rest.lastIndexOf('@') + 1)}` : rest}`, `unknown scheme '${protocol}'`);
  }
  const { driver, scheme } = found;

  const slash = rest.search(/[/?#]/);
  const authorityWithUser = slash === -1 ? rest : rest.slice(0, slash);
  const tail = slash === -1 ? '' : rest.slice(slash);
  if (tail.includes('@')) {
    // `user:p/ss@host`, `user:pa#ss@host`: the userinfo holds a / ? or # unencoded, so where it
    // ends cannot be known; the part before the last @ is never echoed.
    throw bad(`${protocol}://***@${rest.slice(rest.lastIndexOf('@') + 1)}`, `its user name or password holds an unencoded / ? or # (${ENCODE_HINT})`, ENCODE_HINT);
  }
  const at = authorityWithUser.lastIndexOf('@');
  const rawUserinfo = at === -1 ? undefined : authorityWithUser.slice(0, at);
  const authority = at === -1 ? authorityWithUser : authorityWithUser.slice(at + 1);
  const shownUser = rawUserinfo === undefined ? '' : `${redactedUserinfo(rawUserinfo)}@`;
  const shown = `${protocol}://${shownUser}${authority}${tail}`;

  let username: string | undefined;
  let password: string | undefined;
  if (rawUserinfo !== undefined) {
    const colon = rawUserinfo.indexOf(':');
    try {
      username = decodeURIComponent(colon === -1 ? rawUserinfo : rawUserinfo.slice(0, colon));
      password = colon === -1 ? undefined : decodeURIComponent(rawUserinfo.slice(colon + 1));
    } catch {
      throw bad(`${protocol}://***@${authority}${tail}`, `its user name or password is not valid percent-encoding (${ENCODE_HINT})`, ENCODE_HINT);
    }
    if (!driver.credentials) throw bad(shown, `${protocol}:// takes no user name or password`, `write ${protocol}://host:port`);
  }

  const rawHosts = splitHosts(authority);
  if (typeof rawHosts === 'string') throw bad(shown, rawHosts);
  const hosts: HostPort[] = [];
  for (const { host, portText } of rawHosts) {
    if (portText === undefined || portText === '') {
      hosts.push({ host, port: scheme.defaultPort });
      continue;
    }
    if (!/^\d{1,5}$/.test(portText)) {
      // Not echoed: `amqp://guest:secret` (no @) puts a password where the port goes.
      const masked = `${protocol}://${shownUser}${authority.replace(`:${portText}`, ':***')}${tail}`;
      throw bad(masked, `the port of '${host}' is not a number (credentials go before an @: user:password@host:port)`);
    }
    const port = Number(portText);
    if (port < 1 || port > 65535) throw bad(shown, `port ${port} is out of range 1-65535`);
    hosts.push({ host, port });
  }
  if (hosts.length < driver.hosts.min) throw bad(shown, 'it names no host');
  if (hosts.length > driver.hosts.max) {
    throw bad(shown, `${protocol}:// takes ${driver.hosts.max === 1 ? 'one host' : `at most ${driver.hosts.max} hosts`}, not ${hosts.length}`);
  }

  let parsedTail: URL;
  try {
    parsedTail = new URL(`x://h${tail}`);
  } catch {
    throw bad(shown, 'its path or query is malformed');
  }
  if (tail.includes('#')) throw bad(shown, 'it has a #fragment, which no broker URL uses', ENCODE_HINT);
  let path: string;
  try {
    path = decodeURIComponent(parsedTail.pathname.replace(/^\//, ''));
  } catch {
    throw bad(shown, 'its path is not valid percent-encoding');
  }
  if (path !== '' && driver.path === undefined) {
    throw bad(shown, `${protocol}:// URLs take no path ('/${path}')`, `write ${protocol}://host:port${driver.params.length > 0 ? '?parameter=value' : ''}`);
  }

  const known = driver.params.map((p) => p.name);
  const accepts = known.length === 0 ? `${protocol}:// takes no parameters` : `${protocol}:// takes ${known.join(', ')}`;
  const params: Record<string, string> = {};
  for (const [name, value] of parsedTail.searchParams) {
    const spec = driver.params.find((p) => p.name === name);
    // The URL is shown without its query: an unknown parameter may well be a secret (?password=).
    if (!spec) throw bad(shown.replace(/\?.*$/, ''), `unknown parameter '${name}'; ${accepts}`, 'see README "Brokers and URLs"');
    if (name in params) throw bad(shown, `parameter '${name}' is given twice`);
    const why = checkParam(spec, value);
    if (why) throw bad(shown, `parameter ${name}='${value}' ${why}`, `${name}: ${spec.meaning}`);
    params[name] = value;
  }
  if (scheme.tls && params['tls'] === 'false') throw bad(shown, `${protocol}:// always uses TLS, so tls=false contradicts it`);
  const tls = scheme.tls || params['tls'] === 'true';

  return { scheme: driver.scheme, protocol: `${protocol}:`, hosts, username, password, rawUserinfo, path, tls, params, redacted: shown };
}

/** Whether another process reaches the same broker through `url` (README "Brokers and URLs"). */
export function sharedAcrossProcesses(url: BrokerUrl): boolean {
  return descriptorFor(url.scheme)?.url.sharedAcrossProcesses ?? true;
}
