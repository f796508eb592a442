/**
 * Every validation error names the flag, says what was expected and what it got: a table of bad
 * values for the numeric, duration, enum and text flags of every command, run through each
 * command's option resolution (in process, as the program runs a command: options.ts runCommand).
 */
import { PassThrough } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Output } from '../../src/cli/output.js';
import type { CommandContext } from '../../src/cli/context.js';
import { COMMANDS } from '../../src/cli/commands/index.js';
import { runCommand } from '../../src/cli/options.js';
import { UsageError } from '../../src/errors.js';

const WHOLE = /must be a whole number/;
const DURATION = /must be a duration/;
const RATE = /must be a number of events per second/;
const NUMBER = /must be a number of 0 or more/;
const PERCENT = /must be a percentage/;
const ON_OFF = /must be on or off/;
const NOT_EMPTY = /must not be empty|must be a file name/;

// [command, flag key, value, what the message must say]
const cases: [string, string, string, RegExp][] = [
  ...['produce', 'bench'].flatMap((cmd) =>
    (
      [
        ['count', '-1', WHOLE],
        ['count', '0', WHOLE],
        ['count', '1.5', WHOLE],
        ['count', '0x10', WHOLE],
        ['count', 'NaN', WHOLE],
        ['count', '99999999999999999999', WHOLE],
        ['duration', 'abc', DURATION],
        ['duration', '0', DURATION],
        ['duration', '-5s', DURATION],
        ['duration', '1e3s', DURATION],
        ['duration', '9999h', /at most 596h/],
        ['rate', '0', RATE],
        ['rate', '-3', RATE],
        ['rate', 'NaN', RATE],
        ['rate', '0x10', RATE],
        ['rate', 'fast', RATE],
        ['seed', '-1', WHOLE],
        ['seed', 'x', WHOLE],
        ['partitions', '0', WHOLE],
        ['size', '-1', WHOLE],
        ['size', '99999999', WHOLE],
        ['runId', 'a b', /must be letters, digits/],
      ] as const
    ).map(([flag, value, expected]) => [cmd, flag, value, expected] as [string, string, string, RegExp]),
  ),
  ['produce', 'fromFile', '', NOT_EMPTY],
  ['produce', 'typeField', '.x', /must be a field path/],
  ['produce', 'batchSize', '0', WHOLE],
  ['produce', 'maxInFlight', '9999', WHOLE],
  ['produce', 'skipLines', '-1', WHOLE],
  ['bench', 'warmup', 'abc', /must be 0 or a duration/],
  ['bench', 'warmup', '-1s', /must be 0 or a duration/],
  ['bench', 'warmup', '9999h', /at most 596h/],
  ['bench', 'producers', '65', WHOLE],
  ['bench', 'consumers', '0', WHOLE],
  ['bench', 'timeScale', 'x', NUMBER],
  ['bench', 'timeScale', '-1', NUMBER],
  ['bench', 'failures', 'maybe', ON_OFF],
  ['bench', 'role', 'boss', /must be one of all, producer, worker, tracer/],
  ['bench', 'maxBacklog', '0', WHOLE],
  ['bench', 'drainTimeout', 'soon', DURATION],
  ['bench', 'idleTimeout', '0', DURATION],
  ['bench', 'startTimeout', 'x', DURATION],
  ['bench', 'jsonFile', '', NOT_EMPTY],
  ['bench', 'markdown', '', NOT_EMPTY],
  ['consume', 'limit', '0', WHOLE],
  ['consume', 'limit', 'ten', WHOLE],
  ['consume', 'prefetch', '100001', WHOLE],
  ['consume', 'idleTimeout', 'soon', DURATION],
  ['consume', 'type', 'a b', /event types are letters/],
  ['consume', 'group', 'a b', /must be letters/],
  ['consume', 'topic', 'a b', /must be a destination name/],
  ['consume', 'withMeta', 'maybe', /must be true or false/],
  ['consume', 'correlate', '.x', /is not a field path/],
  ['worker', 'prefetch', '0', WHOLE],
  ['worker', 'seed', '-1', WHOLE],
  ['worker', 'failures', 'maybe', ON_OFF],
  ['worker', 'timeScale', 'fast', NUMBER],
  ['worker', 'duration', '0', DURATION],
  ['worker', 'idleTimeout', 'x', DURATION],
  ['worker', 'partitions', '10001', WHOLE],
  ['trace', 'stuckAfter', '0', DURATION],
  ['trace', 'within', 'x', DURATION],
  ['trace', 'idleTimeout', '-1s', DURATION],
  ['trace', 'startTimeout', 'x', DURATION],
  ['trace', 'duration', '9999h', /at most 596h/],
  ['trace', 'untilFinished', '0', WHOLE],
  ['trace', 'payment', '', NOT_EMPTY],
  ['trace', 'runId', '', NOT_EMPTY],
  ['replay-dlq', 'limit', '0', WHOLE],
  ['replay-dlq', 'rate', '0', RATE],
  ['replay-dlq', 'maxReplays', '-1', WHOLE],
  ['replay-dlq', 'maxBytes', '0', WHOLE],
  ['replay-dlq', 'idleTimeout', 'x', DURATION],
  ['replay-dlq', 'window', '99999999', WHOLE],
  ['replay-dlq', 'since', '', NOT_EMPTY],
  ['replay-dlq', 'to', 'a b', /must be a destination name/],
  ['replay-dlq', 'dryRun', 'maybe', /must be true or false/],
  ['report', 'threshold', 'abc', PERCENT],
  ['report', 'failOnRegression', '-5', PERCENT],
  ['report', 'compare', '', NOT_EMPTY],
  ['report', 'markdown', '', NOT_EMPTY],
];

function ctx(): CommandContext {
  const sink = new PassThrough();
  sink.resume();
  const out = new Output({ stdout: sink, stderr: sink }, 'quiet', false);
  return { out, signal: new AbortController().signal, env: {}, stdin: new PassThrough() };
}

const flagName = (key: string) => (key === 'jsonFile' ? '--json FILE' : `--${key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)}`);

describe('validation messages name the flag, the expected form and the value', () => {
  it.each(cases)('%s --%s %j', async (command, key, value, expected) => {
    const description = COMMANDS.find((c) => c.name === command)!;
    const flags: Record<string, unknown> = { [key]: value };
    // A broker that is never reached: the options are refused before anything connects.
    if (command !== 'report' && command !== 'bench') flags['broker'] = 'kafka://127.0.0.1:1';
    const error = await runCommand(description, flags, ctx()).then(
      () => undefined,
      (err: unknown) => err,
    );
    expect(error).toBeInstanceOf(UsageError);
    const message = (error as Error).message;
    expect(message.startsWith(`${flagName(key)}: `), message).toBe(true);
    expect(message).toMatch(expected);
    expect(message).not.toMatch(/Invalid input|Invalid option|Too small|Too big|expected string|received/);
    // The value itself, quoted: `(got 'abc')` or `'.x' is not …`.
    expect(message).toMatch(new RegExp(`\\(got '${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}'\\)|^[^:]+: '${value.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}' `));
  });
});
