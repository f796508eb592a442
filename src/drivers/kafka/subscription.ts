/**
 * One subscription = one kafkajs consumer in the given group. kafkajs' own offset handling is
 * switched off (autoCommit false, eachBatchAutoResolve false): kafkajs' "resolved" offset is only
 * used as the fetch position, and commits are computed by PartitionOffsets from individual acks.
 */
import type { Consumer, EachBatchPayload, IHeaders, Kafka, KafkaMessage } from 'kafkajs';
import { InternalError } from '../../errors.js';
import type { Delivery, DeliveryHandler, Headers, SubscribeOptions, Subscription } from '../types.js';
import { KAFKA_TUNING } from './config.js';
import { mapKafkaError } from './errors.js';
import { PartitionOffsets, type Slot } from './partition-offsets.js';

export interface DeadLetterMessage {
  key: Buffer | null;
  value: Buffer | null;
  headers: Headers;
}

export interface KafkaSubscriptionDeps {
  kafka: Kafka;
  /** The redacted broker URL, for error messages. */
  url: string;
  /** Produces to the dead-letter topic with acks=all. */
  produceDeadLetter(topic: string, message: DeadLetterMessage): Promise<void>;
}

const noop = () => {};

export function decodeHeaders(headers: IHeaders | undefined): Headers {
  const out: Headers = {};
  if (!headers) return out;
  for (const [name, raw] of Object.entries(headers)) {
    // A repeated header: the last one wins, as with Java's Headers.lastHeader.
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
    if (value === undefined) continue;
    out[name] = typeof value === 'string' ? value : value.toString('utf8');
  }
  return out;
}

export class KafkaSubscription implements Subscription {
  private consumer: Consumer | undefined;
  private readonly partitions = new Map<string, PartitionOffsets>();
  private readonly unsubscribers: Array<() => void> = [];
  private outstanding = 0;
  private closing = false;
  private closePromise: Promise<void> | undefined;
  private handlerRunning: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private commitChain: Promise<void> = Promise.resolve();
  private commitTimer: NodeJS.Timeout | undefined;
  private joins = 0;

  constructor(
    private readonly deps: KafkaSubscriptionDeps,
    private readonly options: SubscribeOptions,
    private readonly handler: DeliveryHandler,
  ) {}

  /** Resolves once the group is joined and initial offsets are known, so nothing sent after is missed. */
  async start(): Promise<void> {
    const { kafka, url } = this.deps;
    const { group, destinations, fromBeginning } = this.options;
    const tuning = KAFKA_TUNING.consumer;
    const consumer = kafka.consumer({
      groupId: group,
      sessionTimeout: tuning.sessionTimeout,
      heartbeatInterval: tuning.heartbeatInterval,
      rebalanceTimeout: tuning.rebalanceTimeout,
      maxWaitTimeInMs: tuning.maxWaitTimeInMs,
      // A typo in a topic name must fail, not create a topic.
      allowAutoTopicCreation: false,
      retry: { ...KAFKA_TUNING.retry },
    });
    this.consumer = consumer;
    const subject = `group ${group}, topics ${destinations.join(', ')}`;

    let joined = false;
    let settleReady: { resolve: () => void; reject: (err: unknown) => void } | undefined;
    const ready = new Promise<void>((resolve, reject) => {
      settleReady = { resolve, reject };
    });
    this.unsubscribers.push(
      consumer.on(consumer.events.GROUP_JOIN, () => {
        joined = true;
        // Every join after the first is a rebalance: kafkajs restarts each partition from the
        // broker's committed offset, so the local windows are void.
        if (this.joins++ > 0) for (const offsets of this.partitions.values()) offsets.reset();
      }),
      // The first fetch after the join has resolved the initial offsets (earliest/latest).
      consumer.on(consumer.events.FETCH, () => {
        if (joined) settleReady?.resolve();
      }),
      consumer.on(consumer.events.CRASH, (event) => {
        settleReady?.reject(event.payload.error);
      }),
      // Commit what is acked before the group moves partitions away (best effort).
      consumer.on(consumer.events.REBALANCING, () => {
        void this.commit();
      }),
    );

    const readyTimeout = setTimeout(
      () => settleReady?.reject(new Error(`the group did not settle within ${tuning.readyTimeoutMs} ms`)),
      tuning.readyTimeoutMs,
    );
    try {
      await consumer.connect();
      await consumer.subscribe({ topics: destinations, fromBeginning });
      await consumer.run({
        autoCommit: false,
        eachBatchAutoResolve: false,
        partitionsConsumedConcurrently: 1,
        eachBatch: (payload) => this.onBatch(payload),
      });
      await ready;
    } catch (err) {
      this.closing = true;
      this.stopListening();
      await consumer.disconnect().catch(noop);
      throw mapKafkaError(err, { operation: 'subscribe', url, subject });
    } finally {
      clearTimeout(readyTimeout);
      settleReady = undefined;
    }
    this.commitTimer = setInterval(() => void this.commit(), tuning.commitIntervalMs);
    this.commitTimer.unref();
  }

  private offsetsFor(topic: string, partition: number): PartitionOffsets {
    const key = `${partition}:${topic}`;
    let offsets = this.partitions.get(key);
    if (!offsets) {
      offsets = new PartitionOffsets();
      this.partitions.set(key, offsets);
    }
    return offsets;
  }

  private async onBatch({ batch, resolveOffset, heartbeat, isRunning, isStale }: EachBatchPayload): Promise<void> {
    const { topic, partition, messages } = batch;
    const offsets = this.offsetsFor(topic, partition);
    let i = 0;
    while (i < messages.length) {
      if (this.closing || !isRunning() || isStale() || offsets.hasPendingSeek()) break;
      const room = await this.waitForRoom(heartbeat);
      if (room === 0) break;
      const chunk: Delivery[] = [];
      while (i < messages.length && chunk.length < room) {
        const message = messages[i++]!;
        const receipt = offsets.receive(BigInt(message.offset));
        // The fetch position moves on; redelivery is done by seeking back.
        resolveOffset(message.offset);
        if (receipt.skip) continue;
        chunk.push(this.toDelivery(topic, partition, message, offsets, receipt.slot, receipt.redelivered));
      }
      if (chunk.length > 0) await this.runHandler(chunk, heartbeat);
      this.applySeeks();
      // Lets kafkajs notice a rebalance between chunks (it throws; kafkajs re-joins).
      await heartbeat();
    }
    await this.commit();
  }

  /** Waits until fewer than `prefetch` deliveries are unsettled; 0 when closing. */
  private async waitForRoom(heartbeat: () => Promise<void>): Promise<number> {
    while (!this.closing && this.outstanding >= this.options.prefetch) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, KAFKA_TUNING.consumer.heartbeatInterval);
        this.wake = () => {
          clearTimeout(timer);
          resolve();
        };
      });
      this.wake = undefined;
      await heartbeat();
    }
    return this.closing ? 0 : this.options.prefetch - this.outstanding;
  }

  private async runHandler(chunk: Delivery[], heartbeat: () => Promise<void>): Promise<void> {
    // A slow handler must not cost the group membership.
    const beat = setInterval(() => void heartbeat().catch(noop), KAFKA_TUNING.consumer.heartbeatInterval);
    // Started from a microtask so `handlerRunning` is set even if the handler throws at once.
    const run = Promise.resolve()
      .then(() => this.handler(chunk))
      .catch(() => {
        // The handler failed: what it left unsettled goes back for redelivery. (A subscription
        // has no error channel; the handler owns its error reporting.)
        for (const delivery of chunk) delivery.nack();
      });
    this.handlerRunning = run;
    try {
      await run;
    } finally {
      clearInterval(beat);
      this.handlerRunning = undefined;
    }
  }

  /** Seeks every partition with a nack back to its lowest nacked offset. */
  private applySeeks(): void {
    for (const [key, offsets] of this.partitions) {
      const target = offsets.takeSeek();
      if (target === undefined) continue;
      const colon = key.indexOf(':');
      const partition = Number(key.slice(0, colon));
      const topic = key.slice(colon + 1);
      try {
        this.consumer?.seek({ topic, partition, offset: target.toString() });
      } catch {
        // Not running any more: the uncommitted message is delivered again after the restart.
      }
    }
  }

  private toDelivery(
    topic: string,
    partition: number,
    message: KafkaMessage,
    offsets: PartitionOffsets,
    slot: Slot,
    redelivered: boolean,
  ): Delivery {
    const headers = decodeHeaders(message.headers);
    const value = message.value ?? Buffer.alloc(0);
    let settled = false;
    const settle = (how: 'ack' | 'nack'): boolean => {
      if (settled) return false;
      settled = true;
      this.outstanding--;
      if (how === 'ack') offsets.ack(slot);
      else offsets.nack(slot);
      this.wake?.();
      return true;
    };
    this.outstanding++;
    return {
      destination: topic,
      key: message.key ? message.key.toString('utf8') : undefined,
      value,
      headers,
      partition,
      offset: message.offset,
      redelivered,
      ack: () => {
        settle('ack');
      },
      nack: () => {
        // After the handler returned, nobody else will seek: do it now.
        if (settle('nack') && this.handlerRunning === undefined && !this.closing) this.applySeeks();
      },
      deadLetter: async (extraHeaders: Headers) => {
        if (settled) throw new InternalError(`dead-letter of ${topic}[${partition}]@${message.offset}: already settled`);
        await this.deps.produceDeadLetter(`${topic}.dlq`, {
          key: message.key,
          value: message.value,
          headers: { ...headers, ...extraHeaders },
        });
        settle('ack');
      },
    };
  }

  /** Commits every partition's contiguous acked prefix; serialised so commits never go backwards. */
  private commit(): Promise<void> {
    this.commitChain = this.commitChain.then(async () => {
      const consumer = this.consumer;
      if (!consumer) return;
      const points: Array<{ topic: string; partition: number; offset: string; offsets: PartitionOffsets; at: bigint }> = [];
      for (const [key, offsets] of this.partitions) {
        const at = offsets.commitPoint();
        if (at === undefined) continue;
        const colon = key.indexOf(':');
        points.push({ topic: key.slice(colon + 1), partition: Number(key.slice(0, colon)), offset: at.toString(), offsets, at });
      }
      if (points.length === 0) return;
      try {
        await consumer.commitOffsets(points.map(({ topic, partition, offset }) => ({ topic, partition, offset })));
        for (const p of points) p.offsets.committed(p.at);
      } catch {
        // Rebalance or lost connection: the messages stay uncommitted and are delivered again
        // (at least once); the next commit retries.
      }
    });
    return this.commitChain;
  }

  private stopListening(): void {
    for (const off of this.unsubscribers.splice(0)) off();
    if (this.commitTimer) clearInterval(this.commitTimer);
    this.commitTimer = undefined;
  }

  /** Stops fetching, waits for the running handler, commits what was acked, leaves the group. */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      this.wake?.();
      if (this.handlerRunning) await this.handlerRunning;
      await this.commit();
      this.stopListening();
      await this.consumer?.disconnect().catch(noop);
    })();
    return this.closePromise;
  }
}
