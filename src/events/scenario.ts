/**
 * Scenarios: the event mix and the pipeline stages (README "Scenarios"). Files are YAML or JSON (a
 * JSON file is valid YAML), validated once with zod; unknown keys are errors, and every error
 * names the field and its line.
 */
import { existsSync, readFileSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import path from 'node:path';
import { LineCounter, parseDocument, isNode } from 'yaml';
import { z } from 'zod';
import { ConfigError } from '../errors.js';
import { isKnownCurrency } from './currencies.js';
import { formatNumber } from '../text.js';

const eventName = z
  .string()
  .regex(/^[a-z][a-z0-9_.-]{0,63}$/, 'event names are lowercase letters, digits, _ . - (at most 64)');
const destinationName = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/, 'destination names are letters, digits, . _ -');
const probability = z.number().min(0).max(1);
const weights = z.record(z.string(), z.number().positive());

const processing = z.discriminatedUnion('distribution', [
  z.strictObject({ distribution: z.literal('constant'), ms: z.number().min(0) }),
  z.strictObject({ distribution: z.literal('uniform'), min_ms: z.number().min(0), max_ms: z.number().min(0) }),
  z.strictObject({ distribution: z.literal('normal'), mean_ms: z.number().min(0), stddev_ms: z.number().min(0) }),
  z.strictObject({ distribution: z.literal('lognormal'), median_ms: z.number().positive(), sigma: z.number().min(0) }),
  z.strictObject({ distribution: z.literal('exponential'), mean_ms: z.number().min(0) }),
]);
export type ProcessingConfig = z.infer<typeof processing>;

const emit = z.union([
  z.strictObject({ event: eventName, p: probability }),
  z.strictObject({ events: z.array(eventName).min(1).max(8), p: probability }),
]);

const stage = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'stage names are lowercase letters, digits and -'),
  input: z.array(eventName).min(1),
  destination: destinationName.optional(),
  processing: processing.default({ distribution: 'constant', ms: 0 }),
  emits: z.array(emit).default([]),
  failures: z
    .strictObject({ transient: probability.default(0), permanent: probability.default(0) })
    .default({ transient: 0, permanent: 0 }),
  retry: z
    .strictObject({
      max_attempts: z.number().int().min(1).max(100).default(3),
      backoff: z
        .strictObject({
          initial_ms: z.number().min(0).default(50),
          multiplier: z.number().min(1).default(2),
          max_ms: z.number().min(0).default(5000),
        })
        .default({ initial_ms: 50, multiplier: 2, max_ms: 5000 }),
    })
    .default({ max_attempts: 3, backoff: { initial_ms: 50, multiplier: 2, max_ms: 5000 } }),
});

const scenarioSchema = z.strictObject({
  name: z.string().regex(/^[a-z][a-z0-9-]{0,63}$/, 'scenario names are lowercase letters, digits and -'),
  description: z.string().optional(),
  entry: eventName,
  sink: destinationName.optional(),
  payments: z
    .strictObject({
      currencies: weights.default({ USD: 1 }),
      amount: z
        .strictObject({
          distribution: z.literal('lognormal'),
          median: z.number().int().positive(),
          sigma: z.number().min(0),
          min: z.number().int().positive().default(1),
          max: z.number().int().positive().default(100_000_000),
        })
        .default({ distribution: 'lognormal', median: 4500, sigma: 1, min: 1, max: 100_000_000 }),
      methods: weights.default({ card: 1 }),
      users: z.number().int().positive().default(100_000),
      merchants: z.number().int().positive().default(1000),
    })
    .default({
      currencies: { USD: 1 },
      amount: { distribution: 'lognormal', median: 4500, sigma: 1, min: 1, max: 100_000_000 },
      methods: { card: 1 },
      users: 100_000,
      merchants: 1000,
    }),
  stages: z.array(stage).min(1),
  /** How trace names a finished payment: the first class whose event type the payment reached. */
  classes: z.record(z.string().regex(/^[a-z][a-z0-9_-]{0,31}$/, 'class names are lowercase letters, digits, _ and -'), eventName).optional(),
});

export type ScenarioConfig = z.infer<typeof scenarioSchema>;
export type StageConfig = ScenarioConfig['stages'][number];

/** One possible outcome of a stage: the events it emits, in order. */
export interface Outcome {
  events: string[];
}

export interface Stage extends StageConfig {
  destination: string;
  outcomes: Outcome[];
  /** Cumulative probabilities of `outcomes`; a draw above the last one emits nothing. */
  outcomeCumulative: number[];
}

export interface Scenario {
  name: string;
  description: string | undefined;
  entry: string;
  sink: string;
  payments: ScenarioConfig['payments'];
  stages: Stage[];
  /** Which stage consumes an event type (at most one). */
  stageFor: ReadonlyMap<string, Stage>;
  /** Where an event of that type is published: its consuming stage's destination, or the sink. */
  destinationFor(type: string): string;
  /** Every destination of the pipeline, stages first, sink last. */
  destinations: string[];
  /** Event types that end a branch of a payment: no stage consumes them, or one that emits nothing. */
  terminalTypes: ReadonlySet<string>;
  /** Class of a finished payment from the event types it reached (first match of `classes`). */
  classify(types: ReadonlySet<string>): string | undefined;
  /** Class names in priority order. */
  classNames: string[];
  /** Where the scenario came from (built-in name or file path). */
  origin: string;
  /** The text it was parsed from: a generator thread parses the same scenario from it. */
  text: string;
}

const BUILTIN_DIR = fileURLToPath(new URL('../../fixtures/scenarios/', import.meta.url));

export function builtinScenarioNames(): string[] {
  return ['checkout'];
}

function lineOf(doc: ReturnType<typeof parseDocument>, counter: LineCounter, pathParts: PropertyKey[]): number | undefined {
  for (let n = pathParts.length; n >= 0; n--) {
    const node = doc.getIn(pathParts.slice(0, n) as (string | number)[], true);
    if (isNode(node) && node.range) return counter.linePos(node.range[0]).line;
  }
  return undefined;
}

function formatPath(parts: PropertyKey[]): string {
  return parts.reduce<string>((acc, p) => (typeof p === 'number' ? `${acc}[${p}]` : acc ? `${acc}.${String(p)}` : String(p)), '');
}

/** Parses and validates scenario text; `origin` names the file in messages. */
export function parseScenario(text: string, origin: string): Scenario {
  const counter = new LineCounter();
  const doc = parseDocument(text, { lineCounter: counter, prettyErrors: true, uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0]!;
    const line = err.linePos?.[0]?.line;
    throw new ConfigError(`scenario ${origin}${line ? `:${line}` : ''}: ${err.message.split('\n')[0]}`);
  }
  const raw: unknown = doc.toJS();
  const parsed = scenarioSchema.safeParse(raw);
  if (!parsed.success) {
    const issue = parsed.error.issues[0]!;
    const line = lineOf(doc, counter, issue.path);
    const where = formatPath(issue.path);
    throw new ConfigError(`scenario ${origin}${line ? `:${line}` : ''}: ${where ? `${where}: ` : ''}${issue.message}`);
  }
  return { ...buildScenario(parsed.data, origin, (p) => lineOf(doc, counter, p)), text };
}

function buildScenario(config: ScenarioConfig, origin: string, lineAt: (p: PropertyKey[]) => number | undefined): Omit<Scenario, 'text'> {
  const fail = (p: PropertyKey[], message: string): never => {
    const line = lineAt(p);
    throw new ConfigError(`scenario ${origin}${line ? `:${line}` : ''}: ${formatPath(p)}: ${message}`);
  };
  for (const code of Object.keys(config.payments.currencies)) {
    if (!isKnownCurrency(code)) fail(['payments', 'currencies', code], `'${code}' is not an ISO 4217 code payq knows`);
  }
  for (const method of Object.keys(config.payments.methods)) {
    if (!/^[a-z][a-z0-9_]{0,31}$/.test(method)) fail(['payments', 'methods', method], `'${method}' is not a method name (lowercase letters, digits, _)`);
  }
  if (config.payments.amount.min > config.payments.amount.max) fail(['payments', 'amount'], 'min is above max');

  const stageFor = new Map<string, Stage>();
  const names = new Set<string>();
  const stages: Stage[] = config.stages.map((s, i) => {
    if (names.has(s.name)) fail(['stages', i, 'name'], `stage '${s.name}' is declared twice`);
    names.add(s.name);
    if (s.processing.distribution === 'uniform' && s.processing.min_ms > s.processing.max_ms) {
      fail(['stages', i, 'processing'], 'min_ms is above max_ms');
    }
    if (s.failures.transient + s.failures.permanent > 1) fail(['stages', i, 'failures'], `transient + permanent is ${formatNumber(s.failures.transient + s.failures.permanent)}, more than 1`);
    const outcomes = s.emits.map((e) => ({ events: 'event' in e ? [e.event] : e.events }));
    let total = 0;
    const outcomeCumulative = s.emits.map((e) => (total += e.p));
    if (total > 1 + 1e-9) fail(['stages', i, 'emits'], `probabilities add up to ${formatNumber(total)}, more than 1`);
    // A payment that silently ends would look stuck to trace: outcomes must cover every case.
    if (s.emits.length > 0 && total < 1 - 1e-9) fail(['stages', i, 'emits'], `probabilities add up to ${formatNumber(total)}; they must add up to 1`);
    const stageValue: Stage = {
      ...s,
      destination: s.destination ?? `${config.name}.${s.name}`,
      outcomes,
      outcomeCumulative,
    };
    s.input.forEach((type, j) => {
      const other = stageFor.get(type);
      if (other) fail(['stages', i, 'input', j], `'${type}' is already the input of stage '${other.name}'`);
      stageFor.set(type, stageValue);
    });
    return stageValue;
  });
  if (!stageFor.has(config.entry)) fail(['entry'], `no stage takes '${config.entry}' as input`);

  const sink = config.sink ?? `${config.name}.events`;
  const destinations = [...new Set([...stages.map((s) => s.destination), sink])];
  const allTypes = new Set<string>([config.entry]);
  for (const st of stages) for (const o of st.outcomes) for (const t of o.events) allTypes.add(t);
  const terminalTypes = new Set([...allTypes].filter((t) => (stageFor.get(t)?.outcomes.length ?? 0) === 0));
  const classes = Object.entries(config.classes ?? {});
  classes.forEach(([name, type]) => {
    if (!allTypes.has(type)) fail(['classes', name], `'${type}' is not an event of this scenario`);
  });
  const classify = (types: ReadonlySet<string>): string | undefined => {
    for (const [name, type] of classes) if (types.has(type)) return name;
    for (const t of terminalTypes) if (types.has(t)) return t;
    return undefined;
  };
  return {
    name: config.name,
    description: config.description,
    entry: config.entry,
    sink,
    payments: config.payments,
    stages,
    stageFor,
    destinationFor: (type) => stageFor.get(type)?.destination ?? sink,
    destinations,
    terminalTypes,
    classify,
    classNames: classes.length > 0 ? classes.map(([name]) => name) : [...terminalTypes],
    origin,
  };
}

/** `--scenario`: a built-in name, or a path to a .yaml/.yml/.json file. */
export function loadScenario(nameOrPath: string): Scenario {
  const builtin = path.join(BUILTIN_DIR, `${nameOrPath}.yaml`);
  const isName = /^[a-z][a-z0-9-]*$/.test(nameOrPath);
  const file = isName && existsSync(builtin) ? builtin : nameOrPath;
  if (!existsSync(file)) {
    throw new ConfigError(`scenario '${nameOrPath}' is neither a built-in (${builtinScenarioNames().join(', ')}) nor a file`);
  }
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read scenario file ${file}: ${(err as Error).message}`, { cause: err });
  }
  return parseScenario(text, file === builtin ? nameOrPath : file);
}
