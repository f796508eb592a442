import net from 'node:net';
import { defineDriverConformance } from './driver-suite.js';

/** A free loopback port whose successor is free too: the hub takes both. */
async function freePortPair(): Promise<number> {
  const listen = (port: number) =>
    new Promise<number | undefined>((resolve) => {
      const s = net.createServer();
      s.once('error', () => resolve(undefined));
      s.listen(port, '127.0.0.1', () => {
        const bound = (s.address() as net.AddressInfo).port;
        s.close(() => resolve(bound));
      });
    });
  for (;;) {
    const port = await listen(0);
    if (port !== undefined && port < 65535 && (await listen(port + 1)) !== undefined) return port;
  }
}

// Brokerless: the driver hosts its own hub, so the suite needs no server running. Unsettled
// messages are gone with their subscription (ZeroMQ keeps nothing), and an unreachable hub is
// one the driver may only join (it would host one on any free local port).
const ZMQ_URL = process.env['PAYQ_TEST_ZMQ'] ?? `zmq://127.0.0.1:${await freePortPair()}`;

defineDriverConformance('zeromq', ZMQ_URL, {
  returnsUnsettled: false,
  unreachableUrl: (port) => `zmq://127.0.0.1:${port}?hub=join`,
});
