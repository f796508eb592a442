/**
 * Topic creation for tests that talk to Kafka with plain kafkajs. kafkajs' own
 * `waitForLeaders` can fail with UNKNOWN_TOPIC_OR_PARTITION when its metadata request races the
 * controller right after creation; this waits for every partition's leader itself.
 */
import type { Admin } from 'kafkajs';

export async function createTopicsAndWait(admin: Admin, topics: { topic: string; numPartitions: number }[], timeoutMs = 30_000): Promise<void> {
  await admin.createTopics({ topics, waitForLeaders: false });
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    try {
      const meta = await admin.fetchTopicMetadata({ topics: topics.map((t) => t.topic) });
      const ready = meta.topics.every(
        (t) => t.partitions.length === topics.find((x) => x.topic === t.name)!.numPartitions && t.partitions.every((p) => p.leader >= 0),
      );
      if (ready) return;
    } catch (err) {
      if (Date.now() > deadline) throw err;
    }
    if (Date.now() > deadline) throw new Error(`topics ${topics.map((t) => t.topic).join(', ')} have no leaders after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, 100));
  }
}
