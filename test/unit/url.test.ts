import { describe, expect, it } from 'vitest';
import { ConfigError } from '../../src/errors.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { redact } from '../../src/secrets.js';

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
    expect(parseBrokerUrl('kafka://k').hosts[0]!.port).toBe(9092);
  });

  it('parses AMQP credentials and vhost, and redacts the password', () => {
    const u = parseBrokerUrl('amqp://user:s%40cret@rabbit:5673/payments');
    expect(u).toMatchObject({ scheme: 'amqp', username: 'user', password: 's@cret', path: 'payments' });
    expect(u.redacted).toBe('amqp://user:***@rabbit:5673/payments');
    expect(u.redacted).not.toContain('cret');
    expect(parseBrokerUrl('amqps://h').hosts[0]!.port).toBe(5671);
  });

  it('accepts memory:// with or without a name', () => {
    expect(parseBrokerUrl('memory://').scheme).toBe('memory');
    expect(parseBrokerUrl('memory://demo').hosts[0]!.host).toBe('demo');
  });

  it.each([
    ['no scheme', '127.0.0.1:9092', /has no scheme/],
    ['unknown scheme', 'redis://127.0.0.1', /unknown scheme 'redis'/],
    ['bad port', 'kafka://h:abc', /port 'abc' is not a number/],
    ['port out of range', 'kafka://h:70000', /out of range/],
    ['no host', 'kafka://', /names no host/],
    ['two AMQP hosts', 'amqp://a:1,b:2', /one host/],
  ])('rejects %s with one clear sentence', (_name, url, pattern) => {
    expect(() => parseBrokerUrl(url)).toThrow(ConfigError);
    expect(() => parseBrokerUrl(url)).toThrow(pattern);
  });

  it('never shows a password in its own error messages', () => {
    try {
      parseBrokerUrl('amqp://guest:hunter2@h:notaport');
    } catch (err) {
      expect((err as Error).message).not.toContain('hunter2');
      return;
    }
    throw new Error('expected an error');
  });

  it('redacts registered secrets anywhere in text', () => {
    parseBrokerUrl('amqp://bob:t0pS3cret!@h:5672');
    expect(redact('connect failed for bob with t0pS3cret! at amqp://bob:t0pS3cret!@h')).not.toContain('t0pS3cret');
    expect(redact('x amqp://u:p4ss@h y')).toBe('x amqp://u:***@h y');
  });
});
