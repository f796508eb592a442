/** Deletes what a benchmark created on a real broker (with the broker's own client library). */
import amqplib from 'amqplib';
import { Kafka, logLevel } from 'kafkajs';

export async function deleteBenchDestinations(url, names) {
  const all = [...new Set(names.flatMap((n) => [n, `${n}.dlq`, `${n}.parked`]))];
  if (url.startsWith('kafka://')) {
    const admin = new Kafka({ clientId: 'payq-bench-cleanup', brokers: url.slice('kafka://'.length).split(','), logLevel: logLevel.NOTHING }).admin();
    await admin.connect();
    const existing = new Set(await admin.listTopics());
    const topics = all.filter((t) => existing.has(t));
    if (topics.length > 0) await admin.deleteTopics({ topics });
    await admin.disconnect();
  } else if (url.startsWith('amqp://')) {
    const conn = await amqplib.connect(url);
    conn.on('error', () => {});
    const ch = await conn.createChannel();
    for (const q of all) await ch.deleteQueue(q);
    await conn.close();
  }
}
