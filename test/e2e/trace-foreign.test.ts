/**
 * `payq trace` on events payq did not write, on Kafka, written with kafkajs as their own producer
 * would: what the report calls a payment is true — events with no correlation id are said to be
 * tied by their message key, events with none are not payments at all.
 */
import { Kafka, logLevel } from 'kafkajs';
import { describe, expect, it } from 'vitest';
import { KAFKA_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { runCli } from '../helpers/cli.js';

/** The seed's plain bodies: an order id, no payment_id, no headers. */
const bodies = [
  { event: 'order_placed', data: { order_id: 123, user_id: 456 } },
  { event: 'order_placed', data: { order_id: 124, user_id: 457 } },
  { event: 'payment_captured', data: { order_id: 123, user_id: 456 } },
];

async function send(topic: string, keys: (string | undefined)[]): Promise<void> {
  const kafka = new Kafka({ clientId: 'foreign-producer', brokers: [KAFKA_URL.replace('kafka://', '')], logLevel: logLevel.NOTHING });
  const admin = kafka.admin();
  await admin.connect();
  await admin.createTopics({ topics: [{ topic, numPartitions: 1 }] });
  await admin.disconnect();
  const producer = kafka.producer();
  await producer.connect();
  await producer.send({ topic, messages: bodies.map((b, i) => ({ key: keys[i], value: JSON.stringify(b) })) });
  await producer.disconnect();
}

const trace = (topic: string, ...extra: string[]) => runCli(['trace', '--broker', KAFKA_URL, '--topic', topic, '--from-beginning', '--idle-timeout', '3s', ...extra]);

describe('trace on foreign events on Kafka', async () => {
  const up = await brokerAvailable(KAFKA_URL);

  it.skipIf(!up)('says when payments were tied by message key, and counts none for events without any correlation', async () => {
    const keyed = uniqueName('foreign-keyed');
    const bare = uniqueName('foreign-bare');
    try {
      // Keys that are not payment ids (one per message): three "payments", and trace says why.
      await send(keyed, ['k0', 'k1', 'k2']);
      const byKey = await trace(keyed);
      expect(byKey.code, byKey.stderr).toBe(0);
      expect(byKey.stderr).toMatch(/payments\s+│ 3 seen \(by message key\) · 0 finished · 3 unfinished/);
      expect(byKey.stderr).toMatch(/3 of 3 events carry no correlation id \(no CloudEvents subject, no 'payment_id' field\): they were tied into payments by their message key; --correlate FIELD names the field that does/);
      const json = JSON.parse((await trace(keyed, '--json')).stdout);
      expect(json.events).toMatchObject({ seen: 3, correlated_by_key: 3 });

      // Correlated by the field that does: two orders, no word about keys.
      const byField = await trace(keyed, '--correlate', 'data.order_id');
      expect(byField.code, byField.stderr).toBe(0);
      expect(byField.stderr).toMatch(/payments\s+│ 2 seen · /);
      expect(byField.stderr).not.toMatch(/message key/);

      // No key and no field: not payments at all, and the messages are named as unreadable.
      await send(bare, [undefined, undefined, undefined]);
      const none = await trace(bare, '--json');
      expect(none.code, none.stderr).toBe(0);
      expect(JSON.parse(none.stdout)).toMatchObject({ payments: { seen: 0 }, events: { seen: 0, undecodable: 3, correlated_by_key: 0 } });
      expect(none.stderr).toMatch(/3 messages could not be read as events \(left where they are\): .*no correlation id/);
    } finally {
      await deleteDestinations(KAFKA_URL, [keyed, bare]);
    }
  });
});
