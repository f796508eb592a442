/**
 * `--assert EXPR`: thresholds over report keys, for CI gates.
 *
 *   EXPR   := KEY OP NUMBER
 *   KEY    := an alias (below) | a dotted path into the report, e.g. latency.publish.p99_ms,
 *             handlers.payment-service.t_ms, throughput.consumed.mb_per_s
 *   OP     := < | <= | > | >= | == | !=
 *   NUMBER := a decimal number, optionally followed by % (÷100: loss<0.1%) or k (×1000: throughput>=5k)
 *
 * Spaces around OP are allowed. A key must lead to a number in the schema of payq.report/v1:
 * a misspelt key is a usage error before the run starts.
 */
import { z } from 'zod';
import { UsageError } from '../errors.js';
import { reportSchema, type Report } from './report.js';

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
