/**
 * One typed path for options: schema defaults < config file < PAYQ_* environment < flags,
 * validated once per command with zod. Unknown keys in a config file are errors, and every
 * message names where the bad value came from (`--count`, `PAYQ_RATE`, `payq.yaml: produce.rate`).
 */
import { readFileSync } from 'node:fs';
import { parse as parseYaml } from 'yaml';
import { z } from 'zod';
import { ConfigError, UsageError } from '../errors.js';
import { parseBrokerUrl, type BrokerUrl } from '../drivers/url.js';
import { parseDurationMs } from '../core/clock.js';
import { parseCorrelate, parseFieldPath, type CorrelateSpec } from '../events/decode.js';

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

/** `30s`, `5m`, `250ms`, `1h` or seconds → milliseconds. */
export const durationSchema = z.union([z.number(), z.string()]).transform((v, ctx) => {
  const ms = typeof v === 'number' ? v * 1000 : parseDurationMs(v);
  if (ms === undefined || !(ms > 0)) return addIssue(ctx, `must be a duration such as 30s, 5m or 250ms (got '${v}')`);
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

/** Options every command takes. */
export interface GlobalFlags {
  broker?: string;
  json?: boolean;
  quiet?: boolean;
  verbose?: boolean;
  debug?: boolean;
  config?: string;
}

const envName = (key: string) => `PAYQ_${key.replace(/[A-Z]/g, (c) => `_${c}`).toUpperCase()}`;
const flagName = (key: string) => `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`;

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
}

/**
 * Merges the sources for one command and validates the result. The config file may hold
 * top-level options for every command (`broker:`) and a section per command (`produce:`).
 */
export function resolveOptions<S extends z.ZodObject>(schema: S, input: ResolveInput): z.output<S> {
  const keys = Object.keys(schema.shape);
  const env = input.env ?? process.env;
  const merged: Record<string, unknown> = {};
  const origin: Record<string, string> = {};

  if (input.configFile) {
    const file = readConfigFile(input.configFile);
    const section = file[input.command];
    const commands = ['produce', 'consume', 'worker', 'trace', 'replay-dlq', 'bench', 'report'];
    for (const [key, value] of Object.entries(file)) {
      if (commands.includes(key)) continue;
      if (!keys.includes(key)) {
        if (['broker', 'json', 'quiet', 'verbose', 'debug'].includes(key)) continue;
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

  const result = schema.safeParse(merged);
  if (!result.success) {
    const issue = result.error.issues[0]!;
    const key = String(issue.path[0] ?? '');
    const where = origin[key] ?? flagName(key);
    throw new UsageError(`${where}: ${issue.message}`);
  }
  return result.data;
}
