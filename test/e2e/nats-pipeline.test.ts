/**
 * NATS JetStream through the CLI (the checkout pipeline itself runs on NATS in
 * test/e2e/pipeline.test.ts, with the other brokers): `payq produce` then `payq consume` in child
 * processes. Plus what only a real server shows:
 * refused credentials exit 3 without printing the password (a second nats-server with a user
 * and password, started here on a free port when the binary is installed).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync } from 'node:fs';
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { NATS_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { waitFor } from '../helpers/wait.js';

const up = await brokerAvailable(NATS_URL);

describe.skipIf(!up)('payq on NATS JetStream', () => {
  it('CLI: payq produce acks 1000 payments, payq consume reads exactly them back', async () => {
    const topic = uniqueName('cli');
    try {
      const p = await runCli(['produce', '--broker', NATS_URL, '--topic', topic, '--count', '1000', '--seed', '7', '--json']);
      expect(p.code, p.stderr).toBe(0);
      expect(JSON.parse(p.stdout)).toMatchObject({ sent: 1000, acked: 1000, failed: 0 });

      const c = await runCli(['consume', '--broker', NATS_URL, '--topic', topic, '--group', uniqueName('g'), '--from-beginning', '--idle-timeout', '2s', '--json']);
      expect(c.code, c.stderr).toBe(0);
      const events = c.stdout.trim().split('\n').map((l) => JSON.parse(l) as { id: string; event: string });
      expect(events).toHaveLength(1000);
      expect(new Set(events.map((e) => e.id)).size).toBe(1000);
      expect(new Set(events.map((e) => e.event))).toEqual(new Set(['order_placed']));
    } finally {
      await deleteDestinations(NATS_URL, [topic]);
    }
  }, 30_000);

  it('CLI: an unreachable server exits 3 at once with one line', async () => {
    const port = await freePort();
    const r = await runCli(['produce', '--broker', `nats://127.0.0.1:${port}`, '--count', '1']);
    expect(r.code).toBe(3);
    expect(r.ms).toBeLessThan(15_000);
    expectOneErrorLine(r.stderr, /NATS nats:\/\/127\.0\.0\.1:\d+: server unreachable/);
  });

  const NATS_SERVER = '/usr/sbin/nats-server';
  it.skipIf(!existsSync(NATS_SERVER))('refused credentials exit 3, and the password is never printed', async () => {
    const port = await freePort();
    const server = spawn(NATS_SERVER, ['-a', '127.0.0.1', '-p', String(port), '--user', 'payq', '--pass', 'right-pass'], { stdio: 'ignore' });
    try {
      await waitFor(() => canConnect(port), 10_000, `nats-server with a password on port ${port}`);
      const r = await runCli(['produce', '--broker', `nats://payq:wrong-secret-pw@127.0.0.1:${port}`, '--count', '1']);
      expect(r.code).toBe(3);
      expectOneErrorLine(r.stderr, /refused our credentials/);
      expect(r.stderr).toContain('nats://payq:***@127.0.0.1');
      expect(r.stdout + r.stderr).not.toContain('wrong-secret-pw');
    } finally {
      await stop(server);
    }
  });
});

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer();
    s.on('error', reject);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as net.AddressInfo;
      s.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return Promise.resolve();
  return new Promise((resolve) => {
    child.once('exit', () => resolve());
    child.kill('SIGTERM');
  });
}
