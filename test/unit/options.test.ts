import { writeFileSync, mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { describe, expect, it } from 'vitest';
import { z } from 'zod';
import { brokerSchema, durationSchema, rateSchema, resolveOptions, wholeNumber } from '../../src/cli/options.js';
import { UsageError, ConfigError } from '../../src/errors.js';

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
