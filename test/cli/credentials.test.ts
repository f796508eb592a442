/** Broker passwords from --password-file, PAYQ_PASSWORD_FILE and PAYQ_PASSWORD, against real RabbitMQ. */
import { chmodSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable } from '../helpers/brokers.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'payq-pw-'));
afterAll(() => rmSync(dir, { recursive: true, force: true }));

/** guest's password (from the test URL), in a file only its owner can read. */
const password = decodeURIComponent(/^amqp:\/\/[^:]+:([^@]+)@/.exec(AMQP_URL)?.[1] ?? 'guest');
const userUrl = AMQP_URL.replace(/^(amqp:\/\/[^:]+):[^@]+@/, '$1@');
const file = path.join(dir, 'password');
writeFileSync(file, `${password}\n`);
chmodSync(file, 0o600);

describe('broker passwords from outside the command line', () => {
  it('--password-file, PAYQ_PASSWORD_FILE and PAYQ_PASSWORD each complete a URL that names only the user', async () => {
    await brokerAvailable(AMQP_URL);
    const runs = [
      await runCli(['produce', '--broker', userUrl, '--password-file', file, '--count', '5', '--json']),
      await runCli(['produce', '--broker', userUrl, '--count', '5', '--json'], { env: { PAYQ_PASSWORD_FILE: file } }),
      await runCli(['produce', '--broker', userUrl, '--count', '5', '--json'], { env: { PAYQ_PASSWORD: password } }),
    ];
    for (const r of runs) {
      expect(r.code, r.stderr).toBe(0);
      const summary = JSON.parse(r.stdout);
      expect(summary.acked).toBe(5);
      expect(summary.broker).toMatch(/^amqp:\/\/guest:\*\*\*@/);
    }
  });

  it('a URL without a user, or with a password of its own, refuses an explicit --password-file', async () => {
    const noUser = await runCli(['produce', '--broker', 'amqp://127.0.0.1:5672', '--password-file', file, '--count', '1']);
    expect(noUser.code).toBe(2);
    expectOneErrorLine(noUser.stderr, /--password-file needs a user in the broker URL/);
    const both = await runCli(['produce', '--broker', AMQP_URL, '--password-file', file, '--count', '1']);
    expect(both.code).toBe(2);
    expectOneErrorLine(both.stderr, /has a password already and --password-file gives another/);
  });

  it('a group- but not world-readable file is accepted; a world-readable one is refused without its content', async () => {
    const open = path.join(dir, 'open');
    writeFileSync(open, 'latency-order-secret');
    chmodSync(open, 0o644);
    const r = await runCli(['produce', '--broker', userUrl, '--password-file', open, '--count', '1']);
    expect(r.code).toBe(2);
    expectOneErrorLine(r.stderr, /readable by everyone \(mode 644\)/);
    expect(r.stdout + r.stderr).not.toContain('latency-order-secret');
    const group = path.join(dir, 'group');
    writeFileSync(group, password);
    chmodSync(group, 0o640);
    const g = await runCli(['produce', '--broker', userUrl, '--password-file', group, '--count', '1', '--json']);
    expect(g.code, g.stderr).toBe(0);
  });
});
