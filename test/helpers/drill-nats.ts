/**
 * A nats-server of the test's own for failure drills (issue #15): JetStream on a free loopback
 * port with a store folder of its own, stopped by its PID (SIGTERM or SIGKILL) and started again
 * on the same store and port. The machine's NATS on 4222 is never touched.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import net from 'node:net';
import os from 'node:os';
import path from 'node:path';

export const NATS_SERVER_BIN = process.env['PAYQ_NATS_SERVER'] ?? '/usr/sbin/nats-server';

/** Whether this machine can run a drill server at all. */
export function natsServerAvailable(): boolean {
  return existsSync(NATS_SERVER_BIN);
}

/** A loopback port nobody listens on now. */
export function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const server = net.createServer();
    server.once('error', reject);
    server.listen(0, '127.0.0.1', () => {
      const { port } = server.address() as net.AddressInfo;
      server.close(() => resolve(port));
    });
  });
}

function portOpen(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host: '127.0.0.1', port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(500, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));

export class DrillNats {
  private child: ChildProcess | undefined;
  private log = '';
  /** How many times it was started (1 after start(), 2 after one restart). */
  starts = 0;

  private constructor(
    readonly port: number,
    readonly storeDir: string,
  ) {}

  /** A server on a free port with a fresh store, answering. */
  static async start(): Promise<DrillNats> {
    const server = new DrillNats(await freePort(), mkdtempSync(path.join(os.tmpdir(), 'payq-drill-nats-')));
    await server.up();
    return server;
  }

  get url(): string {
    return `nats://127.0.0.1:${this.port}`;
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  /** What the server printed (for a failing test's message). */
  output(): string {
    return this.log.slice(-4000);
  }

  /** Starts the server on the same port and store; resolves once it accepts connections with JetStream ready. */
  async up(): Promise<void> {
    if (this.child) throw new Error('drill nats-server already running');
    const child = spawn(NATS_SERVER_BIN, ['-a', '127.0.0.1', '-p', String(this.port), '-js', '-sd', this.storeDir], { stdio: ['ignore', 'pipe', 'pipe'] });
    this.child = child;
    this.starts++;
    const collect = (d: Buffer) => {
      this.log += d.toString('utf8');
      if (this.log.length > 100_000) this.log = this.log.slice(-50_000);
    };
    child.stdout!.on('data', collect);
    child.stderr!.on('data', collect);
    child.once('exit', () => {
      if (this.child === child) this.child = undefined;
    });
    // nats-server restores its streams before it listens for clients: an open port means JetStream is up.
    for (let i = 0; i < 150; i++) {
      if (this.child !== child) throw new Error(`drill nats-server exited while starting:\n${this.output()}`);
      if (await portOpen(this.port)) return;
      await sleep(100);
    }
    throw new Error(`drill nats-server did not listen on ${this.port} within 15 s:\n${this.output()}`);
  }

  /** Stops it by its PID and waits for the process to end. */
  async down(signal: 'SIGTERM' | 'SIGKILL' = 'SIGKILL'): Promise<void> {
    const child = this.child;
    if (!child || child.exitCode !== null) return;
    const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()));
    child.kill(signal);
    const late = setTimeout(() => child.kill('SIGKILL'), 10_000);
    await exited;
    clearTimeout(late);
    this.child = undefined;
  }

  /**
   * Down, `downMs` away, up again on the same store and port; `onKilled` is called once the
   * process is gone. Resolves with the outage in ms: the signal → the server accepting connections.
   */
  async restart(downMs: number, signal: 'SIGTERM' | 'SIGKILL' = 'SIGKILL', onKilled?: () => void): Promise<number> {
    const started = performance.now();
    await this.down(signal);
    onKilled?.();
    await sleep(downMs);
    await this.up();
    return performance.now() - started;
  }

  /** Stops it and removes its store. */
  async dispose(): Promise<void> {
    await this.down('SIGKILL');
    rmSync(this.storeDir, { recursive: true, force: true });
  }
}
