/**
 * Where the real brokers are, and whether a test may skip when one is missing. In CI (CI=true)
 * or with PAYQ_REQUIRE_BROKERS=1 a missing broker fails the test instead of skipping it.
 */
import net from 'node:net';
import { randomBytes } from 'node:crypto';

export const KAFKA_URL = process.env['PAYQ_TEST_KAFKA'] ?? 'kafka://127.0.0.1:9092';
export const AMQP_URL = process.env['PAYQ_TEST_AMQP'] ?? 'amqp://guest:guest@127.0.0.1:5672';
export const NATS_URL = process.env['PAYQ_TEST_NATS'] ?? 'nats://127.0.0.1:4222';

export const brokersRequired = process.env['CI'] === 'true' || process.env['PAYQ_REQUIRE_BROKERS'] === '1';

function reachable(host: string, port: number, timeoutMs = 1500): Promise<boolean> {
  return new Promise((resolve) => {
    const socket = net.connect({ host, port });
    const done = (ok: boolean) => {
      socket.destroy();
      resolve(ok);
    };
    socket.setTimeout(timeoutMs, () => done(false));
    socket.once('connect', () => done(true));
    socket.once('error', () => done(false));
  });
}

function hostPort(url: string): [string, number] {
  const m = /^[a-z]+:\/\/(?:[^@/]*@)?([^:/,]+):(\d+)/.exec(url);
  if (!m) throw new Error(`test broker URL without host:port: ${url}`);
  return [m[1]!, Number(m[2])];
}

/**
 * Resolves true when the broker answers. When it doesn't: throws if brokers are required,
 * otherwise returns false so the suite can `skipIf` it.
 */
export async function brokerAvailable(url: string): Promise<boolean> {
  const [host, port] = hostPort(url);
  const ok = await reachable(host, port);
  if (!ok && brokersRequired) {
    throw new Error(`broker ${url.replace(/:[^:@/]*@/, ':***@')} is not reachable and brokers are required (CI); run 'npm run brokers:up'`);
  }
  return ok;
}

/** A destination name no other test (or earlier run) uses. */
export function uniqueName(prefix: string): string {
  return `payq-test.${prefix}.${Date.now().toString(36)}.${randomBytes(3).toString('hex')}`;
}
