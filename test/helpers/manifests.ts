/**
 * Reads deploy/kubernetes/ as Kubernetes would: every YAML document of every manifest, and for a
 * Job the command its pods run, with the environment Kubernetes gives them (the ConfigMaps named
 * by envFrom, then the container's env, then JOB_COMPLETION_INDEX for an Indexed Job) and
 * Kubernetes' own `$(VAR)` expansion of command and args.
 */
import { readdirSync, readFileSync } from 'node:fs';
import path from 'node:path';
import { parseAllDocuments } from 'yaml';

export const MANIFEST_DIR = path.resolve('deploy/kubernetes');

export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; labels?: Record<string, string> };
  spec?: Record<string, unknown>;
  data?: Record<string, string>;
  /** The file it came from. */
  file: string;
}

export interface Container {
  name: string;
  image: string;
  command?: string[];
  args?: string[];
  env?: Array<{ name: string; value?: string }>;
  envFrom?: Array<{ configMapRef?: { name: string } }>;
  volumeMounts?: Array<{ name: string; mountPath: string }>;
}

export interface JobSpec {
  completionMode?: string;
  completions?: number;
  parallelism?: number;
  backoffLimit?: number;
  template: { spec: { restartPolicy: string; containers: Container[]; volumes?: Array<{ name: string; persistentVolumeClaim?: { claimName: string } }> } };
}

/** Every document of every .yaml file in the folder; a YAML error fails loudly. */
export function loadManifests(dir = MANIFEST_DIR): Manifest[] {
  const out: Manifest[] = [];
  for (const file of readdirSync(dir).filter((f) => f.endsWith('.yaml')).sort()) {
    for (const doc of parseAllDocuments(readFileSync(path.join(dir, file), 'utf8'))) {
      if (doc.errors.length > 0) throw new Error(`${file}: ${doc.errors[0]!.message}`);
      const value = doc.toJS() as Omit<Manifest, 'file'> | null;
      if (value !== null) out.push({ ...value, file });
    }
  }
  return out;
}

export function jobSpec(m: Manifest): JobSpec {
  if (m.kind !== 'Job') throw new Error(`${m.metadata.name} is a ${m.kind}, not a Job`);
  return m.spec as unknown as JobSpec;
}

/** The Job labelled with this app.kubernetes.io/component. */
export function jobOf(manifests: Manifest[], component: string): Manifest {
  const job = manifests.find((m) => m.kind === 'Job' && m.metadata.labels?.['app.kubernetes.io/component'] === component);
  if (!job) throw new Error(`no Job for component ${component}`);
  return job;
}

/**
 * Kubernetes' expansion of `$(VAR)` in command and args: `$$` is a literal `$`, `$(NAME)` of a
 * defined variable its value, anything else (`$((…))` for the shell, an undefined name) unchanged.
 */
export function expandKubernetes(text: string, env: Record<string, string>): string {
  let out = '';
  for (let i = 0; i < text.length; i++) {
    const c = text[i]!;
    if (c !== '$' || i + 1 >= text.length) {
      out += c;
      continue;
    }
    const next = text[i + 1]!;
    if (next === '$') {
      out += '$';
      i++;
    } else if (next === '(') {
      const close = text.indexOf(')', i + 2);
      const name = close < 0 ? undefined : text.slice(i + 2, close);
      if (name !== undefined && Object.prototype.hasOwnProperty.call(env, name)) {
        out += env[name];
        i = close;
      } else out += c;
    } else out += c;
  }
  return out;
}

export interface PodCommand {
  /** command + args after Kubernetes' expansion. */
  argv: string[];
  /** The container's environment as Kubernetes builds it. */
  env: Record<string, string>;
}

/**
 * What pod `index` of the Job runs (index undefined: a Job that is not Indexed). `overrides`
 * replace variables of the environment (a test's broker URL instead of the cluster's).
 */
export function podCommand(manifests: Manifest[], job: Manifest, index: number | undefined, overrides: Record<string, string> = {}): PodCommand {
  const spec = jobSpec(job);
  const container = spec.template.spec.containers[0]!;
  const env: Record<string, string> = {};
  for (const from of container.envFrom ?? []) {
    const name = from.configMapRef?.name;
    const cm = manifests.find((m) => m.kind === 'ConfigMap' && m.metadata.name === name);
    if (!cm) throw new Error(`${job.metadata.name}: envFrom names ConfigMap ${name}, which no manifest defines`);
    Object.assign(env, cm.data);
  }
  for (const e of container.env ?? []) env[e.name] = e.value ?? '';
  for (const [name, value] of Object.entries(overrides)) {
    if (!(name in env)) throw new Error(`${job.metadata.name}: no variable ${name} to override`);
    env[name] = value;
  }
  if (spec.completionMode === 'Indexed') {
    if (index === undefined) throw new Error(`${job.metadata.name} is Indexed: give the pod's index`);
    env['JOB_COMPLETION_INDEX'] = String(index);
  }
  const argv = [...(container.command ?? []), ...(container.args ?? [])].map((a) => expandKubernetes(a, env));
  return { argv, env };
}
