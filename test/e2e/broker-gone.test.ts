/**
 * Issue #15: a broker that goes away for good ends every command that subscribes (exit 3, one
 * line, nothing counted as lost; test/helpers/broker-gone.ts says what is checked), on a
 * nats-server (test/helpers/drill-nats.ts) and a RabbitMQ node (test/helpers/drill-rabbitmq.ts)
 * of the test's own, side by side. Kafka: test/e2e/drill-kafka.test.ts, on its drill broker.
 */
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import amqplib from 'amqplib';
import { describe, it } from 'vitest';
import { brokersRequired } from '../helpers/brokers.js';
import { rideOutBrokerGone } from '../helpers/broker-gone.js';
import { DrillNats, natsServerAvailable } from '../helpers/drill-nats.js';
import { drillRabbitPossible, startDrillRabbit } from '../helpers/drill-rabbitmq.js';

const rabbitPossible = await drillRabbitPossible();
if (brokersRequired && !rabbitPossible) throw new Error('CI needs rabbitmq-server to start a drill node of its own');
if (brokersRequired && !natsServerAvailable()) throw new Error('CI needs nats-server to start a drill server of its own');

describe.concurrent('a broker gone for good ends every command that subscribes: exit 3, one line, nothing counted as lost', () => {
  it.skipIf(!natsServerAvailable())('NATS JetStream: consume, worker, trace, replay-dlq and bench', async () => {
    const server = await DrillNats.start();
    try {
      await rideOutBrokerGone(
        {
          url: server.url,
          held: async (destinations) => {
            const nc = await natsConnect({ servers: `127.0.0.1:${server.port}`, maxReconnectAttempts: 0 });
            try {
              const jsm = await jetstreamManager(nc);
              let n = 0;
              for (const d of destinations) n += (await jsm.streams.info(await jsm.streams.find(`payq.${d}._`))).state.messages;
              return n;
            } finally {
              await nc.close();
            }
          },
          stopForGood: () => server.down('SIGKILL'),
        },
        'nats',
      );
    } finally {
      await server.dispose();
    }
  }, 90_000);

  it.skipIf(!rabbitPossible)('RabbitMQ: consume, worker, trace, replay-dlq and bench', async () => {
    const rabbit = await startDrillRabbit();
    try {
      await rideOutBrokerGone(
        {
          url: rabbit.url,
          held: async (queues) => {
            const conn = await amqplib.connect(rabbit.url);
            try {
              const ch = await conn.createChannel();
              let n = 0;
              for (const q of queues) n += (await ch.checkQueue(q)).messageCount;
              return n;
            } finally {
              await conn.close();
            }
          },
          // The node stays, its broker does not come back (stop() ends the node).
          stopForGood: () => rabbit.stopApp(),
        },
        'rabbitmq',
      );
    } finally {
      await rabbit.stop();
    }
  }, 150_000);
});
