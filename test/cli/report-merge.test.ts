/**
 * `payq report --merge` and `--assert` on real report files (written by `payq bench --broker
 * memory://`): a part is never counted twice, reports of different runs, brokers or scenarios
 * merge only with --allow-mixed, merged counts are exact, an assertion on a key the report cannot
 * have is a usage error before anything runs, and an assertion fed a run that must fail fails it.
 */
import { spawn } from 'node:child_process';
import { copyFileSync, existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { reportSchema, type Report } from '../../src/metrics/report.js';
import { BIN, expectOneErrorLine, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'payq-report-merge-'));
const file = (name: string) => path.join(dir, name);
const read = (name: string) => JSON.parse(readFileSync(file(name), 'utf8')) as Report;
const RUN = `shared-${process.pid}`;

async function bench(name: string, ...extra: string[]): Promise<Report> {
  const r = await runCli(['bench', '--broker', 'memory://', '--duration', '1s', '--warmup', '0', '--json', file(name), ...extra]);
  expect(r.code, r.stderr).toBe(0);
  return read(name);
}

/** The sum of a figure over reports. */
const total = (reports: Report[], pick: (r: Report) => number) => reports.reduce((n, r) => n + pick(r), 0);

let a: Report;
let b: Report;
let p1: Report;
let p2: Report;

beforeAll(async () => {
  // Two separate runs, and two parts of one run (the same --run-id).
  [a, b] = await Promise.all([bench('a.json'), bench('b.json')]);
  [p1, p2] = await Promise.all([bench('p1.json', '--run-id', RUN), bench('p2.json', '--run-id', RUN)]);
  await bench('other-scenario.json', '--run-id', RUN, '--scenario', 'bench-apt-equal');
  copyFileSync(file('a.json'), file('a-copy.json'));
  writeFileSync(file('a-reformatted.json'), JSON.stringify(a));
  // p2 as a Kafka run would have it: same run, another broker.
  writeFileSync(file('p2-kafka.json'), JSON.stringify({ ...p2, settings: { ...p2.settings, broker: 'kafka://127.0.0.1:9092', broker_version: 'Apache Kafka 4.1' } }));
}, 120_000);

describe('payq report --merge refuses to count a part twice (exit 2)', () => {
  it('reports carry their run id and their own part id', () => {
    expect(new Set([a.part_id, b.part_id, p1.part_id, p2.part_id]).size).toBe(4);
    expect(a.run_id).not.toBe(b.run_id);
    expect([p1.run_id, p2.run_id]).toEqual([RUN, RUN]);
  });

  it.each([
    ['the same file twice', ['a.json', 'a.json'], /a\.json is given twice; merging would count it twice/],
    ['a file and its copy', ['a.json', 'a-copy.json'], /a-copy\.json and .*a\.json both have part [0-9a-f]{12} of run/],
    ['a file and a reformatted copy', ['p1.json', 'a.json', 'a-reformatted.json'], /count it twice/],
  ])('%s', async (_what, names, pattern) => {
    for (const allow of [[], ['--allow-mixed']]) {
      const r = await runCli(['report', '--merge', ...names.map(file), ...allow, '--json']);
      expect(r.code, r.stderr).toBe(2);
      expect(r.stdout).toBe('');
      expectOneErrorLine(r.stderr, pattern);
    }
  });

  it('a merged report with one of its own parts, or with itself', async () => {
    const m = await runCli(['report', '--merge', file('p1.json'), file('p2.json'), '--json']);
    expect(m.code, m.stderr).toBe(0);
    writeFileSync(file('merged.json'), m.stdout);
    expect(read('merged.json').parts).toEqual([p1.part_id, p2.part_id]);
    for (const names of [['merged.json', 'p2.json'], ['p1.json', 'merged.json'], ['merged.json', 'merged.json']]) {
      const r = await runCli(['report', '--merge', ...names.map(file)]);
      expect(r.code, names.join(' ')).toBe(2);
      expectOneErrorLine(r.stderr, /count it twice/);
    }
    // A merged report merges on with a new part.
    const on = await runCli(['report', '--merge', '--allow-mixed', file('merged.json'), file('a.json'), '--json']);
    expect(on.code, on.stderr).toBe(0);
    expect((JSON.parse(on.stdout) as Report).parts).toEqual([p1.part_id, p2.part_id, a.part_id]);
  });
});

describe('payq report --merge of different runs, brokers or scenarios', () => {
  it.each([
    ['runs', ['a.json', 'b.json'], /different runs \(.*a\.json: run [0-9a-f]{12} · .*b\.json: run [0-9a-f]{12}\)/],
    ['brokers', ['p1.json', 'p2-kafka.json'], /different brokers \(.*p1\.json: broker memory:\/\/ · .*p2-kafka\.json: broker kafka:\/\/127\.0\.0\.1:9092\)/],
    ['scenarios', ['p1.json', 'other-scenario.json'], /different scenarios \(.*scenario checkout · .*scenario bench-apt-equal\)/],
  ])('of different %s: refused, then merged with --allow-mixed and a warning', async (what, names, pattern) => {
    const refused = await runCli(['report', '--merge', ...names.map(file)]);
    expect(refused.code).toBe(2);
    expectOneErrorLine(refused.stderr, pattern);
    expect(refused.stderr).toContain('--allow-mixed');

    const allowed = await runCli(['report', '--merge', '--allow-mixed', ...names.map(file), '--json']);
    expect(allowed.code, allowed.stderr).toBe(0);
    expect(allowed.stderr).toMatch(new RegExp(`^warning: merging reports of different ${what}: `, 'm'));
    expect(allowed.stderr).toMatch(/^merged 2 parts from 2 reports: /m);
    const m = JSON.parse(allowed.stdout) as Report;
    const parts = names.map((n) => read(n));
    expect(m.events.acknowledged).toBe(total(parts, (r) => r.events.acknowledged));
    expect(m.latency.end_to_end.count).toBe(total(parts, (r) => r.latency.end_to_end.count));
  });

  it('--allow-mixed goes with --merge', async () => {
    const r = await runCli(['report', '--allow-mixed', file('a.json')]);
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, /--allow-mixed goes with --merge/);
  });
});

describe('payq report --merge of legitimate parts: exact counts', () => {
  const exact = (m: Report, parts: Report[]) => {
    expect(reportSchema.safeParse(m).success).toBe(true);
    expect(m.merged_from).toBe(parts.length);
    expect(m.parts).toEqual(parts.map((p) => p.part_id));
    for (const pick of [
      (r: Report) => r.events.acknowledged,
      (r: Report) => r.events.consumed,
      (r: Report) => r.producers.sent,
      (r: Report) => r.payments.produced,
      (r: Report) => r.payments.finished,
      (r: Report) => r.dlq.total,
      (r: Report) => r.windows.total,
      (r: Report) => r.latency.end_to_end.count,
      (r: Report) => r.latency.publish.count,
      (r: Report) => r.handlers['payment-service']!.count,
      (r: Report) => r.handlers['capture-service']!.retries,
      (r: Report) => r.latency.hops['sink']!.count,
    ]) {
      expect(pick(m)).toBe(total(parts, pick));
    }
    expect(m.elapsed_s).toBe(Math.max(...parts.map((p) => p.elapsed_s)));
    expect(m.latency.end_to_end.max_ms).toBe(Math.max(...parts.map((p) => p.latency.end_to_end.max_ms)));
  };

  it('two parts of one run (--run-id): no warning, one line saying what was merged', async () => {
    const r = await runCli(['report', '--merge', file('p1.json'), file('p2.json'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stderr.trim()).toBe(`merged 2 parts from 2 reports: run ${RUN} · memory:// · scenario checkout`);
    const m = JSON.parse(r.stdout) as Report;
    exact(m, [p1, p2]);
    expect(m.run_id).toBe(RUN);
  });

  it('two separate runs with --allow-mixed', async () => {
    const r = await runCli(['report', '--merge', '--allow-mixed', file('a.json'), file('b.json'), '--json']);
    expect(r.code, r.stderr).toBe(0);
    const m = JSON.parse(r.stdout) as Report;
    exact(m, [a, b]);
    expect(m.run_id).toBe(`${a.run_id}+${b.run_id}`);
  });
});

describe('--assert fed a run that must fail fails it', () => {
  const check = (name: string, ...asserts: string[]) => runCli(['report', file(name), ...asserts.flatMap((x) => ['--assert', x])]);

  it('at the exact boundary of p99_ms, loss, throughput, a handler tᵢ and APT', async () => {
    const values: Array<[string, number]> = [
      ['p99_ms', a.latency.end_to_end.p99_ms],
      ['loss', a.loss!],
      ['throughput', a.throughput.events_per_s],
      ['handlers.payment-service.t_ms', a.handlers['payment-service']!.t_ms],
      ['apt_ms', a.apt_ms],
    ];
    expect(a.loss).toBe(0);
    const holding = values.flatMap(([k, v]) => [`${k}<=${v}`, `${k}>=${v}`, `${k}==${v}`]);
    const pass = await check('a.json', ...holding);
    expect(pass.code, pass.stderr).toBe(0);
    const breaking = values.flatMap(([k, v]) => [`${k}<${v}`, `${k}>${v}`, `${k}!=${v}`]);
    for (const x of breaking) {
      const r = await check('a.json', ...holding, x);
      expect(r.code, `${x}\n${r.stderr}`).toBe(5);
      expect(r.stderr).toContain(`payq: error: 1 --assert breached: ${x}`);
    }
  }, 120_000);

  it('merged parts breach what each part alone passes', async () => {
    const asserts = [`payments.produced<=${Math.max(p1.payments.produced, p2.payments.produced)}`, `events.acknowledged<=${Math.max(p1.events.acknowledged, p2.events.acknowledged)}`];
    expect(p1.payments.produced).toBeGreaterThan(0);
    expect(p2.payments.produced).toBeGreaterThan(0);
    for (const part of ['p1.json', 'p2.json']) expect((await check(part, ...asserts)).code).toBe(0);
    const merged = await runCli(['report', '--merge', file('p1.json'), file('p2.json'), ...asserts.flatMap((x) => ['--assert', x])]);
    expect(merged.code, merged.stderr).toBe(5);
    expect(merged.stderr).toContain('payq: error: 2 --assert breached');
  });

  it('bench fails a run that breaches several assertions (exit 5), each named', async () => {
    const r = await runCli([
      'bench', '--broker', 'memory://', '--duration', '500ms', '--warmup', '0',
      '--assert', 'p99_ms<0.001', '--assert', 'loss>0', '--assert', 'apt_ms==0', '--assert', 'handlers.payment-service.t_ms<0.0001', '--assert', 'throughput>1e9',
    ]);
    expect(r.code, r.stderr).toBe(5);
    expect(r.stderr).toMatch(/payq: error: 5 of 5 --assert breached: p99_ms<0\.001, loss>0, apt_ms==0, handlers\.payment-service\.t_ms<0\.0001, throughput>1e9/);
  });
});

describe('an assertion on a key the report cannot have is a usage error (exit 2), never a breach', () => {
  it.each([
    ['handlers.nosuch.t_ms<5', /has no key handlers\.nosuch\.t_ms \(known: handlers\.payment-service\.t_ms, /],
    ['latency.hops.nosuch.p99_ms<5', /has no key latency\.hops\.nosuch\.p99_ms \(known: .*latency\.hops\.sink\.p99_ms/],
    ['latency.publish_delay.p99_ms<5', /latency\.publish_delay\.p99_ms is null in .*a\.json.*--rate/],
  ])('report a.json --assert %s', async (x, pattern) => {
    const r = await runCli(['report', file('a.json'), '--assert', x]);
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
  });

  it.each([
    ['handlers.nosuch.t_ms<5', /the report of scenario checkout has no key handlers\.nosuch\.t_ms \(known: handlers\.payment-service\.t_ms, handlers\.capture-service\.t_ms/],
    ['latency.hops.nosuch.p99_ms<5', /has no key latency\.hops\.nosuch\.p99_ms/],
    ['dlq.by_reason.nosuch==0', /has no key dlq\.by_reason\.nosuch/],
    ['latency.publish_from_intended.p99_ms<5', /is null in the report of scenario checkout.*--rate/],
  ])('bench --assert %s, before running an hour', async (x, pattern) => {
    const r = await runCli(['bench', '--broker', 'memory://', '--duration', '1h', '--assert', x], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
  });

  it('a known handler of another scenario is refused too', async () => {
    const r = await runCli(['bench', '--broker', 'memory://', '--duration', '1h', '--scenario', 'bench-apt-equal', '--assert', 'handlers.payment-service.t_ms<5'], { timeoutMs: 30_000 });
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, /the report of scenario bench-apt-equal has no key handlers\.payment-service\.t_ms/);
  });
});

describe('bench never loses its report', () => {
  it.each([
    ['--json', 'missing/x.json', /--json .*missing\/x\.json: the folder .*missing does not exist/],
    ['--markdown', 'missing/x.md', /--markdown .*missing\/x\.md: the folder .*missing does not exist/],
    ['--json', 'a.json/x.json', /a\.json is not a folder/],
    ['--markdown', '.', /is a folder, not a file/],
  ])('%s %s is refused before running an hour', async (flag, name, pattern) => {
    const r = await runCli(['bench', '--broker', 'memory://', '--duration', '1h', flag, file(name)], { timeoutMs: 30_000 });
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
  });

  it('when writing still fails at the end, the report goes to stdout (markdown to stderr) and the exit is 2', async () => {
    const out = file('gone');
    mkdirSync(out);
    // The folder goes once the run is under way (after the check, before the write).
    const r = await new Promise<{ code: number | null; stdout: string; stderr: string }>((resolve, reject) => {
      const child = spawn(process.execPath, [BIN, 'bench', '-v', '--broker', 'memory://', '--duration', '1s', '--warmup', '0', '--json', path.join(out, 'r.json'), '--markdown', path.join(out, 'r.md')], {
        env: { ...process.env, CI: 'true', NO_COLOR: '1' },
      });
      let stdout = '';
      let stderr = '';
      child.stdout.setEncoding('utf8').on('data', (d: string) => (stdout += d));
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
        if (stderr.includes('bench: checkout on') && existsSync(out)) rmSync(out, { recursive: true });
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stdout, stderr }));
    });
    expect(existsSync(out)).toBe(false);
    expect(r.code, r.stderr).toBe(2);
    expect(reportSchema.safeParse(JSON.parse(r.stdout)).success).toBe(true);
    expect(r.stderr).toMatch(/warning: cannot write .*r\.json: ENOENT; its content follows on stdout instead/);
    expect(r.stderr).toMatch(/warning: cannot write .*r\.md: ENOENT; its content follows on stderr instead/);
    expect(r.stderr).toMatch(/\| \*\*APT\*\* \|/); // the markdown itself
    expect(r.stderr).toMatch(/payq: error: cannot write .*r\.json: ENOENT \(its content went to stdout\)$/m);
  }, 60_000);
});
