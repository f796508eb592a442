/**
 * One SIGTERM stops a command that is still waiting for a broker that does not answer (README
 * "Exit codes": 130, interrupted): the broker here is a TCP socket that accepts connections and
 * never says a word, so the client (kafkajs, amqplib, nats.js) waits on its handshake and retries.
 * The stop must end that wait (types.ts, DriverOptions.signal), not the timeouts behind it (which
 * end in exit 3, "broker unreachable"), and must print no verdict: nothing on stdout, one error
 * line on stderr. No assertion depends on timing: the signal is sent once the command has
 * connected to the socket.
 */
import net from 'node:net';
import { afterAll, describe, expect, it } from 'vitest';
import { startCli } from '../helpers/spawn.js';

const sockets = new Set<net.Socket>();
const servers: net.Server[] = [];

/** A port that accepts connections and never answers; resolves `connected` at the first one. */
async function silentBroker(): Promise<{ port: number; connected: Promise<void> }> {
  let connected!: () => void;
  const first = new Promise<void>((resolve) => (connected = resolve));
  const server = net.createServer((socket) => {
    sockets.add(socket);
    socket.on('error', () => undefined);
    socket.on('close', () => sockets.delete(socket));
    connected();
  });
  servers.push(server);
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  return { port: (server.address() as net.AddressInfo).port, connected: first };
}

afterAll(async () => {
  for (const s of sockets) s.destroy();
  await Promise.all(servers.map((s) => new Promise((resolve) => s.close(resolve))));
});

const BROKERS = [
  ['Kafka', 'kafka', (port: number) => `kafka://127.0.0.1:${port}`],
  ['RabbitMQ', 'rabbitmq', (port: number) => `amqp://guest:guest@127.0.0.1:${port}`],
  ['NATS', 'nats', (port: number) => `nats://127.0.0.1:${port}`],
] as const;

const COMMANDS: Array<[string, string[]]> = [
  ['trace', ['trace', '--topic', 'silent.orders', '--json']],
  ['worker', ['worker', '--json']],
  ['consume', ['consume', '--topic', 'silent.orders']],
  ['replay-dlq', ['replay-dlq', '--dlq', 'silent.orders.dlq', '--json']],
  ['produce', ['produce', '--count', '5', '--json']],
];

describe.concurrent.each(BROKERS)('one SIGTERM while %s does not answer', (_broker, driver, urlOf) => {
  it.each(COMMANDS)('%s exits 130 at once, with no verdict', { timeout: 40_000 }, async (_name, args) => {
    const broker = await silentBroker();
    const child = startCli([...args, '--broker', urlOf(broker.port)]);
    await broker.connected;
    child.child.kill('SIGTERM');
    const code = await child.exited;
    expect(code, child.stderr()).toBe(130);
    expect(child.stdout()).toBe('');
    const errors = child.stderr().split('\n').filter((l) => l.startsWith('payq: error:'));
    expect(errors, child.stderr()).toHaveLength(1);
    expect(errors[0]).toMatch(new RegExp(`^payq: error: interrupted while connecting \\(${driver} [a-z]+://(guest:\\*\\*\\*@)?127\\.0\\.0\\.1:\\d+\\)$`));
    expect(child.stderr()).not.toMatch(/unreachable|did not come back|timed out/);
  });
});
