/**
 * What a command says about itself. Each `*.command.ts` exports one description: its name,
 * summary, examples and flags (light: read by `--help`, which must load no validator and no broker
 * client), and `load()`, which brings in its zod schema and `run(options, ctx)` only when it runs.
 * The program builds the commander tree and `--help` from these; options.ts resolves the options
 * (defaults < config file < PAYQ_* < flags) and hands `run` the validated, typed result.
 */
import type { Command } from 'commander';
import type { z } from 'zod';
import type { CommandContext } from '../context.js';
import { DEFAULT_RECONNECT_TIMEOUT_MS } from '../../drivers/types.js';

/** A flag's value as typed on a command line. */
export type FlagValue = string | number;

export interface FlagSpec {
  /** commander's syntax: `--count <n>`, `--dry-run`, `-q, --quiet`. */
  flags: string;
  /** The help line. `{default}` stands for the default; without it the default is appended as `(default: "…")`. */
  help: string;
  /** Taken when no flag, PAYQ_* variable or config file gives a value; written as on a command line. */
  default?: FlagValue;
  /**
   * A default the run applies itself, because leaving the flag out means something of its own
   * (consume's --type-field then also reads payq's headers first): shown, never filled in.
   */
  shownDefault?: FlagValue;
  /** The default is applied but not shown in `--help`. */
  quietDefault?: boolean;
  /** Left out of `--help` (kept for tuning and tests). */
  hidden?: boolean;
  /** May be given more than once; the values are collected in order. */
  repeatable?: boolean;
}

/** The part of a command loaded only when it runs. */
export interface CommandRun<S extends z.ZodObject = z.ZodObject> {
  /** The command's options: a key per flag (global ones included), validated. */
  schema: S;
  run(options: z.output<S>, ctx: CommandContext): Promise<void>;
}

export interface CommandDescription {
  name: string;
  summary: string;
  examples: readonly string[];
  flags: readonly FlagSpec[];
  /** Text after the flags in `<command> --help`. */
  helpAfter?: string;
  /** What flags cannot say: arguments (bench's `--json FILE`, report's files). */
  configure?(cmd: Command): void;
  load(): Promise<CommandRun>;
}

/** The option key of a flag: `--metrics-port <n>` → metricsPort (as commander names it). */
export function flagKey(flags: string): string {
  const long = /--([a-z0-9-]+)/i.exec(flags)?.[1] ?? '';
  return long.replace(/-([a-z0-9])/g, (_, c: string) => c.toUpperCase());
}

/** A flag's help line with its default said in it. */
export function helpLine(spec: FlagSpec): string {
  const shown = spec.default ?? spec.shownDefault;
  if (shown === undefined) return spec.help;
  if (spec.help.includes('{default}')) return spec.help.replaceAll('{default}', String(shown));
  return spec.quietDefault ? spec.help : `${spec.help} (default: ${JSON.stringify(String(shown))})`;
}

/** Every flag's default, by option key. */
export function defaultsOf(flags: readonly FlagSpec[]): Record<string, FlagValue> {
  return Object.fromEntries(flags.filter((f) => f.default !== undefined).map((f) => [flagKey(f.flags), f.default!]));
}

/** Milliseconds as a flag would give them: 2000 → 2s, 60000 → 60s, 300000 → 5m, 250 → 250ms. */
export function durationText(ms: number): string {
  if (ms === 0) return '0s';
  if (ms > 3_600_000 && ms % 3_600_000 === 0) return `${ms / 3_600_000}h`;
  if (ms > 60_000 && ms % 60_000 === 0) return `${ms / 60_000}m`;
  if (ms % 1000 === 0) return `${ms / 1000}s`;
  return `${ms}ms`;
}

/** The built-in scenario a command uses when none is named. */
export const DEFAULT_SCENARIO = 'checkout';

/** `--metrics-port`, `--metrics-host`, `--metrics-linger` (README "Live metrics"): the same three on every command that serves live metrics. */
export const METRICS_FLAGS: readonly FlagSpec[] = [
  { flags: '--metrics-port <n>', help: 'serve live OpenMetrics on http://127.0.0.1:N/metrics while running (0: any free port)' },
  { flags: '--metrics-host <addr>', help: 'with --metrics-port: the address to listen on', default: '127.0.0.1' },
  { flags: '--metrics-linger <time>', help: 'with --metrics-port: keep serving the final figures this long after the end', default: '0s' },
];

/** `--procs` (README "Every core: --procs"): what each of the N threads runs, then the flag's own text. */
export function procsFlag(each: string): FlagSpec {
  return { flags: '--procs <n|auto>', help: `threads, each with its own client, ${each}; auto = one per core (default {default})`, default: 1 };
}

/** `--reconnect-timeout` (README "Failure drills"): on every command that talks to a broker. */
export const CONNECTION_FLAGS: readonly FlagSpec[] = [
  {
    flags: '--reconnect-timeout <time>',
    help: 'how long to keep reconnecting to a broker that went away (sends wait meanwhile) before giving up with exit 3',
    default: durationText(DEFAULT_RECONNECT_TIMEOUT_MS),
  },
];

/** How consume and trace read besides a group or a tap (README "How payq reads a destination it did not build"). */
export const READ_MODE_FLAGS: readonly FlagSpec[] = [
  { flags: '--requeue', help: 'with --group, on a queue: hold every message read and hand it back when done (each seen once; the queue keeps it, flagged redelivered)' },
  { flags: '--exchange <name>', help: 'RabbitMQ: tap this exchange of yours (a queue of its own bound with --binding), taking nothing' },
  { flags: '--binding <key>', help: 'RabbitMQ, with --exchange: the binding key (e.g. # for everything)' },
  { flags: '--stream-offset <offset>', help: 'RabbitMQ stream queue: read it from first, last, next, an offset or an ISO time, taking nothing' },
];
