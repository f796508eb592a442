/**
 * deploy/kubernetes/ rendered without a cluster: every document parses, the Jobs are what the
 * README's Kubernetes steps say, and each pod's command — run through its shell with a stand-in
 * `payq` that prints its arguments — runs the payq command it should, shard by shard.
 */
import { spawnSync } from 'node:child_process';
import { chmodSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';
import { expandKubernetes, jobOf, jobSpec, loadManifests, podCommand, type Manifest } from '../helpers/manifests.js';

const manifests = loadManifests();
const work = mkdtempSync(path.join(tmpdir(), 'payq-manifests-'));
afterAll(() => rmSync(work, { recursive: true, force: true }));

// A stand-in for the image's payq: prints its arguments as JSON.
const bin = path.join(work, 'bin');
mkdirSync(bin);
writeFileSync(path.join(bin, 'payq'), `#!/bin/sh\nexec "${process.execPath}" -e 'console.log(JSON.stringify(process.argv.slice(1)))' -- "$@"\n`);
chmodSync(path.join(bin, 'payq'), 0o755);

/** What pod `index` of the Job passes to payq, and its exit code and stderr. */
function render(job: Manifest, index: number | undefined, reports = '/reports'): { args: string[] | undefined; code: number | null; stderr: string } {
  const { argv, env } = podCommand(manifests, job, index);
  const local = argv.map((a) => a.replaceAll('/reports/', `${reports}/`));
  const r = spawnSync(local[0]!, local.slice(1), { env: { ...env, PATH: `${bin}:${process.env['PATH']}` }, encoding: 'utf8' });
  return { args: r.stdout.trim() === '' ? undefined : (JSON.parse(r.stdout) as string[]), code: r.status, stderr: r.stderr };
}

const shardsOf = (job: Manifest) => Number(jobSpec(job).template.spec.containers[0]!.env?.find((e) => e.name === 'SHARDS')?.value);

describe('deploy/kubernetes manifests', () => {
  it('parse into the run ConfigMap, the reports volume and four Jobs', () => {
    const kinds = manifests.map((m) => `${m.kind}/${m.metadata.name}`).sort();
    expect(kinds).toEqual(['ConfigMap/payq-run', 'Job/payq-merge', 'Job/payq-producer', 'Job/payq-tracer', 'Job/payq-worker', 'PersistentVolumeClaim/payq-reports']);
    for (const m of manifests) expect(m.metadata.labels?.['app.kubernetes.io/name'], m.metadata.name).toBe('payq');
    for (const m of manifests.filter((x) => x.kind === 'Job')) {
      expect(m.apiVersion).toBe('batch/v1');
      const spec = jobSpec(m);
      expect(spec.template.spec.restartPolicy, m.metadata.name).toBe('Never');
      // A part started again would count (or send) twice, or miss what it did not see.
      expect(spec.backoffLimit, m.metadata.name).toBe(0);
      const [container] = spec.template.spec.containers;
      expect(container!.image).toBe('payq:0.1.0');
      // Every Job mounts the claim run.yaml defines at /reports.
      const volume = spec.template.spec.volumes?.find((v) => v.name === container!.volumeMounts?.find((vm) => vm.mountPath === '/reports')?.name);
      expect(volume?.persistentVolumeClaim?.claimName, m.metadata.name).toBe('payq-reports');
    }
  });

  it('producer and tracer shards are Indexed Jobs running every shard at once, SHARDS agreeing with completions', () => {
    for (const component of ['producer', 'tracer']) {
      const spec = jobSpec(jobOf(manifests, component));
      expect(spec.completionMode, component).toBe('Indexed');
      expect(spec.completions, component).toBeGreaterThan(1);
      expect(spec.parallelism, component).toBe(spec.completions);
      expect(shardsOf(jobOf(manifests, component)), component).toBe(spec.completions);
    }
    const workers = jobSpec(jobOf(manifests, 'worker'));
    expect(workers.parallelism).toBe(workers.completions);
  });

  it('each pod runs its part with --shard from JOB_COMPLETION_INDEX and a report file of its own', () => {
    const files = new Set<string>();
    for (const [component, sharded] of [['producer', true], ['worker', false], ['tracer', true]] as const) {
      const job = jobOf(manifests, component);
      const n = jobSpec(job).completions!;
      for (let k = 0; k < n; k++) {
        const r = render(job, k);
        expect(r.code, r.stderr).toBe(0);
        const shard = sharded ? ['--shard', `${k + 1}/${n}`] : [];
        expect(r.args, `${component} pod ${k}`).toEqual(['bench', '--role', component, ...shard, '--json', `/reports/${component}-${k + 1}.json`]);
        files.add(r.args!.at(-1)!);
      }
    }
    const parts = ['producer', 'worker', 'tracer'].map((c) => jobSpec(jobOf(manifests, c)).completions!);
    expect(files.size).toBe(parts.reduce((a, b) => a + b, 0));
  });

  it('the parts share the broker, scenario, run id and seed through PAYQ_* variables bench reads', async () => {
    const config = manifests.find((m) => m.kind === 'ConfigMap')!;
    const keys = Object.keys(config.data ?? {});
    expect(keys.sort()).toEqual(['PAYQ_BROKER', 'PAYQ_RUN_ID', 'PAYQ_SCENARIO', 'PAYQ_SEED']);
    const producerEnv = jobSpec(jobOf(manifests, 'producer')).template.spec.containers[0]!.env!.map((e) => e.name).filter((n) => n.startsWith('PAYQ_'));
    const help = await runCli(['bench', '--help']);
    // PAYQ_RUN_ID is --run-id: the README's rule for every option.
    for (const name of [...keys, ...producerEnv]) expect(help.stdout, name).toContain(`--${name.slice('PAYQ_'.length).toLowerCase().replaceAll('_', '-')} `);
    for (const c of ['producer', 'worker', 'tracer']) {
      expect(jobSpec(jobOf(manifests, c)).template.spec.containers[0]!.envFrom?.[0]?.configMapRef?.name, c).toBe('payq-run');
    }
  });

  it('the merge Job merges every part, refusing a run with a report missing', () => {
    const merge = jobOf(manifests, 'merge');
    const env = podCommand(manifests, merge, undefined).env;
    expect(Number(env['PRODUCERS'])).toBe(jobSpec(jobOf(manifests, 'producer')).completions);
    expect(Number(env['WORKERS'])).toBe(jobSpec(jobOf(manifests, 'worker')).completions);
    expect(Number(env['TRACERS'])).toBe(jobSpec(jobOf(manifests, 'tracer')).completions);
    const reports = path.join(work, 'reports');
    mkdirSync(reports);
    const names = ['producer', 'worker', 'tracer'].flatMap((c) => Array.from({ length: jobSpec(jobOf(manifests, c)).completions! }, (_, k) => `${c}-${k + 1}.json`));
    for (const name of names.slice(1)) writeFileSync(path.join(reports, name), '{}');
    const missing = render(merge, undefined, reports);
    expect(missing.code).toBe(2);
    expect(missing.args).toBeUndefined();
    expect(missing.stderr).toMatch(new RegExp(`${names[0]} is missing: the run is incomplete`));
    writeFileSync(path.join(reports, names[0]!), '{}');
    const complete = render(merge, undefined, reports);
    expect(complete.code, complete.stderr).toBe(0);
    // The stand-in printed the merge's arguments into merged.json, then the verdict's on stdout.
    const mergeArgs = JSON.parse(readFileSync(path.join(reports, 'merged.json'), 'utf8')) as string[];
    expect(mergeArgs.slice(0, 2)).toEqual(['report', '--merge']);
    // The shell's globs: every part's file, once each (merged.json is none of them).
    expect(mergeArgs.filter((a) => a.endsWith('.json')).map((a) => path.basename(a)).sort()).toEqual([...names].sort());
    expect(mergeArgs).toContain('--json');
    expect(complete.args).toEqual(['report', `${reports}/merged.json`, '--assert', 'loss==0', '--markdown', `${reports}/summary.md`]);
  });

  it("expands $(VAR) as Kubernetes does and leaves the shell's $((…)) alone", () => {
    expect(expandKubernetes('$(A)-$$(A)-$((B + 1))-$(MISSING)', { A: 'x', B: '2' })).toBe('x-$(A)-$((B + 1))-$(MISSING)');
  });
});
