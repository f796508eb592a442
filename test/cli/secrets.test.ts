/**
 * Secrets are redacted by structure (README "Brokers and URLs"): user names and passwords that
 * are common words never change the data payq prints or writes, and a password never reaches any
 * output, error, --debug trace or report — also when the broker refuses it or the URL cannot be
 * parsed. Against the real brokers.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable, NATS_URL, uniqueName } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli, type CliResult } from '../helpers/cli.js';
import { scenarioCopy } from '../helpers/scenario-file.js';
import { deleteDestinations } from '../helpers/cleanup.js';

/** user:password pairs made of words that occur in payq's own events, headers and reports. */
const WORDY = [
  ['order', 'placed'],
  ['guest', 'latency'],
  ['event', 'payment'],
  ['data', 'checkout'],
] as const;

function withCredentials(url: string, user: string, pass: string): string {
  return url.replace(/^([a-z]+:\/\/)(?:[^@/]*@)?/, `$1${user}:${pass}@`);
}

function expectNever(r: CliResult, secrets: string[]): void {
  for (const secret of secrets) {
    expect(r.stdout, `stdout holds ${secret}`).not.toContain(secret);
    expect(r.stderr, `stderr holds ${secret}`).not.toContain(secret);
  }
}

const amqpUp = await brokerAvailable(AMQP_URL);
const natsUp = await brokerAvailable(NATS_URL);

// Each describe's cases run side by side: each bench has a scenario copy (topics, groups) of its own.
describe.concurrent('credentials made of common words never rewrite data', () => {
  it.each(WORDY)('produce --dry-run with %s:%s prints the same bytes as without credentials', async (user, pass) => {
    const args = ['produce', '--dry-run', '--lifecycle', '--count', '40', '--seed', '11'];
    for (const base of ['nats://127.0.0.1:4222', 'kafka://127.0.0.1:9092', 'amqp://127.0.0.1:5672']) {
      const plain = await runCli([...args, '--broker', base]);
      const secret = await runCli([...args, '--broker', withCredentials(base, user, pass)]);
      expect(plain.code).toBe(0);
      expect(secret.code).toBe(0);
      // The words are in the data (so a search-and-replace would have changed it)…
      for (const word of [user, pass]) if (['order', 'placed', 'event', 'payment', 'data'].includes(word)) expect(plain.stdout).toContain(word);
      // …and the data is the same bytes.
      expect(secret.stdout).toBe(plain.stdout);
      expect(secret.stdout).not.toContain('***');
    }
  });

  it.skipIf(!amqpUp)('consume on RabbitMQ as guest prints destinations and events unchanged; produce --json reports the URL redacted', async () => {
    const destination = uniqueName('guest.order.latency');
    const produced = await runCli(['produce', '--broker', AMQP_URL, '--topic', destination, '--lifecycle', '--count', '5', '--seed', '5', '--json']);
    expect(produced.code, produced.stderr).toBe(0);
    const report = JSON.parse(produced.stdout) as Record<string, unknown>;
    expect(JSON.stringify(report)).toContain('amqp://guest:***@127.0.0.1:5672');
    expect(produced.stdout.match(/\*\*\*/g)).toHaveLength(1);

    const consumed = await runCli(['consume', '--broker', AMQP_URL, '--topic', destination, '--group', uniqueName('guest'), '--with-meta', '--limit', '200', '--idle-timeout', '3s']);
    expect(consumed.code, consumed.stderr).toBe(0);
    const lines = consumed.stdout.split('\n').filter(Boolean);
    expect(lines.length).toBeGreaterThan(5);
    expect(consumed.stdout).not.toContain('***');
    // The bodies are the very events the generator writes for that seed, not mangled copies.
    const dry = await runCli(['produce', '--dry-run', '--lifecycle', '--count', '5', '--seed', '5']);
    const bodies = new Set(dry.stdout.split('\n').filter(Boolean));
    expect(bodies.size).toBe(lines.length);
    for (const line of lines) {
      const m = JSON.parse(line) as { destination: string; event: unknown };
      expect(m.destination).toBe(destination);
      expect(bodies.has(JSON.stringify(m.event)), line).toBe(true);
    }
  }, 120_000);

  it.skipIf(!natsUp)('bench --json with password latency writes a report payq report can read, unchanged', async () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-secrets-'));
    const pipeline = scenarioCopy(uniqueName('secrets'));
    try {
      const file = path.join(dir, 'r.json');
      const broker = withCredentials(NATS_URL, 'guest', 'latency');
      const r = await runCli(['bench', '--broker', broker, '--scenario', pipeline.file, '--duration', '2s', '--rate', '50', '--json', file], { timeoutMs: 110_000 });
      expect([0, 4], r.stderr).toContain(r.code);
      const text = readFileSync(file, 'utf8');
      const report = JSON.parse(text) as { settings: { broker: string } };
      expect(report.settings.broker).toBe('nats://guest:***@127.0.0.1:4222');
      expect(text.match(/\*\*\*/g)).toHaveLength(1);
      expect(text).toContain('"latency');
      const shown = await runCli(['report', file, '--json']);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stdout).toContain('latency');
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await deleteDestinations(NATS_URL, pipeline.destinations);
    }
  }, 120_000);
});

describe.concurrent('a password never reaches any output', () => {
  it.skipIf(!amqpUp)('RabbitMQ refusing a wrong password: one line, exit 3, no password with or without --debug', async () => {
    const secret = 'wrongpass-order';
    const broker = `amqp://guest:${secret}@127.0.0.1:5672`;
    const plain = await runCli(['produce', '--broker', broker, '--count', '1']);
    expect(plain.code).toBe(3);
    expectOneErrorLine(plain.stderr, /refused the login of user 'guest'/);
    expect(plain.stderr).toContain('amqp://guest:***@127.0.0.1:5672');
    for (const args of [
      ['produce', '--broker', broker, '--count', '1', '--debug', '-v'],
      ['consume', '--broker', broker, '--topic', 'x', '--idle-timeout', '1s', '--debug', '--json'],
      ['bench', '--broker', broker, '--duration', '1s', '--debug', '--json', '/dev/null'],
    ]) {
      const r = await runCli(args);
      expect(r.code, r.stderr).toBe(3);
      expectNever(r, [secret, 'wrongpass', encodeURIComponent(secret)]);
    }
  }, 120_000);

  it.skipIf(!natsUp)('a successful run with -v, --debug and --json reports prints the URL only redacted', async () => {
    const secret = 'pw-order-latency-x9';
    const broker = withCredentials(NATS_URL, 'guest', secret);
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-secrets-'));
    const pipeline = scenarioCopy(uniqueName('secrets'));
    const topic = uniqueName('secrets.ok');
    try {
      const produced = await runCli(['produce', '--broker', broker, '--topic', topic, '--count', '3', '-v', '--debug', '--json']);
      expect(produced.code, produced.stderr).toBe(0);
      expect(produced.stdout + produced.stderr).toContain('nats://guest:***@127.0.0.1:4222');
      expectNever(produced, [secret]);
      const consumed = await runCli(['consume', '--broker', broker, '--topic', topic, '--group', uniqueName('g'), '--from-beginning', '--limit', '3', '--idle-timeout', '3s', '-v', '--debug']);
      expect(consumed.code, consumed.stderr).toBe(0);
      expectNever(consumed, [secret]);
      const file = path.join(dir, 'b.json');
      const md = path.join(dir, 'b.md');
      const bench = await runCli(['bench', '--broker', broker, '--scenario', pipeline.file, '--duration', '1s', '--rate', '20', '-v', '--json', file, '--markdown', md], { timeoutMs: 110_000 });
      expect([0, 4], bench.stderr).toContain(bench.code);
      expectNever(bench, [secret]);
      for (const f of [file, md]) expect(readFileSync(f, 'utf8')).not.toContain(secret);
    } finally {
      rmSync(dir, { recursive: true, force: true });
      await deleteDestinations(NATS_URL, [topic, ...pipeline.destinations]);
    }
  }, 180_000);

  describe('NATS refusing bad credentials (a nats-server of its own, with a user and password)', () => {
    let server: ChildProcess | undefined;
    let port = 0;
    beforeAll(async () => {
      port = await new Promise<number>((resolve) => {
        const s = net.createServer().listen(0, '127.0.0.1', () => {
          const p = (s.address() as net.AddressInfo).port;
          s.close(() => resolve(p));
        });
      });
      server = spawn('/usr/sbin/nats-server', ['-a', '127.0.0.1', '-p', String(port), '--user', 'payq', '--pass', 'right-secret'], { stdio: 'ignore' });
      for (let i = 0; i < 100; i++) {
        const up = await new Promise<boolean>((resolve) => {
          const c = net.connect(port, '127.0.0.1', () => resolve(true)).on('error', () => resolve(false));
          c.on('connect', () => c.destroy());
        });
        if (up) return;
        await new Promise((r) => setTimeout(r, 100));
      }
      throw new Error('nats-server did not start');
    });
    afterAll(() => {
      if (server?.pid) process.kill(server.pid);
    });

    it.each([
      ['a wrong password', 'payq', 'wrongpass-order'],
      ['an unknown user', 'checkout', 'payment-data-secret'],
    ])('%s: exit 3, one line, never the password, with or without --debug', async (_name, user, secret) => {
      const broker = `nats://${user}:${secret}@127.0.0.1:${port}`;
      const r = await runCli(['produce', '--broker', broker, '--count', '1']);
      expect(r.code, r.stderr).toBe(3);
      expectOneErrorLine(r.stderr, /refused our credentials/);
      expect(r.stderr).toContain(`nats://${user}:***@127.0.0.1:${port}`);
      expectNever(r, [secret]);
      const debug = await runCli(['produce', '--broker', broker, '--count', '1', '--debug', '-v']);
      expect(debug.code).toBe(3);
      expectNever(debug, [secret]);
    }, 60_000);

    it('a token refused: never printed', async () => {
      const r = await runCli(['produce', '--broker', `nats://:tok3n-latency-order@127.0.0.1:${port}`, '--count', '1', '--debug']);
      expect(r.code).toBe(3);
      expectNever(r, ['tok3n-latency-order']);
    }, 60_000);
  });

  it.each([
    ['unencoded / and # in the password', 'amqp://guest:p@ss:w/rd#x@127.0.0.1', ['p@ss', 'ss:w', 'rd#x', "'w'"]],
    ['unencoded ? in the password', 'kafka://order:placed?pr1vate@127.0.0.1:9092', ['placed', 'pr1vate']],
    ['a password where the port goes', 'amqp://guest:hunter2order/vhost', ['hunter2order']],
    ['bad percent-encoding', 'nats://u:latency%zzsecret@127.0.0.1:4222', ['latency', 'zzsecret']],
    ['no scheme', 'guest:s3cretword@127.0.0.1:5672', ['s3cretword']],
    ['unknown scheme', 'rabbitmq://guest:s3cretword@127.0.0.1:5672', ['s3cretword']],
  ])('an unparseable URL (%s) exits 2 naming the problem, echoing none of the userinfo', async (_name, broker, never) => {
    for (const extra of [[], ['--debug']]) {
      const r = await runCli(['produce', '--broker', broker, '--count', '1', ...extra]);
      expect(r.code).toBe(2);
      if (extra.length === 0) expectOneErrorLine(r.stderr, /invalid broker URL/);
      expectNever(r, never);
    }
    const env = await runCli(['produce', '--count', '1'], { env: { PAYQ_BROKER: broker } });
    expect(env.code).toBe(2);
    expectNever(env, never);
  });
});

describe.concurrent('URL parameters, paths and IPv6 literals', () => {
  it.each([
    ['kafka://127.0.0.1:9092?tls=ture', /tls='ture' must be true or false/],
    ['kafka://127.0.0.1:9092/extra/path', /kafka:\/\/ URLs take no path/],
    ['memory://?bogus=1', /unknown parameter 'bogus'; memory:\/\/ takes maxBacklog, maxMessageBytes, retain, maxLength/],
    ['amqp://guest:guest@127.0.0.1:5672?heartbeet=5', /unknown parameter 'heartbeet'; amqp:\/\/ takes exchange, heartbeat/],
    ['nats://127.0.0.1:4222/stream', /nats:\/\/ URLs take no path/],
    ['zmq://127.0.0.1:5999?tls=true', /unknown parameter 'tls'; zmq:\/\/ takes hub, hwm/],
  ])('%s is refused before anything is sent (exit 2)', async (broker, pattern) => {
    const r = await runCli(['produce', '--broker', broker, '--count', '1']);
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
    expect(r.stdout).toBe('');
  });

  it.each([
    ['kafka://[::1]:9092', /ECONNREFUSED ::1:9092/],
    ['amqp://guest:guest@[::1]:5672', /cannot reach RabbitMQ at amqp:\/\/guest:\*\*\*@\[::1\]:5672: connection refused/],
    ['nats://[::1]:4222', /NATS nats:\/\/\[::1\]:4222: server unreachable/],
  ])('%s reaches the address ::1 (nothing listens there: refused, not a DNS failure)', async (broker, pattern) => {
    const r = await runCli(['produce', '--broker', broker, '--count', '1']);
    expect(r.code).toBe(3);
    expectOneErrorLine(r.stderr, pattern);
    expect(r.stderr).not.toMatch(/ENOTFOUND|getaddrinfo/);
  }, 60_000);

  it.skipIf(!amqpUp)('amqp TLS on an IP address prints no DeprecationWarning, only the one error line', async () => {
    for (const broker of ['amqp://guest:guest@127.0.0.1:5672?tls=true', 'amqps://guest:guest@127.0.0.1:5672']) {
      const r = await runCli(['produce', '--broker', broker, '--count', '1']);
      expect(r.code).toBe(3);
      expect(r.stderr).not.toMatch(/DeprecationWarning|DEP0123|trace-deprecation/);
      expectOneErrorLine(r.stderr, /the server did not answer TLS on that port: RabbitMQ at amqps?:\/\/guest:\*\*\*@127\.0\.0\.1:5672/);
    }
  }, 60_000);
});
