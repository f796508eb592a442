/**
 * TLS and SASL against brokers that require them (scripts/brokers.sh up opens them on loopback
 * with a throw-away CA): produce, consume and bench over each, and the three ways a secure
 * connection fails — refused credentials, an untrusted certificate, a plaintext client on a TLS
 * port — each one line, exit 3, with no password, key or certificate in any output.
 */
import { execFileSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { scenarioCopy } from '../helpers/scenario-file.js';

const USER = 'payq';
const PASSWORD = 'payq-secret';
const WRONG = 'not-the-order-password';

function caPath(): string {
  const fromEnv = process.env['PAYQ_TEST_CA'];
  if (fromEnv) return fromEnv;
  const status = execFileSync('bash', ['scripts/brokers.sh', 'status'], { encoding: 'utf8' });
  const path = /^ca: (\/\S+)$/m.exec(status)?.[1];
  if (!path || !existsSync(path)) throw new Error(`scripts/brokers.sh status names no CA certificate:\n${status}`);
  return path;
}

const CA = caPath();
const CA_TEXT = readFileSync(CA, 'utf8');
const CA_BODY = CA_TEXT.split('\n')[1]!; // a line of the certificate's base64
const KAFKA_SASL_SSL = process.env['PAYQ_TEST_KAFKA_SASL_SSL'] ?? '127.0.0.1:9093';
const KAFKA_SASL_PLAIN = process.env['PAYQ_TEST_KAFKA_SASL_PLAIN'] ?? '127.0.0.1:9094';
const NATS_TLS = process.env['PAYQ_TEST_NATS_TLS'] ?? '127.0.0.1:4223';
const AMQP_TLS = process.env['PAYQ_TEST_AMQP_TLS'] ?? '127.0.0.1:5671';
const ca = encodeURIComponent(CA);

interface Endpoint {
  name: string;
  good: string;
  /** Where the test cleans up, over the plaintext listener of the same broker. */
  plain: string;
  wrongPassword: string;
  untrusted?: string;
  plaintextOnTls?: string;
}

const ENDPOINTS: Endpoint[] = [
  {
    name: 'Kafka SASL_SSL + SCRAM-SHA-512',
    good: `kafkas://${USER}:${PASSWORD}@${KAFKA_SASL_SSL}?sasl=scram-sha-512&ca=${ca}`,
    plain: KAFKA_URL,
    wrongPassword: `kafkas://${USER}:${WRONG}@${KAFKA_SASL_SSL}?sasl=scram-sha-512&ca=${ca}`,
    untrusted: `kafkas://${USER}:${PASSWORD}@${KAFKA_SASL_SSL}?sasl=scram-sha-512`,
    plaintextOnTls: `kafka://${USER}:${PASSWORD}@${KAFKA_SASL_SSL}?sasl=scram-sha-512`,
  },
  {
    name: 'Kafka SASL_PLAINTEXT + PLAIN',
    good: `kafka://${USER}:${PASSWORD}@${KAFKA_SASL_PLAIN}?sasl=plain`,
    plain: KAFKA_URL,
    wrongPassword: `kafka://${USER}:${WRONG}@${KAFKA_SASL_PLAIN}?sasl=plain`,
  },
  {
    name: 'NATS TLS + user/password',
    good: `nats://${USER}:${PASSWORD}@${NATS_TLS}?tls=true&ca=${ca}`,
    plain: `nats://${USER}:${PASSWORD}@${NATS_TLS}?tls=true&ca=${ca}`,
    wrongPassword: `nats://${USER}:${WRONG}@${NATS_TLS}?tls=true&ca=${ca}`,
    untrusted: `nats://${USER}:${PASSWORD}@${NATS_TLS}?tls=true`,
  },
  {
    name: 'RabbitMQ TLS',
    good: `amqps://guest:guest@${AMQP_TLS}?ca=${ca}`,
    plain: AMQP_URL,
    wrongPassword: `amqps://guest:${WRONG}@${AMQP_TLS}?ca=${ca}`,
    untrusted: `amqps://guest:guest@${AMQP_TLS}`,
    plaintextOnTls: `amqp://guest:guest@${AMQP_TLS}`,
  },
];

function expectNoSecrets(text: string): void {
  for (const secret of [PASSWORD, WRONG, CA_BODY, 'BEGIN CERTIFICATE', 'PRIVATE KEY']) expect(text).not.toContain(secret);
}

const created: { url: string; names: string[]; groups: string[] }[] = [];
afterAll(async () => {
  // NATS TLS is a server of brokers.sh's own, thrown away with its state folder.
  for (const c of created) if (!c.url.startsWith('nats://')) await deleteDestinations(c.url, c.names, { groups: c.groups });
});

// Every case at once: each writes topics and groups of its own (the two Kafka endpoints are one
// cluster; each bench has a scenario copy of its own), and they mostly wait on the network.
describe.concurrent('TLS and SASL', () => {
describe.each(ENDPOINTS)('$name', (endpoint) => {
  it('produce, consume and bench work over it, and no secret reaches the output', async () => {
    await brokerAvailable(endpoint.good);
    const topic = uniqueName('tls');
    const group = `${topic}.reader`;
    const pipeline = scenarioCopy(uniqueName('tls-bench'));
    created.push({ url: endpoint.plain, names: [topic, ...pipeline.destinations], groups: [group, ...pipeline.groups] });
    const produced = await runCli(['produce', '--broker', endpoint.good, '--topic', topic, '--count', '200', '--seed', '5', '--json']);
    expect(produced.code, produced.stderr).toBe(0);
    expect(JSON.parse(produced.stdout)).toMatchObject({ acked: 200, failed: 0 });
    const consumed = await runCli(['consume', '--broker', endpoint.good, '--topic', topic, '--group', group, '--from-beginning', '--idle-timeout', '3s', '--json']);
    expect(consumed.code, consumed.stderr).toBe(0);
    expect(consumed.stdout.trim().split('\n')).toHaveLength(200);
    const bench = await runCli(['bench', '--broker', endpoint.good, '--scenario', pipeline.file, '--duration', '3s', '--warmup', '1s', '--rate', '100', '--json', '-v']);
    expect(bench.code, bench.stderr).toBe(0);
    const report = JSON.parse(bench.stdout);
    expect(report.loss).toBe(0);
    expect(report.payments.finished).toBeGreaterThan(100);
    for (const r of [produced, consumed, bench]) expectNoSecrets(r.stdout + r.stderr);
  });

  it('a wrong password exits 3 with one line naming authentication, also with --debug', async () => {
    for (const debug of [[], ['--debug']]) {
      const r = await runCli(['produce', '--broker', endpoint.wrongPassword, '--count', '1', ...debug], { timeoutMs: 60_000 });
      expect(r.code, r.stderr).toBe(3);
      expectNoSecrets(r.stdout + r.stderr);
      if (debug.length === 0) expectOneErrorLine(r.stderr, /refused (our credentials|the login)|authentication/i);
    }
  });
});

const untrusted = ENDPOINTS.filter((e) => e.untrusted !== undefined);
const plaintextOnTls = ENDPOINTS.filter((e) => e.plaintextOnTls !== undefined);

describe.each(untrusted)('$name without ?ca=', (endpoint) => {
  it('an untrusted certificate exits 3 with one line naming the certificate', async () => {
    const r = await runCli(['produce', '--broker', endpoint.untrusted!, '--count', '1'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(3);
    expectOneErrorLine(r.stderr, /certificate is not trusted.*\?ca=FILE/);
    expectNoSecrets(r.stdout + r.stderr);
  });
});

describe.each(untrusted)('$name with ?insecure=true', (endpoint) => {
  it('connects without checking the certificate, after a warning line that says so', async () => {
    const url = `${endpoint.untrusted!}${endpoint.untrusted!.includes('?') ? '&' : '?'}insecure=true`;
    const r = await runCli(['produce', '--broker', url, '--topic', uniqueName('insecure'), '--count', '3', '--json'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).acked).toBe(3);
    expect(r.stderr).toMatch(/^warning: .*\?insecure=true — the broker's certificate is not verified/m);
    expectNoSecrets(r.stdout + r.stderr);
  });
});

describe.each(plaintextOnTls)('$name with a plaintext client', (endpoint) => {
  it('a plaintext client on the TLS port exits 3 with one line naming the protocol', async () => {
    const r = await runCli(['produce', '--broker', endpoint.plaintextOnTls!, '--count', '1'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(3);
    expectOneErrorLine(r.stderr, /closed the connection during the handshake \(a TLS or SASL listener\?\)/);
    expectNoSecrets(r.stdout + r.stderr);
  });
});

describe('TLS URL parameters', () => {
  it('TLS on a plaintext port, a missing CA file and cert without key are refused before connecting', async () => {
    const cases: [string, number, RegExp][] = [
      [`kafkas://127.0.0.1:9092?ca=${ca}`, 3, /did not answer TLS on that port/],
      [`kafkas://127.0.0.1:9092?ca=/no/such/ca.pem`, 2, /\?ca=\/no\/such\/ca\.pem: no such file/],
      [`kafka://127.0.0.1:9092?ca=${ca}`, 2, /\?ca= needs TLS/],
      [`amqps://guest:guest@127.0.0.1:5671?cert=${ca}`, 2, /\?cert= and \?key= go together/],
      [`nats://127.0.0.1:4222?tls=true&ca=${encodeURIComponent('/etc/hostname')}`, 2, /not a PEM file/],
    ];
    for (const [url, code, pattern] of cases) {
      const r = await runCli(['produce', '--broker', url, '--count', '1'], { timeoutMs: 60_000 });
      expect(r.code, `${url}: ${r.stderr}`).toBe(code);
      expectOneErrorLine(r.stderr, pattern);
      expectNoSecrets(r.stdout + r.stderr);
    }
  });
});
});
