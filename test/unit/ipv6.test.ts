/** IPv6 literals in broker URLs reach each client as an address it can connect to. */
import net from 'node:net';
import { logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { kafkaConfigFromUrl } from '../../src/drivers/kafka/config.js';
import { natsConfig } from '../../src/drivers/nats/config.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { zmqConfig } from '../../src/drivers/zeromq/config.js';

function listenOnLoopbackV6(): Promise<{ port: number; accepted: Promise<string>; close(): void }> {
  return new Promise((resolve, reject) => {
    let accept!: (address: string) => void;
    const accepted = new Promise<string>((r) => (accept = r));
    const server = net.createServer((socket) => {
      accept(socket.localAddress ?? '');
      socket.destroy();
    });
    server.once('error', reject);
    server.listen(0, '::1', () => resolve({ port: (server.address() as net.AddressInfo).port, accepted, close: () => server.close() }));
  });
}

describe('IPv6 literals', () => {
  it('kafka: the bootstrap entry kafkajs splits at its first colon still connects to ::1', async () => {
    const server = await listenOnLoopbackV6();
    try {
      const config = kafkaConfigFromUrl(parseBrokerUrl(`kafka://127.0.0.1:1,[::1]:${server.port}`), logLevel.NOTHING);
      const [first, second] = config.brokers as string[];
      expect(first).toBe('127.0.0.1:1');
      // What kafkajs does with an entry (connectionPoolBuilder): split(':')[0] / [1].
      const host = second!.split(':')[0]!;
      const port = Number(second!.split(':')[1]);
      expect(host).not.toContain('[');
      expect(port).toBe(server.port);
      const socket = config.socketFactory!({ host, port, ssl: false as never, onConnect: () => undefined });
      expect(await server.accepted).toBe('::1');
      socket.destroy();
    } finally {
      server.close();
    }
  });

  it('kafka: host names and IPv4 addresses go to kafkajs as written', () => {
    const config = kafkaConfigFromUrl(parseBrokerUrl('kafka://broker-1:9092,10.0.0.5:9093'), logLevel.NOTHING);
    expect(config.brokers).toEqual(['broker-1:9092', '10.0.0.5:9093']);
  });

  it('nats and zmq get the address in the bracketed form their clients parse', () => {
    expect(natsConfig(parseBrokerUrl('nats://[::1]:4222,[fe80::1]:4223')).servers).toEqual(['[::1]:4222', '[fe80::1]:4223']);
    const zmq = zmqConfig(parseBrokerUrl('zmq://[::1]:5999'));
    expect(zmq.host).toBe('::1');
    expect(zmq.publishEndpoint).toBe('tcp://[::1]:5999');
    expect(zmq.subscribeEndpoint).toBe('tcp://[::1]:6000');
  });
});
