/**
 * ZeroMQ from the CLI, with real sockets: bench reports throughput, latency and loss; a tap in
 * one process sees what `payq produce` sends from another (the tap's process hosts the hub); and
 * the commands that need stored messages exit 2 at once with a sentence saying why. Each test
 * uses ports of its own.
 */
import net from 'node:net';
import { describe, expect, it } from 'vitest';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';
import { startCli } from '../helpers/spawn.js';

/** A free port whose successor is free too (the hub takes both). */
async function freePair(): Promise<number> {
  for (;;) {
    const port = await new Promise<number>((resolve, reject) => {
      const s = net.createServer();
      s.on('error', reject);
      s.listen(0, '127.0.0.1', () => {
        const { port: p } = s.address() as net.AddressInfo;
        s.close(() => resolve(p));
      });
    });
    if (port >= 65535) continue;
    const nextFree = await new Promise<boolean>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(false));
      s.listen(port + 1, '127.0.0.1', () => s.close(() => resolve(true)));
    });
    if (nextFree) return port;
  }
}

describe('ZeroMQ from the CLI', () => {
  it('payq bench reports throughput, latency and loss', async () => {
    const url = `zmq://127.0.0.1:${await freePair()}`;
    const r = await runCli(['bench', '--broker', url, '--duration', '3s', '--warmup', '1s', '--rate', '300', '--seed', '1', '--json'], { timeoutMs: 50_000 });
    expect(r.code, r.stderr).toBe(0);
    const report = JSON.parse(r.stdout) as { schema: string; loss: unknown; throughput: { events_per_s: number }; latency: Record<string, unknown> };
    expect(report.schema).toBe('payq.report/v1');
    expect(report.throughput.events_per_s).toBeGreaterThan(0);
    expect(JSON.stringify(report.latency)).toContain('p99_ms');
    // At 300 payments/s nothing overflows ZeroMQ's queues; flat out, loss is what bench shows.
    expect(report.loss).toBe(0);
  }, 55_000);

  it('a tap in one process sees what payq produce sends from another', async () => {
    const url = `zmq://127.0.0.1:${await freePair()}`;
    const tap = startCli(['consume', '--broker', url, '--topic', 'zmq-e2e.orders', '--idle-timeout', '3s', '--json', '-v']);
    try {
      await tap.waitForStderr(/consuming zmq-e2e\.orders/, 20_000);
      const p = await runCli(['produce', '--broker', url, '--topic', 'zmq-e2e.orders', '--count', '500', '--seed', '3', '--json']);
      expect(p.code, p.stderr).toBe(0);
      expect(JSON.parse(p.stdout)).toMatchObject({ sent: 500, acked: 500 });
      expect(await tap.exited).toBe(0);
      const ids = tap.stdout().trim().split('\n').map((l) => (JSON.parse(l) as { id: string }).id);
      expect(new Set(ids).size).toBe(500);
    } finally {
      tap.child.kill('SIGKILL');
    }
  }, 40_000);

  it('commands that need stored messages exit 2 at once and say why', async () => {
    const url = `zmq://127.0.0.1:${await freePair()}`;
    const replay = await runCli(['replay-dlq', '--broker', url, '--dlq', 'checkout.orders.dlq']);
    expect(replay.code, replay.stderr).toBe(2);
    expectOneErrorLine(replay.stderr, /ZeroMQ keeps no destinations/);

    const trace = await runCli(['trace', '--broker', url, '--from-beginning', '--idle-timeout', '1s']);
    expect(trace.code, trace.stderr).toBe(2);
    expectOneErrorLine(trace.stderr, /ZeroMQ keeps no messages/);

    const consume = await runCli(['consume', '--broker', url, '--topic', 'x', '--from-beginning', '--idle-timeout', '1s']);
    expect(consume.code, consume.stderr).toBe(2);
    expectOneErrorLine(consume.stderr, /--from-beginning/);
  }, 30_000);
});
