/**
 * `--assert EXPR`: thresholds over report keys, for CI gates.
 *
 *   EXPR   := KEY OP NUMBER
 *   KEY    := an alias (below) | a dotted path into the report, e.g. latency.publish.p99_ms,
 *             handlers.payment-service.t_ms, throughput.consumed.mb_per_s
 *   OP     := < | <= | > | >= | == | !=
 *   NUMBER := a decimal number, optionally followed by % (÷100: loss<0.1%) or k (×1000: throughput>=5k)
 *
 * Spaces around OP are allowed. A key must lead to a number in the schema of payq.report/v1, and
 * to one the report will have: bench checks the keys against what its scenario's report holds
 * (`benchReportKeys`) and report against the file's (`reportKeys`), so a misspelt key or a handler
 * that does not exist is a usage error before anything runs, never a breach after the run.
 */
import { z } from 'zod';
import { UsageError } from '../errors.js';
import { reportSchema, sinkHopKey, type Report } from './report.js';

export const ASSERT_OPS = ['<=', '>=', '==', '!=', '<', '>'] as const;
export type AssertOp = (typeof ASSERT_OPS)[number];

/** Short names for the keys CI gates use most. */
export const ASSERT_ALIASES: Readonly<Record<string, string>> = {
  p50_ms: 'latency.end_to_end.p50_ms',
  p90_ms: 'latency.end_to_end.p90_ms',
  p99_ms: 'latency.end_to_end.p99_ms',
  p999_ms: 'latency.end_to_end.p999_ms',
  max_ms: 'latency.end_to_end.max_ms',
  mean_ms: 'latency.end_to_end.mean_ms',
  throughput: 'throughput.events_per_s',
  events_per_s: 'throughput.events_per_s',
  payments_per_s: 'throughput.payments_per_s',
  mb_per_s: 'throughput.consumed.mb_per_s',
  publish_p50_ms: 'latency.publish.p50_ms',
  publish_p99_ms: 'latency.publish.p99_ms',
  publish_max_ms: 'latency.publish.max_ms',
  lost: 'events.lost',
  duplicates: 'events.duplicates',
  out_of_order: 'events.out_of_order',
  dead_lettered: 'dlq.total',
  dlq: 'dlq.total',
  stuck: 'payments.stuck',
  unfinished: 'payments.in_flight',
  in_flight: 'events.in_flight',
  not_drained: 'events.not_drained',
};

export interface Assertion {
  /** As written. */
  text: string;
  /** The dotted report path it checks (aliases resolved). */
  path: string;
  op: AssertOp;
  value: number;
}

export interface AssertionOutcome {
  assertion: Assertion;
  /** The report's value; undefined when the report has no such key (a stage it did not run). */
  actual: number | undefined;
  passed: boolean;
}

const EXPR = /^\s*([A-Za-z0-9_.:-]+)\s*(<=|>=|==|!=|<|>)\s*(-?\d+(?:\.\d+)?(?:[eE][-+]?\d+)?)\s*(%|k)?\s*$/;

function unwrap(schema: z.ZodType): z.ZodType {
  let s = schema;
  while (s instanceof z.ZodNullable || s instanceof z.ZodOptional || s instanceof z.ZodDefault) s = s.unwrap() as z.ZodType;
  return s;
}

/** Where a dotted path leads in the report schema: 'number', 'other', or undefined (no such key). */
export function schemaKind(path: string): 'number' | 'other' | undefined {
  let s: z.ZodType = reportSchema;
  for (const part of path.split('.')) {
    s = unwrap(s);
    if (s instanceof z.ZodObject) {
      const next = (s.shape as Record<string, z.ZodType>)[part];
      if (next === undefined) return undefined;
      s = next;
    } else if (s instanceof z.ZodRecord) {
      if (part === '') return undefined;
      s = s.valueType as z.ZodType;
    } else return undefined;
  }
  return unwrap(s) instanceof z.ZodNumber ? 'number' : 'other';
}

export function parseAssertion(text: string): Assertion {
  const m = EXPR.exec(text);
  if (!m) {
    throw new UsageError(`--assert '${text}': expected KEY OP NUMBER, e.g. p99_ms<250 or loss==0 (OP is one of ${ASSERT_OPS.join(' ')})`);
  }
  const key = m[1]!;
  const path = ASSERT_ALIASES[key] ?? key;
  const kind = schemaKind(path);
  if (kind === undefined) {
    throw new UsageError(`--assert '${text}': the report has no key '${key}'`, {
      hint: `use a dotted report path (e.g. latency.publish.p99_ms) or an alias: ${Object.keys(ASSERT_ALIASES).join(', ')}, apt_ms, loss, availability`,
    });
  }
  if (kind !== 'number') throw new UsageError(`--assert '${text}': '${key}' is not a number in the report (a section?)`);
  let value = Number(m[3]);
  if (m[4] === '%') value /= 100;
  if (m[4] === 'k') value *= 1000;
  return { text: text.trim(), path, op: m[2] as AssertOp, value };
}

function lookup(report: Report, path: string): number | undefined {
  let cur: unknown = report;
  for (const part of path.split('.')) {
    if (cur === null || typeof cur !== 'object') return undefined;
    cur = (cur as Record<string, unknown>)[part];
  }
  return typeof cur === 'number' ? cur : undefined;
}

function holds(actual: number, op: AssertOp, value: number): boolean {
  switch (op) {
    case '<':
      return actual < value;
    case '<=':
      return actual <= value;
    case '>':
      return actual > value;
    case '>=':
      return actual >= value;
    case '==':
      return actual === value;
    case '!=':
      return actual !== value;
  }
}

export function evaluateAssertions(report: Report, assertions: Assertion[]): AssertionOutcome[] {
  return assertions.map((assertion) => {
    const actual = lookup(report, assertion.path);
    return { assertion, actual, passed: actual !== undefined && holds(actual, assertion.op, assertion.value) };
  });
}

// ------------------------------------------------------------------------------------------------
// The keys a report has: assertions are checked against them before anything runs.

/** The keys of a report an assertion may name: paths to numbers, and paths to figures that are null. */
export interface ReportKeys {
  /** Dotted paths to numbers; a `*` segment stands for any name (a record whose names are unknown). */
  numbers: string[];
  /** Dotted paths to figures the report has as null (e.g. loss in the report of one part). */
  nulls: string[];
  /** What the report is, for messages: "a.json", "the report of scenario checkout". */
  what: string;
}

/** The keys of a report as it is. */
export function reportKeys(report: Report, what: string): ReportKeys {
  const numbers: string[] = [];
  const nulls: string[] = [];
  const walk = (value: unknown, path: string) => {
    if (typeof value === 'number') numbers.push(path);
    else if (value === null) nulls.push(path);
    else if (typeof value === 'object' && !Array.isArray(value)) {
      for (const [k, v] of Object.entries(value as Record<string, unknown>)) walk(v, path === '' ? k : `${path}.${k}`);
    }
  };
  const { histograms: _encoded, ...figures } = report;
  walk(figures, '');
  return { numbers, nulls, what };
}

/** What a bench report will hold, known before the run. */
export interface BenchReportShape {
  /** The scenario's stage names: the handlers and hops of the report. */
  stages: string[];
  /** The names dlq.by_reason takes. */
  deadLetterReasons: readonly string[];
  /** Whether the run has a target rate and producers (else publish_delay and publish_from_intended are null). */
  withRate: boolean;
  /** A part of a run (`--role producer|worker|tracer`): loss and events.lost are null. */
  partial: boolean;
  /** The optional sections this report will have (e.g. `capacity` with --find-max). */
  sections?: readonly string[];
  what: string;
}

/** The keys a bench report will have: the schema's numbers, with the scenario's names in its records. */
export function benchReportKeys(shape: BenchReportShape): ReportKeys {
  const names: Record<string, readonly string[]> = {
    handlers: shape.stages,
    'latency.hops': [...shape.stages, sinkHopKey(shape.stages)],
    'dlq.by_reason': shape.deadLetterReasons,
  };
  const nullable = new Set([...(shape.withRate ? [] : ['latency.publish_delay', 'latency.publish_from_intended']), ...(shape.partial ? ['loss', 'events.lost'] : [])]);
  const numbers: string[] = [];
  const nulls: string[] = [];
  const walk = (schema: z.ZodType, path: string, isNull: boolean) => {
    // An optional section is there only when the run will write it.
    if (schema instanceof z.ZodOptional && !(shape.sections ?? []).includes(path)) return;
    const s = unwrap(schema);
    const into = (p: string) => (path === '' ? p : `${path}.${p}`);
    if (s instanceof z.ZodNumber) (isNull ? nulls : numbers).push(path);
    else if (s instanceof z.ZodObject) {
      for (const [k, v] of Object.entries(s.shape as Record<string, z.ZodType>)) walk(v, into(k), isNull || nullable.has(into(k)));
    } else if (s instanceof z.ZodRecord) {
      for (const k of names[path] ?? ['*']) walk(s.valueType as z.ZodType, into(k), isNull);
    }
  };
  const { histograms: _encoded, ...figures } = reportSchema.shape;
  walk(z.object(figures), '', false);
  return { numbers, nulls, what: shape.what };
}

const matches = (pattern: string, path: string): boolean => {
  const a = pattern.split('.');
  const b = path.split('.');
  return a.length === b.length && a.every((seg, i) => seg === '*' || seg === b[i]);
};

/** Known keys most like `path`: same section and same last name first. */
function likeKeys(path: string, keys: string[]): string[] {
  const want = path.split('.');
  const score = (k: string) => {
    const have = k.split('.');
    return (have[0] === want[0] ? 2 : 0) + (have.at(-1) === want.at(-1) ? 1 : 0) + (have.length === want.length ? 1 : 0);
  };
  const ranked = keys.map((k) => ({ k, s: score(k) })).filter((x) => x.s >= 2);
  const best = Math.max(0, ...ranked.map((x) => x.s));
  return ranked.filter((x) => x.s === best).map((x) => x.k);
}

/** Refuses (usage error) an assertion on a key the report does not have, or has as null. */
export function checkAssertionKeys(assertions: Assertion[], keys: ReportKeys): void {
  for (const a of assertions) {
    if (keys.numbers.some((p) => matches(p, a.path))) continue;
    if (keys.nulls.some((p) => matches(p, a.path) || a.path.startsWith(`${p}.`))) {
      throw new UsageError(`--assert '${a.text}': ${a.path} is null in ${keys.what}, so it can never be checked`, {
        hint: /^(loss|events\.lost)$/.test(a.path)
          ? 'only the merged parts of a run can tell loss: payq report --merge the parts, and assert there'
          : a.path.startsWith('latency.publish_')
            ? 'publish delays are measured against a target rate: give bench --rate'
            : 'a figure that is null was not measured in this run',
      });
    }
    const like = likeKeys(a.path, keys.numbers);
    const aliases = Object.entries(ASSERT_ALIASES).filter(([, p]) => keys.numbers.some((k) => matches(k, p))).map(([alias]) => alias);
    const shown = like.length > 0 ? like.slice(0, 12).join(', ') + (like.length > 12 ? ', …' : '') : `${aliases.join(', ')}, apt_ms, loss, availability`;
    throw new UsageError(`--assert '${a.text}': ${keys.what} has no key ${a.path}`, { hint: `known: ${shown}` });
  }
}
