import { describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable } from '../helpers/brokers.js';
import { runCli, expectOneErrorLine } from '../helpers/cli.js';

describe('payq CLI basics', () => {
  it('--help lists the commands with examples and exits 0', async () => {
    const r = await runCli(['--help']);
    expect(r.code).toBe(0);
    expect(r.stdout).toContain('produce');
    expect(r.stdout).toContain('Examples:');
    const sub = await runCli(['produce', '--help']);
    expect(sub.code).toBe(0);
    expect(sub.stdout).toContain('--lifecycle');
    expect(sub.stdout).toContain('payq produce --dry-run');
  });

  it('--version prints the package version', async () => {
    const r = await runCli(['--version']);
    expect(r.code).toBe(0);
    expect(r.stdout.trim()).toMatch(/^\d+\.\d+\.\d+/);
  });

  it('no command is a usage error (exit 2)', async () => {
    const r = await runCli([]);
    expect(r.code).toBe(2);
    expect(r.stderr).toMatch(/payq: error: a command is required/);
  });
});

describe('payq produce', () => {
  it('--dry-run is byte-identical across runs, and another seed differs', async () => {
    const a = await runCli(['produce', '--dry-run', '--count', '1000', '--seed', '7']);
    const b = await runCli(['produce', '--dry-run', '--count', '1000', '--seed', '7']);
    const c = await runCli(['produce', '--dry-run', '--count', '1000', '--seed', '8']);
    expect(a.code).toBe(0);
    expect(a.stdout.split('\n').filter(Boolean)).toHaveLength(1000);
    expect(a.stdout).toBe(b.stdout);
    expect(a.stdout).not.toBe(c.stdout);
  });

  it('sends 100000 payments to memory:// and reports them acknowledged in JSON', async () => {
    const r = await runCli(['produce', '--broker', 'memory://', '--count', '100000', '--seed', '42', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const summary = JSON.parse(r.stdout);
    expect(summary).toMatchObject({ schema: 'payq.produce/v1', payments: 100000, sent: 100000, acked: 100000, failed: 0, seed: 42 });
    expect(summary.publish_latency.count).toBe(100000);
    expect(summary.events_per_s).toBeGreaterThan(0);
  });

  it('paces sends with --rate and reports publish delay and latency from intended times', async () => {
    const r = await runCli(['produce', '--broker', 'memory://', '--count', '200', '--rate', '1000', '--json']);
    expect(r.code, r.stderr).toBe(0);
    const s = JSON.parse(r.stdout);
    expect(s.acked).toBe(200);
    // 200 events at 1000/s take about 0.2 s: the schedule, not the machine, sets the pace.
    expect(s.elapsed_s).toBeGreaterThanOrEqual(0.19);
    expect(s.publish_delay.count).toBe(200);
    expect(s.intended_latency.count).toBe(200);
  });

  it('sends events in the seed shape from a file (--from-file)', async () => {
    const r = await runCli(['produce', '--broker', 'memory://', '--from-file', 'fixtures/events/seed-shape.ndjson', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout)).toMatchObject({ sent: 3, acked: 3 });
    const stdin = await runCli(['produce', '--broker', 'memory://', '--from-file', '-', '--json'], {
      input: '{"event":"order_placed","data":{"order_id":1,"user_id":2}}\n\n{"event":"order_placed","data":{"order_id":2,"user_id":2}}\n',
    });
    expect(stdin.code, stdin.stderr).toBe(0);
    expect(JSON.parse(stdin.stdout).acked).toBe(2);
  });

  it.each([
    ['a malformed URL', ['--broker', 'kafka://127.0.0.1:notaport'], /--broker: invalid broker URL/],
    ['an unknown scheme', ['--broker', 'mqtt://127.0.0.1:1883'], /unknown scheme 'mqtt'/],
    ['--count -5', ['--broker', 'memory://', '--count', '-5'], /--count: must be a whole number/],
    ['--rate fast', ['--broker', 'memory://', '--rate', 'fast'], /--rate: must be a number of events per second/],
    ['an unknown flag', ['--broker', 'memory://', '--speed', '3'], /unknown option '--speed'/],
    ['a missing broker', [], /no broker: pass --broker URL or set PAYQ_BROKER/],
    ['a bad scenario file', ['--broker', 'memory://', '--scenario', 'fixtures/bad/scenario-unknown-key.yaml'], /scenario-unknown-key\.yaml:4: /],
    ['a non-JSON line', ['--broker', 'memory://', '--from-file', 'fixtures/bad/events-not-json.ndjson'], /events-not-json\.ndjson:2: not JSON/],
    ['an event with no type', ['--broker', 'memory://', '--from-file', 'fixtures/bad/events-no-type.ndjson'], /events-no-type\.ndjson:2: no event type in field 'event'/],
    ['a missing file', ['--broker', 'memory://', '--from-file', 'fixtures/nope.ndjson'], /cannot read fixtures\/nope\.ndjson: no such file/],
  ])('exits 2 with one line for %s', async (_name, args, pattern) => {
    const r = await runCli(['produce', ...args], { env: { PAYQ_BROKER: '' } });
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
  });

  it.each([
    ['Kafka', 'kafka://127.0.0.1:1'],
    ['RabbitMQ', 'amqp://guest:guest@127.0.0.1:1'],
  ])('exits 3 within 15 s when %s is unreachable', async (_name, url) => {
    const r = await runCli(['produce', '--broker', url, '--count', '10']);
    expect(r.code, r.stderr).toBe(3);
    expect(r.ms).toBeLessThan(15_000);
    expectOneErrorLine(r.stderr, /127\.0\.0\.1:1/);
    expect(r.stderr).not.toContain('guest:guest');
  });

  it('exits 3 on a wrong RabbitMQ password and never prints it', async () => {
    if (!(await brokerAvailable(AMQP_URL))) return;
    const secret = 'Wr0ngPassw0rd-x9';
    const r = await runCli(['produce', '--broker', `amqp://guest:${secret}@127.0.0.1:5672`, '--count', '10', '-v', '--json']);
    expect(r.code, r.stderr).toBe(3);
    expectOneErrorLine(r.stderr, /refused|authenticat|credentials/i);
    expect(r.stdout + r.stderr).not.toContain(secret);
    const debug = await runCli(['produce', '--broker', `amqp://guest:${secret}@127.0.0.1:5672`, '--count', '10', '--debug']);
    expect(debug.code).toBe(3);
    expect(debug.stdout + debug.stderr).not.toContain(secret);
  });
});
