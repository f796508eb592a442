/**
 * A copy of a built-in scenario with destinations and a name of its own, written to a file the CLI
 * can read: the workers' Kafka groups (payq-worker.<scenario>.<stage>) and bench's sink group are
 * named after the scenario, so runs on copies never share a group, and tests can run side by side.
 */
import { randomBytes } from 'node:crypto';
import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { benchSinkGroup } from '../../src/core/bench.js';
import { workerGroup } from '../../src/core/worker.js';
import { parseScenario, type Scenario } from '../../src/events/scenario.js';

export interface ScenarioCopy {
  file: string;
  text: string;
  scenario: Scenario;
  destinations: string[];
  /** The consumer groups runs on it use: a worker's, one per stage, and bench's sink reader (Kafka: delete them with the topics). */
  groups: string[];
}

export interface ScenarioCopyOptions {
  /** The built-in scenario to copy (default checkout). */
  from?: string;
  /** Stage failure rates to set, by stage name. */
  failures?: Record<string, { transient: number; permanent: number }>;
  /** Any other change to the fixture's text, made first. */
  edit?: (text: string) => string;
}

/** `from` (checkout) with every destination under `prefix` and a random scenario name. */
export function scenarioCopy(prefix: string, options: ScenarioCopyOptions = {}): ScenarioCopy {
  const from = options.from ?? 'checkout';
  const name = `t-${randomBytes(5).toString('hex')}`;
  let text = (options.edit ?? ((t: string) => t))(readFileSync(`fixtures/scenarios/${from}.yaml`, 'utf8'))
    .replaceAll(`${from}.`, `${prefix}.`)
    .replace(new RegExp(`^name: ${from}$`, 'm'), `name: ${name}`);
  for (const [stage, f] of Object.entries(options.failures ?? {})) {
    const before = text;
    text = text.replace(new RegExp(`(- name: ${stage}\\n(?:.*\\n)*?\\s+failures: )\\{[^}]*\\}`), `$1{ transient: ${f.transient}, permanent: ${f.permanent} }`);
    if (text === before) throw new Error(`scenarioCopy: no failures of stage ${stage} in ${from}`);
  }
  const file = path.join(mkdtempSync(path.join(tmpdir(), 'payq-scn-')), `${from}.yaml`);
  writeFileSync(file, text);
  const scenario = parseScenario(text, file);
  if (scenario.name !== name) throw new Error(`scenarioCopy: ${from}'s name was not replaced`);
  return { file, text, scenario, destinations: scenario.destinations, groups: [...scenario.stages.map((s) => workerGroup(scenario, s)), benchSinkGroup(scenario)] };
}
