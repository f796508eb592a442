/**
 * One typed path for options: the flags' defaults < config file < PAYQ_* environment < flags,
 * validated once per command with zod, here and nowhere else: a command's run is handed the result. Unknown keys in a config file are errors, and every
 * message names where the bad value came from (`--count`, `PAYQ_RATE`, `payq.yaml: produce.rate`).
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, UsageError } from '../errors.js';
import { parseBrokerUrl, type BrokerUrl } from '../drivers/url.js';
import { parseDurationMs } from '../core/clock.js';
import { parseCorrelate, parseFieldPath, type CorrelateSpec } from '../events/decode.js';
import { passwordSource, withPassword } from './credentials.js';
import type { CommandContext } from './context.js';
import { COMMAND_NAMES, GLOBAL_FLAGS } from './commands/index.js';
import { defaultsOf, flagKey, type CommandDescription, type FlagValue } from './commands/describe.js';

type Raw = string | number | boolean;

function addIssue(ctx: z.RefinementCtx, message: string): typeof z.NEVER {
  ctx.addIssue({ code: 'custom', message });
  return z.NEVER;
}

/** A whole number in [min, max], from a flag string or a config number. */
export function wholeNumber(min: number, max = Number.MAX_SAFE_INTEGER) {
  return z.union([z.number(), z.string()]).transform((v, ctx) => {
    const n = typeof v === 'number' ? v : /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN;
    if (!Number.isSafeInteger(n) || n < min || n > max) {
      const range = max === Number.MAX_SAFE_INTEGER ? `${min} or more` : `from ${min} to ${max}`;
      return addIssue(ctx, `must be a whole number ${range} (got '${v}')`);
    }
    return n;
  });
}

/** Events per second: `2000`, `2000/s`, `2.5k`. */
export const rateSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const m = typeof v === 'number' ? null : /^\s*(\d+(?:\.\d+)?)(k)?(?:\/s)?\s*$/i.exec(v);
  const n = typeof v === 'number' ? v : m ? Number(m[1]) * (m[2] ? 1000 : 1) : NaN;
  if (!(n > 0) || !Number.isFinite(n)) return addIssue(ctx, `must be a number of events per second above 0, e.g. 2000 (got '${v}')`);
  return n;
});

/** The longest duration a timer can wait (2^31 - 1 ms, about 596 h): longer ones fire at once. */
/**
 * `i/N`, 1 ≤ i ≤ N: shard i of N — of the seeded stream (produce, bench's producer part) or of the
 * payments traced (trace, bench's tracer part). README: "payq produce", "Tracer shards".
 */
export const shardSchema = z.union([z.number(), z.string()]).transform((v, ctx): { index: number; count: number } => {
  const m = /^\s*(\d{1,6})\s*\/\s*(\d{1,6})\s*$/.exec(String(v));
  const index = m ? Number(m[1]) : NaN;
  const count = m ? Number(m[2]) : NaN;
  if (!(count >= 1 && index >= 1 && index <= count)) {
    ctx.addIssue({ code: 'custom', message: `must be i/N with 1 ≤ i ≤ N, e.g. 1/3 (got '${v}')` });
    return z.NEVER;
  }
  return { index, count };
});

/**
 * `--procs N` (README "Every core: --procs"): a number of threads, or `auto`, one per core
 * (os.availableParallelism()).
 */
export const procsSchema = z.union([z.number(), z.string()]).transform((v, ctx): number => {
  if (String(v).trim() === 'auto') return availableParallelism();
  const n = typeof v === 'number' ? v : /^\s*\d{1,4}\s*$/.test(v) ? Number(v) : NaN;
  if (!(Number.isSafeInteger(n) && n >= 1 && n <= 1024)) return addIssue(ctx, `must be a whole number from 1 to 1024, or auto (got '${v}')`);
  return n;
});

export const MAX_DURATION_MS = 2 ** 31 - 1;

/** `30s`, `5m`, `250ms`, `1h` or seconds → milliseconds. */
export const durationSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v * 1000 : parseDurationMs(v);
  if (ms === undefined || !(ms > 0)) return addIssue(ctx, `must be a duration such as 30s, 5m or 250ms (got '${v}')`);
  if (ms > MAX_DURATION_MS) return addIssue(ctx, `must be a duration of at most 596h (got '${v}')`);
  return ms;
});

export const brokerSchema = z.string().transform((v, ctx): BrokerUrl => {
  try {
    return parseBrokerUrl(v);
  } catch (err) {
    return addIssue(ctx, (err as Error).message);
  }
});

export const destinationSchema = z
  .string()
  .regex(/^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$/, 'must be a destination name: letters, digits, . _ - (at most 200)');

function parsedBy<T>(parse: (text: string) => T) {
  return z.string().transform((v, ctx): T => {
    try {
      return parse(v);
    } catch (err) {
      if (err instanceof UsageError) return addIssue(ctx, err.message);
      throw err;
    }
  });
}

/** A body field path such as data.order_id (`--type-field`, `--time-field`). */
export const fieldPathSchema = parsedBy(parseFieldPath);
/** `--correlate PATH` or `--correlate DEST=PATH,…` (decode.ts). */
export const correlateSchema = parsedBy<CorrelateSpec>(parseCorrelate);

export const flagSchema = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  if (/^(1|true|yes|on)$/i.test(v)) return true;
  if (/^(0|false|no|off)?$/i.test(v)) return false;
  return addIssue(ctx, `must be true or false (got '${v}')`);
});

/** `on`/`off` (or true/false, yes/no, 1/0): `--failures`. */
export const onOffSchema = z.union([z.boolean(), z.string()]).transform((v, ctx) => {
  if (typeof v === 'boolean') return v;
  if (/^(on|true|yes|1)$/i.test(v)) return true;
  if (/^(off|false|no|0)$/i.test(v)) return false;
  return addIssue(ctx, `must be on or off (got '${v}')`);
});

/** A number of 0 or more, fractions allowed: `--time-scale 0.5`. */
export const nonNegativeSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const n = typeof v === 'number' ? v : /^\s*\d+(\.\d+)?\s*$/.test(v) ? Number(v) : NaN;
  if (!(n >= 0) || !Number.isFinite(n)) return addIssue(ctx, `must be a number of 0 or more, e.g. 0.5 (got '${v}')`);
  return n;
});

/** A repeatable flag's values (`--assert a --assert b`), or one value, or a list in a config file. */
export const listSchema = z.union([z.string(), z.array(z.string())]).transform((v) => (Array.isArray(v) ? v : [v]));

const envName = (key: string) => `PAYQ_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
// `jsonFile` is bench's `--json FILE` (the file given after the --json flag).
const flagName = (key: string) => (key === 'jsonFile' ? '--json FILE' : `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);

function readConfigFile(file: string): Record<string, unknown> {
  let text: string;
  try {
    text = readFileSync(file, 'utf8');
  } catch (err) {
    throw new ConfigError(`cannot read config file ${file}: ${(err as NodeJS.ErrnoException).code === 'ENOENT' ? 'no such file' : (err as Error).message}`);
  }
  let parsed: unknown;
  try {
    parsed = parseYaml(text);
  } catch (err) {
    throw new ConfigError(`config file ${file}: ${(err as Error).message.split('\n')[0]}`);
  }
  if (parsed === null || parsed === undefined) return {};
  if (typeof parsed !== 'object' || Array.isArray(parsed)) throw new ConfigError(`config file ${file}: expected a mapping of options`);
  return parsed as Record<string, unknown>;
}

export interface ResolveInput {
  command: string;
  /** Values commander parsed from the command line (only those given). */
  flags: Record<string, unknown>;
  env?: NodeJS.ProcessEnv;
  /** Path of a config file (`--config` or PAYQ_CONFIG). */
  configFile?: string | undefined;
  /** The flags' defaults (commands/describe.ts), below every other source. */
  defaults?: Readonly<Record<string, FlagValue>>;
}

/** Options any command's config file may set at its top even when that command does not take them (`broker:` for report). */
const GLOBAL_CONFIG_KEYS = GLOBAL_FLAGS.filter((f) => f.inConfigFile).map((f) => flagKey(f.flags));

/**
 * Merges the sources for one command and validates the result. The config file may hold
 * top-level options for every command (`broker:`) and a section per command (`produce:`).
 */
export function resolveOptions<S extends z.ZodObject>(schema: S, input: ResolveInput): z.output<S> {
  const keys = Object.keys(schema.shape);
  const env = input.env ?? process.env;
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};
  for (const [key, value] of Object.entries(input.defaults ?? {})) if (keys.includes(key)) merged[key] = value;

  if (input.configFile) {
    const file = readConfigFile(input.configFile);
    const section = file[input.command];
    for (const [key, value] of Object.entries(file)) {
      if (COMMAND_NAMES.includes(key)) continue;
      if (!keys.includes(key)) {
        if (GLOBAL_CONFIG_KEYS.includes(key)) continue;
        throw new ConfigError(`config file ${input.configFile}: unknown option '${key}'`);
      }
      merged[key] = value;
      origin[key] = `${input.configFile}: ${key}`;
    }
    if (section !== undefined) {
      if (section === null || typeof section !== 'object' || Array.isArray(section)) {
        throw new ConfigError(`config file ${input.configFile}: '${input.command}' must be a mapping of options`);
      }
      for (const [key, value] of Object.entries(section)) {
        if (!keys.includes(key)) throw new ConfigError(`config file ${input.configFile}: unknown option '${input.command}.${key}'`);
        merged[key] = value;
        origin[key] = `${input.configFile}: ${input.command}.${key}`;
      }
    }
  }
  for (const key of keys) {
    const value = env[envName(key)];
    if (value !== undefined && value !== '') {
      merged[key] = value;
      origin[key] = envName(key);
    }
  }
  for (const [key, value] of Object.entries(input.flags)) {
    if (value === undefined || !keys.includes(key)) continue;
    merged[key] = value as Raw;
    origin[key] = flagName(key);
  }

  // A password from --password-file / PAYQ_PASSWORD goes into the URL before it is parsed.
  if (keys.includes('broker') && typeof merged['broker'] === 'string') {
    merged['broker'] = withPassword(merged['broker'], passwordSource(input.flags, env));
  } else if (keys.includes('broker') && typeof input.flags['passwordFile'] === 'string') {
    throw new UsageError('--password-file goes with a --broker URL that names a user');
  }
  const result = schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = String(issue.path[0] ?? '');
    const where = origin[key] ?? flagName(key);
    throw new UsageError(`${where}: ${issueText(issue, key, merged[key])}`);
  }
  return result.data;
}

type Issue = z.core.$ZodIssue;

/** zod's own wording ("Invalid input", "Too small: …"), which says nothing about the flag. */
const ZOD_DEFAULT = /^(Invalid|Too small|Too big)\b/;

/** The issues under a union, flattened: each alternative's reasons. */
function leaves(issue: Issue): Issue[] {
  return issue.code === 'invalid_union' ? issue.errors.flat().flatMap(leaves) : [issue];
}

function expectedText(issue: Issue): string {
  if (!ZOD_DEFAULT.test(issue.message)) return issue.message;
  switch (issue.code) {
    case 'invalid_value':
      return issue.values.length === 1 ? `must be ${JSON.stringify(issue.values[0])}` : `must be one of ${issue.values.map((v) => String(v)).join(', ')}`;
    case 'too_small':
      if (issue.origin === 'string') return Number(issue.minimum) <= 1 ? 'must not be empty' : `must be at least ${issue.minimum} characters`;
      return issue.origin === 'array' ? `needs at least ${issue.minimum}` : `must be at least ${issue.minimum}`;
    case 'too_big':
      return issue.origin === 'string' ? `must be at most ${issue.maximum} characters` : `must be at most ${issue.maximum}`;
    case 'invalid_type':
      return `must be ${issue.expected === 'array' ? 'a list' : issue.expected === 'object' ? 'a mapping' : `a ${issue.expected}`}`;
    case 'invalid_format':
      return `must match ${'pattern' in issue ? String(issue.pattern) : issue.format}`;
    default:
      return 'is not valid';
  }
}

/** What a bad value should have been, and what it was (never for --broker: a URL may hold a password). */
function issueText(issue: Issue, key: string, value: unknown): string {
  const reasons = leaves(issue);
  // A union (`0` or a duration): the alternative that explains itself, else all the values it takes.
  const own = reasons.find((r) => !ZOD_DEFAULT.test(r.message));
  const values = reasons.every((r) => r.code === 'invalid_value') ? reasons.flatMap((r) => (r.code === 'invalid_value' ? r.values : [])) : undefined;
  let text =
    own?.message ?? (values ? `must be one of ${values.map((v) => String(v)).join(', ')}` : expectedText(reasons[0] ?? issue));
  if (!/\(got /.test(text) && key !== 'broker') {
    const item = Array.isArray(value) && typeof issue.path[1] === 'number' ? value[issue.path[1]] : value;
    const shown = typeof item === 'string' ? item : JSON.stringify(item) ?? String(item);
    // Unless the message already quotes the value ("'.x' is not a field path").
    if (!text.includes(`'${shown}'`)) text += ` (got '${shown.length > 60 ? `${shown.slice(0, 57)}...` : shown}')`;
  }
  return text;
}

/** A duration that may be 0 (`--warmup 0`, `0s`); a config file gives seconds as a number. */
export const durationOrZero = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v * 1000 : /^\s*0+\s*$/.test(v) ? 0 : parseDurationMs(v);
  if (ms === undefined || !(ms >= 0) || !Number.isFinite(ms)) {
    ctx.addIssue({ code: 'custom', message: `must be 0 or a duration such as 2s, 1m or 500ms (got '${v}')` });
    return z.NEVER;
  }
  if (ms > MAX_DURATION_MS) {
    ctx.addIssue({ code: 'custom', message: `must be a duration of at most 596h (got '${v}')` });
    return z.NEVER;
  }
  return ms;
});

/** `--metrics-port`, `--metrics-host`, `--metrics-linger` (README "Live metrics"; their defaults: describe.ts METRICS_FLAGS). */
export const METRICS_OPTIONS = {
  metricsPort: wholeNumber(0, 65_535).optional(),
  metricsHost: z.string().min(1),
  metricsLinger: durationOrZero,
};

/** `--reconnect-timeout` (its default: describe.ts CONNECTION_FLAGS). */
export const CONNECTION_OPTIONS = {
  reconnectTimeout: durationSchema,
};

/**
 * Runs one command: loads its schema and run, resolves its options from the flags typed (only
 * those), PAYQ_*, the config file (`--config` or PAYQ_CONFIG) and its flags' defaults, and hands
 * run the validated result.
 */
export async function runCommand(command: CommandDescription, flags: Record<string, unknown>, ctx: CommandContext): Promise<void> {
  const { schema, run } = await command.load();
  const options = resolveOptions(schema, {
    command: command.name,
    flags,
    env: ctx.env,
    configFile: (flags['config'] as string | undefined) ?? ctx.env['PAYQ_CONFIG'],
    defaults: defaultsOf(command.flags),
  });
  await run(options, ctx);
}
