import { describe, expect, it } from 'vitest';
import { runCli } from '../helpers/cli.js';

const COMMANDS = ['produce', 'consume', 'trace', 'worker', 'replay-dlq', 'bench', 'report'];
const GLOBAL = ['--broker', '--json', '--config', '--quiet', '--verbose', '--debug', '--password-file'];

describe('payq <command> --help', () => {
  it.each(COMMANDS)('%s --help lists the global flags and every scheme', async (command) => {
    const r = await runCli([command, '--help']);
    expect(r.code).toBe(0);
    for (const flag of GLOBAL) expect(r.stdout, `${command} --help: ${flag}`).toContain(flag);
    for (const scheme of ['memory://', 'kafka://', 'kafkas://', 'amqp://', 'amqps://', 'nats://', 'zmq://']) expect(r.stdout).toContain(scheme);
    expect(r.stdout).toContain('Examples:');
  });
});
