import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { DRIVERS } from '../../src/drivers/registry.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { redactUrlsIn, scrubClientError, scrubClientText } from '../../src/secrets.js';

function refusal(url: string): string {
  try {
    parseBrokerUrl(url);
  } catch (err) {
    expect(err).toBeInstanceOf(ConfigError);
    expect((err as ConfigError).exitCode).toBe(2);
    const e = err as ConfigError;
    return `${e.message} (${e.hint ?? ''})`;
  }
  throw new Error(`expected ${url} to be refused`);
}

describe('broker URLs', () => {
  it('parses Kafka bootstrap lists, TLS and SASL parameters', () => {
    const u = parseBrokerUrl('kafka://a:9092,b:9093,[::1]:9094?sasl=scram-sha-256');
    expect(u.scheme).toBe('kafka');
    expect(u.hosts).toEqual([
      { host: 'a', port: 9092 },
      { host: 'b', port: 9093 },
      { host: '::1', port: 9094 },
    ]);
    expect(u.params['sasl']).toBe('scram-sha-256');
    expect(parseBrokerUrl('kafkas://k').tls).toBe(true);
    expect(parseBrokerUrl('kafka://k?tls=true').tls).toBe(true);
    expect(parseBrokerUrl('kafka://k?tls=false').tls).toBe(false);
    expect(parseBrokerUrl('kafka://k').hosts[0]!.port).toBe(9092);
  });

  it('parses AMQP credentials and vhost, and redacts the password', () => {
    const u = parseBrokerUrl('amqp://user:s%40cret@rabbit:5673/payments');
    expect(u).toMatchObject({ scheme: 'amqp', username: 'user', password: 's@cret', path: 'payments' });
    expect(u.redacted).toBe('amqp://user:***@rabbit:5673/payments');
    expect(u.redacted).not.toContain('cret');
    expect(parseBrokerUrl('amqps://h').hosts[0]!.port).toBe(5671);
  });

  it('hides a lone user part (a token) whole, and keeps a user name before a password', () => {
    expect(parseBrokerUrl('kafka://tok3n@h:9092').redacted).toBe('kafka://***@h:9092');
    expect(parseBrokerUrl('nats://:t0ken@h:4222').redacted).toBe('nats://:***@h:4222');
    expect(parseBrokerUrl('amqp://guest:guest@h').redacted).toBe('amqp://guest:***@h');
  });

  it('accepts memory:// with or without a name', () => {
    expect(parseBrokerUrl('memory://').scheme).toBe('memory');
    expect(parseBrokerUrl('memory://demo').hosts[0]!.host).toBe('demo');
  });

  it.each([
    ['kafka', 'kafka://[::1]:9092', 9092],
    ['kafka, default port', 'kafka://[::1]', 9092],
    ['amqp', 'amqp://guest:guest@[::1]:5672/%2F', 5672],
    ['nats', 'nats://[::1]:4222', 4222],
    ['zmq', 'zmq://[::1]:5999', 5999],
    ['full IPv6 form', 'nats://[2001:db8::1]:4222', 4222],
  ])('takes an IPv6 literal on %s, without its brackets', (_name, url, port) => {
    const u = parseBrokerUrl(url);
    expect(u.hosts[0]!.port).toBe(port);
    expect(u.hosts[0]!.host).toMatch(/^[0-9a-f:]+$/);
    expect(u.hosts[0]!.host).not.toContain('[');
  });

  it.each([
    ['no scheme', '127.0.0.1:9092', /has no scheme/],
    ['unknown scheme', 'redis://127.0.0.1', /unknown scheme 'redis'/],
    ['bad port', 'kafka://h:abc', /the port of 'h' is not a number/],
    ['port out of range', 'kafka://h:70000', /out of range/],
    ['no host', 'kafka://', /names no host/],
    ['two AMQP hosts', 'amqp://a:1,b:2', /amqp:\/\/ takes one host, not 2/],
    ['unclosed IPv6 bracket', 'kafka://[::1:9092', /is not host:port/],
    ['IPv6 without brackets', 'nats://::1:4222', /is not host:port/],
    ['bracketed non-IPv6', 'nats://[127.0.0.1]:4222', /is not an IPv6 address/],
    ['a fragment', 'nats://h:4222#x', /#fragment/],
    ['a parameter given twice', 'kafka://h?tls=true&tls=false', /'tls' is given twice/],
    ['kafkas with tls=false', 'kafkas://h?tls=false', /always uses TLS/],
    ['credentials on memory', 'memory://u:p@x', /memory:\/\/ takes no user name or password/],
  ])('rejects %s with one clear sentence', (_name, url, pattern) => {
    expect(refusal(url)).toMatch(pattern);
  });

  it.each([
    ['kafka', 'kafka://h:9092?tls=ture', /parameter tls='ture' must be true or false/],
    ['kafka sasl', 'kafka://u:p@h:9092?sasl=gssapi', /sasl='gssapi' must be one of plain, scram-sha-256, scram-sha-512/],
    ['amqp', 'amqp://h?heartbeat=-1', /heartbeat='-1' must be a whole number from 0 to 3600/],
    ['amqp tls', 'amqp://h?tls=yes', /tls='yes' must be true or false/],
    ['nats', 'nats://h?storage=disk', /storage='disk' must be one of file, memory/],
    ['nats maxDeliver', 'nats://h?maxDeliver=0', /maxDeliver='0' must be a whole number of at least 1 \(or -1\)/],
    ['zmq', 'zmq://h:5999?hwm=lots', /hwm='lots' must be a whole number of at least 1/],
    ['memory', 'memory://?retain=1.5', /retain='1.5' must be a whole number of at least 0/],
  ])('refuses a bad value on %s saying what is expected', (_name, url, pattern) => {
    expect(refusal(url)).toMatch(pattern);
  });

  it.each(DRIVERS.map((d) => [d.url.scheme, d.url] as const))('refuses a parameter %s:// does not declare, listing those it does', (_scheme, spec) => {
    const scheme = spec.schemes[0]!.name;
    const host = spec.hosts.min > 0 ? 'h:1' : 'x';
    const message = refusal(`${scheme}://${host}?bogus=1`);
    expect(message).toContain("unknown parameter 'bogus'");
    for (const p of spec.params) expect(message).toContain(p.name);
    // Names are case-sensitive, like the drivers' own docs.
    if (spec.params[0]) expect(refusal(`${scheme}://${host}?${spec.params[0].name.toUpperCase()}=1`)).toContain('unknown parameter');
  });

  it.each(DRIVERS.filter((d) => d.url.path === undefined).map((d) => [d.url.schemes[0]!.name] as const))('refuses a path on %s://, which uses none', (scheme) => {
    expect(refusal(`${scheme}://h:1/extra/path`)).toMatch(new RegExp(`${scheme}:// URLs take no path \\('/extra/path'\\)`));
    // A bare trailing slash is no path.
    expect(parseBrokerUrl(`${scheme}://h:1/`).path).toBe('');
  });

  it.each([
    ['an unencoded / and # in the password', 'amqp://guest:p@ss:w/rd#x@127.0.0.1', ['p@ss', 'ss:w', 'w/rd', 'rd#x', "'w'"]],
    ['an unencoded ? in the password', 'kafka://order:pla?ced@h:9092', ['pla', 'ced']],
    ['an unencoded # in the password', 'nats://u:latency#data@h:4222', ['latency', 'data']],
    ['a password where the host should be (no @)', 'amqp://guest:payment/vhost', ['payment']],
    ['bad percent-encoding', 'amqp://guest:checkout%zz@h', ['checkout', '%zz']],
    ['no scheme', 'guest:order@127.0.0.1:5672', ['order']],
    ['unknown scheme', 'rabbit://guest:event@127.0.0.1', ['event']],
  ])('never echoes any part of the userinfo of a URL it cannot parse: %s', (_name, url, never) => {
    const message = refusal(url);
    for (const fragment of never) expect(message).not.toContain(fragment);
  });

  it('every refusal after the userinfo was found names the URL with the password redacted', () => {
    const message = refusal('amqp://guest:order@127.0.0.1:5672?heartbeat=x');
    expect(message).toContain("'amqp://guest:***@127.0.0.1:5672?heartbeat=x'");
    expect(message).not.toContain('order');
  });

  it.each([
    ['amqp://h:5672/vh?password=s3cr3t-order', "'amqp://h:5672/vh'"],
    ['nats://h:4222?token=t0k3n-order&tls=true', "'nats://h:4222'"],
    ['kafka://h:9092?tls=true&sasl_password=s3cr3t-order', "'kafka://h:9092'"],
  ])('an unknown parameter (%s) is named, its value (perhaps a secret) never shown', (url, shown) => {
    const message = refusal(url);
    expect(message).toContain(shown);
    expect(message).toMatch(/unknown parameter '(password|token|sasl_password)'/);
    expect(message).not.toMatch(/s3cr3t|t0k3n/);
  });
});

describe('structural redaction', () => {
  it('redacts URL userinfo in a line, and leaves every other word alone', () => {
    expect(redactUrlsIn('x amqp://u:p4ss@h y')).toBe('x amqp://u:***@h y');
    expect(redactUrlsIn('at kafka://tok@h and nats://a:b@c')).toBe('at kafka://***@h and nats://a:***@c');
    const data = '{"event":"order_placed","destination":"newb.guest","latency":1,"mail":"a@b.c"}';
    expect(redactUrlsIn(data)).toBe(data);
  });

  it("scrubs a client error's text and stack of the URL's password, wherever the client echoed it", () => {
    const url = parseBrokerUrl('amqp://guest:order%2Fplaced@h:5672');
    const cause = new Error('login as guest with order/placed failed for amqp://guest:order%2Fplaced@h:5672');
    const outer = new Error('connect failed', { cause });
    scrubClientError(outer, url);
    for (const text of [cause.message, String(cause.stack)]) {
      expect(text).not.toContain('order/placed');
      expect(text).not.toContain('order%2Fplaced');
    }
    expect(cause.message).toBe('login as guest with *** failed for amqp://guest:***@h:5672');
    expect(scrubClientText('a NATS token t0ken-xyz leaked', parseBrokerUrl('nats://:t0ken-xyz@h'))).toBe('a NATS token *** leaked');
  });
});

describe("README's URL table", () => {
  const readme = readFileSync(new URL('../../README.md', import.meta.url), 'utf8');
  const section = readme.slice(readme.indexOf('## Brokers and URLs'), readme.indexOf('\n## ', readme.indexOf('## Brokers and URLs') + 5));
  const rows = section.split('\n').filter((line) => /^\| `[a-z]+:\/\//.test(line));

  it.each(DRIVERS.map((d) => [d.url.scheme, d.url] as const))('names every URL parameter %s:// declares, in its row', (_scheme, spec) => {
    const row = rows.find((r) => spec.schemes.some((s) => r.includes(`\`${s.name}://`)));
    expect(row, `a row for ${spec.scheme}://`).toBeDefined();
    for (const param of spec.params) expect(row, `${spec.scheme}:// ?${param.name}=`).toContain(`?${param.name}=`);
  });

  it('names no parameter a driver does not declare', () => {
    for (const row of rows) {
      const spec = DRIVERS.find((d) => d.url.schemes.some((s) => row.includes(`\`${s.name}://`)))!.url;
      const named = [...row.matchAll(/\?([A-Za-z_]+)=/g)].map((m) => m[1]!);
      for (const name of named) expect(spec.params.map((p) => p.name), `${spec.scheme}:// row names ?${name}=`).toContain(name);
    }
  });
});
