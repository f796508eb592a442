import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { brokerSchema, durationSchema, rateSchema, resolveOptions, wholeNumber } from '../../src/cli/options.js';
import { UsageError, ConfigError } from '../../src/errors.js';
import { COMMAND_NAMES, COMMANDS, GLOBAL_FLAGS } from '../../src/cli/commands/index.js';
import { defaultsOf, flagKey } from '../../src/cli/commands/describe.js';
import { BENCH_DEFAULTS, WORKER_DEFAULTS } from '../../src/core/defaults.js';

const schema = z.strictObject({
  broker: brokerSchema.optional(),
  count: wholeNumber(1).optional(),
  rate: rateSchema.optional(),
  duration: durationSchema.optional(),
  seed: wholeNumber(0).default(0),
});

describe('option resolution', () => {
  it('takes defaults < config file < environment < flags', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-opt-'));
    const file = path.join(dir, 'payq.yaml');
    writeFileSync(file, 'broker: memory://file\nproduce:\n  count: 10\n  rate: 5\n  seed: 3\n');
    const o = resolveOptions(schema, {
      command: 'produce',
      flags: { rate: '2k' },
      env: { PAYQ_COUNT: '20' },
      configFile: file,
    });
    expect(o.broker?.redacted).toBe('memory://file');
    expect(o.count).toBe(20);
    expect(o.rate).toBe(2000);
    expect(o.seed).toBe(3);
  });

  it('names the flag or variable a bad value came from', () => {
    expect(() => resolveOptions(schema, { command: 'produce', flags: { count: '-5' }, env: {} })).toThrow(
      new UsageError("--count: must be a whole number 1 or more (got '-5')"),
    );
    expect(() => resolveOptions(schema, { command: 'produce', flags: {}, env: { PAYQ_RATE: 'fast' } })).toThrow(/^PAYQ_RATE: /);
    expect(() => resolveOptions(schema, { command: 'produce', flags: { duration: '5 minutes' }, env: {} })).toThrow(/--duration: must be a duration/);
  });

  it('rejects unknown keys in a config file', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-opt-'));
    const file = path.join(dir, 'payq.yaml');
    writeFileSync(file, 'produce:\n  cuont: 10\n');
    expect(() => resolveOptions(schema, { command: 'produce', flags: {}, env: {}, configFile: file })).toThrow(ConfigError);
    expect(() => resolveOptions(schema, { command: 'produce', flags: {}, env: {}, configFile: file })).toThrow(/unknown option 'produce.cuont'/);
  });

  it('parses durations and rates in their documented forms', () => {
    expect(durationSchema.parse('250ms')).toBe(250);
    expect(durationSchema.parse('1.5m')).toBe(90_000);
    expect(durationSchema.parse('2h')).toBe(7_200_000);
    expect(rateSchema.parse('2000/s')).toBe(2000);
    expect(rateSchema.safeParse('0').success).toBe(false);
  });
});

describe('the command table', () => {
  /** Keys a command sets itself from its arguments, not from a flag. */
  const FROM_ARGUMENTS: Record<string, string[]> = { bench: ['jsonFile'], report: ['files'] };
  const globalKeys = GLOBAL_FLAGS.map((f) => flagKey(f.flags));

  it.each(COMMANDS)('$name: every flag is an option of its schema, every option a flag', async (description) => {
    const { schema } = await description.load();
    const keys = Object.keys(schema.shape);
    const flags = description.flags.map((f) => flagKey(f.flags));
    for (const key of flags) expect(keys, `${description.name}: --${key}`).toContain(key);
    for (const key of keys) expect([...flags, ...globalKeys, ...(FROM_ARGUMENTS[description.name] ?? [])], `${description.name}: ${key}`).toContain(key);
  });

  it.each(COMMANDS)('$name: its options resolve from the defaults of its flags alone', async (description) => {
    const { schema } = await description.load();
    expect(() => resolveOptions(schema, { command: description.name, flags: {}, env: {}, defaults: defaultsOf(description.flags) })).not.toThrow();
  });

  it("takes bench's and worker's defaults from core's", async () => {
    const bench = COMMANDS.find((c) => c.name === 'bench')!;
    const o = resolveOptions((await bench.load()).schema, { command: 'bench', flags: {}, env: {}, defaults: defaultsOf(bench.flags) });
    expect(o).toMatchObject({
      warmup: BENCH_DEFAULTS.warmupMs,
      producers: BENCH_DEFAULTS.producers,
      consumers: BENCH_DEFAULTS.consumers,
      drainTimeout: BENCH_DEFAULTS.drainTimeoutMs,
      idleTimeout: BENCH_DEFAULTS.idleTimeoutMs,
      startTimeout: BENCH_DEFAULTS.startTimeoutMs,
      partitions: WORKER_DEFAULTS.partitions,
      failures: WORKER_DEFAULTS.failures,
      timeScale: WORKER_DEFAULTS.timeScale,
    });
    const worker = COMMANDS.find((c) => c.name === 'worker')!;
    const w = resolveOptions((await worker.load()).schema, { command: 'worker', flags: {}, env: {}, defaults: defaultsOf(worker.flags) });
    expect(w).toMatchObject(WORKER_DEFAULTS);
  });

  it('puts the defaults below the config file, the environment and the flags', () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-opt-'));
    const file = path.join(dir, 'payq.yaml');
    writeFileSync(file, 'produce:\n  count: 10\n');
    const defaults = { count: 1, rate: '5', seed: 9 };
    const o = resolveOptions(schema, { command: 'produce', flags: { rate: '7' }, env: { PAYQ_SEED: '4' }, configFile: file, defaults });
    expect(o).toMatchObject({ count: 10, rate: 7, seed: 4 });
    expect(resolveOptions(schema, { command: 'produce', flags: {}, env: {}, defaults })).toMatchObject({ count: 1, rate: 5, seed: 9 });
  });

  it("lets a config file hold every command's section and the global options", () => {
    const dir = mkdtempSync(path.join(tmpdir(), 'payq-opt-'));
    const file = path.join(dir, 'payq.yaml');
    writeFileSync(file, `json: true\nquiet: true\n${COMMAND_NAMES.map((n) => `${n}: {}`).join('\n')}\n`);
    expect(() => resolveOptions(z.strictObject({ count: wholeNumber(1).optional() }), { command: 'report', flags: {}, env: {}, configFile: file })).not.toThrow();
    writeFileSync(file, 'produc: {}\n');
    expect(() => resolveOptions(schema, { command: 'produce', flags: {}, env: {}, configFile: file })).toThrow(/unknown option 'produc'/);
  });
});
