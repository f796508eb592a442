/**
 * A RabbitMQ node of a drill test's own, so the test can stop and start it (`rabbitmqctl
 * stop_app` / `start_app`) without touching the machine's broker on 5672, which other test files
 * use meanwhile. Everything lives in a temp folder: its node name (`payq-drill-<pid>-<n>@localhost`),
 * its database, logs, Erlang cookie (HOME) and an empty plugin list; it listens on loopback on
 * two free ports below the ephemeral range (a client socket's local port there could take the
 * AMQP port while the node is stopped). stop() stops the node and removes the folder.
 *
 * The RabbitMQ scripts are run from /usr/lib/rabbitmq/bin when it exists (the Debian wrappers in
 * /usr/sbin switch to the rabbitmq user, who could not write the temp folder), else from PATH.
 */
import { execFile } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import path from 'node:path';
import { promisify } from 'node:util';

const run = promisify(execFile);
const LIB_BIN = '/usr/lib/rabbitmq/bin';
const bin = (name: string) => (existsSync(path.join(LIB_BIN, name)) ? path.join(LIB_BIN, name) : name);

export interface DrillRabbit {
  /** amqp://guest:guest@127.0.0.1:PORT */
  url: string;
  node: string;
  /** `rabbitmqctl stop_app`: the broker goes away (connections closed), the node stays. */
  stopApp(): Promise<void>;
  /** `rabbitmqctl start_app`, then waits until the AMQP port answers. */
  startApp(): Promise<void>;
  /**
   * stop_app, `pauseMs` away, start_app; `onStopped` is called once stop_app returned (the broker
   * is away). Resolves with the outage in ms: the AMQP port refusing connections (watched while
   * stop_app runs: the command itself takes seconds to start) → the port answering again.
   */
  restart(pauseMs: number, onStopped?: () => void): Promise<number>;
  /** Stops the node and removes its folder. */
  stop(): Promise<void>;
}

/** Whether this machine can start a node of its own (rabbitmq-server installed). */
export async function drillRabbitPossible(): Promise<boolean> {
  try {
    await run(bin('rabbitmqctl'), ['version'], { timeout: 20_000 });
    return true;
  } catch {
    return false;
  }
}

function portFree(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const server = net.createServer();
    server.once('error', () => resolve(false));
    server.listen(port, '127.0.0.1', () => server.close(() => resolve(true)));
  });
}

/** A free port in 20000–32000 (below Linux's ephemeral range), not RabbitMQ's usual 25672. */
async function freePort(taken: number[]): Promise<number> {
  for (;;) {
    const port = 20_000 + Math.floor(Math.random() * 12_000);
    if (port === 25_672 || taken.includes(port)) continue;
    if (await portFree(port)) return port;
  }
}

function answers(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect(port, '127.0.0.1');
    socket.once('connect', () => {
      socket.destroy();
      resolve(true);
    });
    socket.once('error', () => resolve(false));
  });
}

async function waitForPort(port: number, timeoutMs: number, what: string): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!(await answers(port))) {
    if (Date.now() > deadline) throw new Error(`${what}: RabbitMQ not answering on 127.0.0.1:${port} after ${timeoutMs / 1000} s`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

let started = 0;

export async function startDrillRabbit(): Promise<DrillRabbit> {
  const dir = mkdtempSync(path.join(tmpdir(), 'payq-drill-rabbit-'));
  const node = `payq-drill-${process.pid}-${++started}@localhost`;
  const port = await freePort([]);
  const distPort = await freePort([port]);
  writeFileSync(path.join(dir, 'enabled_plugins'), '');
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    HOME: dir,
    RABBITMQ_NODENAME: node,
    RABBITMQ_NODE_IP_ADDRESS: '127.0.0.1',
    RABBITMQ_NODE_PORT: String(port),
    RABBITMQ_DIST_PORT: String(distPort),
    RABBITMQ_MNESIA_BASE: path.join(dir, 'mnesia'),
    RABBITMQ_LOG_BASE: path.join(dir, 'log'),
    RABBITMQ_ENABLED_PLUGINS_FILE: path.join(dir, 'enabled_plugins'),
    RABBITMQ_CONFIG_FILE: path.join(dir, 'rabbitmq'),
    RABBITMQ_ADVANCED_CONFIG_FILE: path.join(dir, 'advanced.config'),
    RABBITMQ_PID_FILE: path.join(dir, 'pid'),
  };
  const ctl = (...args: string[]) => run(bin('rabbitmqctl'), ['-q', '-n', node, ...args], { env, timeout: 60_000 });
  await run(bin('rabbitmq-server'), ['-detached'], { env, timeout: 30_000 });
  const stop = async () => {
    await ctl('stop').catch(() => undefined);
    // The node's own pid, should stop not have ended it (only the process this helper started).
    try {
      const pid = Number(readFileSync(env['RABBITMQ_PID_FILE']!, 'utf8').trim());
      if (pid > 0) process.kill(pid, 'SIGKILL');
    } catch {
      // gone already
    }
    rmSync(dir, { recursive: true, force: true });
  };
  try {
    await waitForPort(port, 60_000, `node ${node}`);
  } catch (err) {
    await stop();
    throw err;
  }
  const stopApp = async () => {
    await ctl('stop_app');
  };
  const startApp = async () => {
    await ctl('start_app');
    await waitForPort(port, 60_000, `start_app on ${node}`);
  };
  return {
    url: `amqp://guest:guest@127.0.0.1:${port}`,
    node,
    stopApp,
    startApp,
    restart: async (pauseMs, onStopped) => {
      let downAt: number | undefined;
      let stopping = true;
      const watching = (async () => {
        while (stopping && downAt === undefined) {
          if (!(await answers(port))) downAt = performance.now();
          else await new Promise((res) => setTimeout(res, 50));
        }
      })();
      try {
        await stopApp();
      } finally {
        stopping = false;
        await watching;
      }
      const started = downAt ?? performance.now();
      onStopped?.();
      await new Promise((res) => setTimeout(res, pauseMs));
      await startApp();
      return performance.now() - started;
    },
    stop,
  };
}
