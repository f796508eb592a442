/**
 * `payq bench` and `payq report` as users run them: bin/payq.js spawned (after `npm run build`),
 * exit codes, stdout and stderr checked. memory:// only; the broker runs are in test/e2e.
 */
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { reportSchema, type Report } from '../../src/metrics/report.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(tmpdir(), 'payq-bench-cli-'));
const file = (name: string) => path.join(dir, name);
const noBroker = { PAYQ_BROKER: '' };

describe('payq bench', () => {
  it('with no flags and no broker runs checkout on memory:// and prints the table', async () => {
    const r = await runCli(['bench'], { env: noBroker, timeoutMs: 90_000 });
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toBe('');
    expect(r.stderr).toContain('running on memory://');
    for (const row of ['broker', 'checkout', 'APT', 'throughput', 'end-to-end latency', 'loss', 'availability', 'payment-service', 'hop → sink', 'p99.9']) {
      expect(r.stderr, row).toContain(row);
    }
    expect(r.stderr).toMatch(/10 s after 2 s warm-up/);
    expect(r.stderr).toMatch(/█/); // the latency chart
  });

  describe('outputs and gates', () => {
    let report: Report;
    let run: Awaited<ReturnType<typeof runCli>>;

    beforeAll(async () => {
      run = await runCli(
        ['bench', '--duration', '1s', '--warmup', '300ms', '--seed', '5', '--json', file('a.json'), '--markdown', file('a.md'), '--assert', 'loss==0', '--assert', 'p99_ms < 60000', '--assert', 'apt_ms<=20'],
        { env: noBroker },
      );
      report = JSON.parse(readFileSync(file('a.json'), 'utf8')) as Report;
    });

    it('--json FILE writes a report that validates against the documented schema', () => {
      expect(run.code, run.stderr).toBe(0);
      const parsed = reportSchema.safeParse(report);
      expect(parsed.success, JSON.stringify(parsed.error?.issues[0])).toBe(true);
      expect(report).toMatchObject({ schema: 'payq.report/v1', role: 'all', loss: 0, availability: 1 });
      expect(report.settings).toMatchObject({ broker: 'memory://', scenario: 'checkout', seed: 5, duration_s: 1, warmup_s: 0.3, rate_per_s: null });
      expect(report.payments.finished).toBe(report.payments.produced);
      expect(Object.keys(report.handlers)).toEqual(['payment-service', 'capture-service', 'fulfilment-service', 'refund-service']);
      expect(report.histograms.end_to_end.length).toBeGreaterThan(10);
      // The table still went to stderr, with the assertions.
      expect(run.stderr).toContain('✓ loss==0');
    });

    it('--markdown FILE writes a step summary with the assertions', () => {
      const md = readFileSync(file('a.md'), 'utf8');
      expect(md).toContain('### payq bench: checkout on memory://');
      expect(md).toContain('All 3 assertions passed');
      expect(md).toMatch(/\| \*\*APT\*\* \|/);
    });

    it('payq report renders it, --merge adds reports exactly, --compare flags regressions', async () => {
      const shown = await runCli(['report', file('a.json')]);
      expect(shown.code, shown.stderr).toBe(0);
      expect(shown.stderr).toContain('APT');
      expect(shown.stderr).toContain(report.run_id);

      // The same report twice is one part counted twice: refused (test/cli/report-merge.test.ts).
      const twice = await runCli(['report', '--merge', file('a.json'), file('a.json'), '--json']);
      expect(twice.code, twice.stderr).toBe(2);
      expectOneErrorLine(twice.stderr, /count it twice/);

      const same = await runCli(['report', file('a.json'), '--compare', file('a.json'), '--fail-on-regression', '10']);
      expect(same.code, same.stderr).toBe(0);
      expect(same.stderr).toContain('compared with');

      // A baseline twice as fast end to end: today's run regressed.
      const faster = structuredClone(report);
      for (const k of ['p50_ms', 'p90_ms', 'p99_ms', 'p999_ms', 'max_ms', 'mean_ms'] as const) faster.latency.end_to_end[k] = report.latency.end_to_end[k] / 2;
      writeFileSync(file('baseline.json'), JSON.stringify(faster));
      const worse = await runCli(['report', file('a.json'), '--compare', file('baseline.json'), '--fail-on-regression', '10']);
      expect(worse.code).toBe(5);
      expect(worse.stderr).toContain('regression');
      expect(worse.stderr).toMatch(/payq: error: \d+ regressions worse than 10%.*end-to-end p50/);
    });
  });

  it('--json alone prints the report on stdout and no table', async () => {
    const r = await runCli(['bench', '--duration', '500ms', '--warmup', '0', '--json', '--time-scale', '0'], { env: noBroker });
    expect(r.code, r.stderr).toBe(0);
    expect(reportSchema.safeParse(JSON.parse(r.stdout)).success).toBe(true);
    expect(r.stderr).not.toContain('APT');
  });

  it('a breached --assert lists the breach and exits 5; the report is still written', async () => {
    const r = await runCli(['bench', '--duration', '500ms', '--warmup', '0', '--json', file('b.json'), '--assert', 'loss==0', '--assert', 'throughput>=1e12'], {
      env: noBroker,
    });
    expect(r.code).toBe(5);
    expect(r.stderr).toMatch(/✗ throughput>=1e12: throughput.events_per_s is \d/);
    expect(r.stderr).toMatch(/payq: error: 1 of 2 --assert breached: throughput>=1e12/);
    expect(reportSchema.safeParse(JSON.parse(readFileSync(file('b.json'), 'utf8'))).success).toBe(true);
  });

  it('a bad --assert or flag is a usage error (exit 2) before anything runs', async () => {
    const bad = await runCli(['bench', '--assert', 'p99ms<250'], { env: noBroker });
    expect(bad.code).toBe(2);
    expectOneErrorLine(bad.stderr, /--assert 'p99ms<250': the report has no key 'p99ms'/);
    const both = await runCli(['bench', '--count', '10', '--duration', '1s'], { env: noBroker });
    expect(both.code).toBe(2);
    expectOneErrorLine(both.stderr, /--count and --duration exclude each other/);
    const stray = await runCli(['bench', 'oops'], { env: noBroker });
    expect(stray.code).toBe(2);
    expectOneErrorLine(stray.stderr, /unexpected argument 'oops'/);
  });

  it('payq report on a file that is not a report: one line, exit 2', async () => {
    writeFileSync(file('junk.json'), '{"schema":"payq.produce/v1"}');
    const r = await runCli(['report', file('junk.json')]);
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, /schema 'payq.produce\/v1' is not payq.report\/v1/);
    const none = await runCli(['report']);
    expect(none.code).toBe(2);
    expectOneErrorLine(none.stderr, /no report files given/);
  });
});
