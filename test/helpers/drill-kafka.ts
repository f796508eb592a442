/**
 * A Kafka of the test's own for failure drills (issue #15): scripts/brokers.sh starts it on free
 * loopback ports with a state folder of its own (PAYQ_STATE_DIR, PAYQ_KAFKA_*_PORT), `restart`
 * kills it with SIGKILL and starts it again on the same data, and it is stopped by the PID that
 * script recorded. The shared Kafka on 9092 is never touched.
 */
import { spawn } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { freePort } from './drill-nats.js';

const SCRIPT = path.resolve('scripts/brokers.sh');
/** The broker's jars (fetched once by `scripts/brokers.sh up`); without them a drill is skipped. */
const KAFKA_LIB = path.resolve('scripts/kafka/target/lib');
/** A start under load takes 20–60 s here: the script waits this long before it gives up. */
const START_WAIT_S = 240;

/** Whether this machine can run a drill broker at all (Java and the Kafka jars). */
export function drillKafkaAvailable(): boolean {
  return existsSync(KAFKA_LIB) && existsSync(SCRIPT);
}

interface ScriptRun {
  code: number | null;
  stderr: string;
}

export class DrillKafka {
  /** Milliseconds from each kill to the broker answering again (one entry per restart). */
  readonly outagesMs: number[] = [];

  private constructor(
    readonly stateDir: string,
    readonly port: number,
    private readonly env: NodeJS.ProcessEnv,
  ) {}

  /** A broker on free ports with fresh data, answering (and its group coordinator loaded). */
  static async start(): Promise<DrillKafka> {
    const stateDir = mkdtempSync(path.join(os.tmpdir(), 'payq-drill-kafka-'));
    const [port, saslSsl, saslPlain, controller] = await distinctFreePorts(4);
    const env = {
      PAYQ_STATE_DIR: stateDir,
      PAYQ_KAFKA_PORT: String(port),
      PAYQ_KAFKA_SASL_SSL_PORT: String(saslSsl),
      PAYQ_KAFKA_SASL_PLAIN_PORT: String(saslPlain),
      PAYQ_KAFKA_CONTROLLER_PORT: String(controller),
      PAYQ_BROKER_WAIT: String(START_WAIT_S),
    };
    const kafka = new DrillKafka(stateDir, port!, env);
    const r = await kafka.script('up');
    if (r.code !== 0) {
      await kafka.stop();
      throw new Error(`drill Kafka did not start (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
    }
    return kafka;
  }

  /** payq's URL for it. */
  get url(): string {
    return `kafka://127.0.0.1:${this.port}`;
  }

  /** host:port for a plain kafkajs client. */
  get bootstrap(): string {
    return `127.0.0.1:${this.port}`;
  }

  /** The broker's PID as the script recorded it (undefined when not running). */
  get pid(): number | undefined {
    const file = path.join(this.stateDir, 'kafka.pid');
    if (!existsSync(file)) return undefined;
    const pid = Number(readFileSync(file, 'utf8').trim());
    return Number.isInteger(pid) && pid > 0 ? pid : undefined;
  }

  /**
   * SIGKILL, `pauseS` seconds away, then started again on the same data; resolves once it
   * answers. The outage (kill → answering) is kept in `outagesMs`; `onKilled` is called once the
   * broker process is gone.
   */
  async restart(pauseS = 2, onKilled?: () => void): Promise<number> {
    const started = performance.now();
    let killedAt: number | undefined;
    const r = await this.script('restart', { PAYQ_RESTART_PAUSE: String(pauseS) }, (line) => {
      if (killedAt === undefined && /killed pid/.test(line)) {
        killedAt = performance.now();
        onKilled?.();
      }
    });
    if (r.code !== 0) throw new Error(`drill Kafka restart failed (exit ${r.code}):\n${r.stderr.slice(-4000)}`);
    const outage = performance.now() - (killedAt ?? started);
    this.outagesMs.push(outage);
    return outage;
  }

  /** Stops the broker by its PID (the script's `down`) and removes the state folder and data. */
  async stop(): Promise<void> {
    const pid = this.pid;
    await this.script('down').catch(() => undefined);
    // A broker the script could not stop (it refused, or died mid-way): ours, so by its PID.
    if (pid !== undefined && processAlive(pid)) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // already gone
      }
    }
    rmSync(this.stateDir, { recursive: true, force: true });
  }

  private script(command: 'up' | 'down' | 'restart', extraEnv: NodeJS.ProcessEnv = {}, onLine?: (line: string) => void): Promise<ScriptRun> {
    return new Promise((resolve, reject) => {
      const child = spawn('bash', [SCRIPT, command, 'kafka'], { env: { ...process.env, ...this.env, ...extraEnv }, stdio: ['ignore', 'ignore', 'pipe'] });
      let stderr = '';
      let partial = '';
      child.stderr.setEncoding('utf8').on('data', (d: string) => {
        stderr += d;
        partial += d;
        const lines = partial.split('\n');
        partial = lines.pop()!;
        for (const line of lines) onLine?.(line);
      });
      child.on('error', reject);
      child.on('close', (code) => resolve({ code, stderr }));
    });
  }
}

function processAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch {
    return false;
  }
}


async function distinctFreePorts(n: number): Promise<number[]> {
  const ports = new Set<number>();
  while (ports.size < n) ports.add(await freePort());
  return [...ports];
}
