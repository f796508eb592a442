/** `payq worker` usage, spawned as the real CLI; none of these reach a broker. */
import { describe, expect, it } from 'vitest';
import { runCli, expectOneErrorLine } from '../helpers/cli.js';

// Port 1 refuses connections: if a check below came after connecting, the exit code would be 3.
const NOWHERE = 'kafka://127.0.0.1:1';

describe('payq worker (CLI)', () => {
  it('refuses memory:// with exit 2 and says why', async () => {
    const r = await runCli(['worker', '--broker', 'memory://']);
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, /memory:\/\/.*lives inside one process.*payq bench/);
    const env = await runCli(['worker'], { env: { PAYQ_BROKER: 'memory://x' } });
    expect(env.code).toBe(2);
    expectOneErrorLine(env.stderr, /cannot use memory:\/\//);
  });

  it('rejects bad options before connecting (exit 2)', async () => {
    const cases: [string[], RegExp][] = [
      [['--failures', 'maybe'], /--failures: must be on or off/],
      [['--stage', 'nope'], /no stage 'nope' \(its stages: payment-service, capture-service/],
      [['--stage', 'payment-service,nope'], /no stage 'nope'/],
      [['--prefetch', '0'], /--prefetch: must be a whole number/],
      [['--time-scale', 'fast'], /--time-scale: must be a number of 0 or more/],
      [['--idle-timeout', 'soon'], /--idle-timeout: must be a duration/],
      [['--scenario', 'no-such-scenario'], /neither a built-in/],
    ];
    for (const [args, pattern] of cases) {
      const r = await runCli(['worker', '--broker', NOWHERE, ...args]);
      expect(r.code, `${args.join(' ')}: ${r.stderr}`).toBe(2);
      expectOneErrorLine(r.stderr, pattern);
    }
    const none = await runCli(['worker'], { env: { PAYQ_BROKER: '' } });
    expect(none.code).toBe(2);
    expectOneErrorLine(none.stderr, /no broker/);
  });

  it('an unreachable broker is exit 3', async () => {
    const r = await runCli(['worker', '--broker', 'amqp://guest:secret@127.0.0.1:1']);
    expect(r.code, r.stderr).toBe(3);
    expect(r.stderr).not.toContain('secret');
  });

  it('--help explains the command with examples', async () => {
    const r = await runCli(['worker', '--help']);
    expect(r.code).toBe(0);
    for (const text of ['--stage', '--failures', '--idle-timeout', 'payq-worker.<scenario>.<stage>', 'Examples:', 'payq worker --broker kafka://']) {
      expect(r.stdout).toContain(text);
    }
    const top = await runCli(['--help']);
    expect(top.stdout).toContain('worker');
  });
});
