/**
 * One subscription = one kafkajs consumer in the given group. kafkajs' own offset handling is
 * switched off (autoCommit false, eachBatchAutoResolve false): kafkajs' "resolved" offset is only
 * used as the fetch position, and commits are computed by PartitionOffsets from individual acks.
 *
 * Redelivery after a nack moves that fetch position back with `resolveOffset`, never with
 * `consumer.seek`: kafkajs keeps a seek for a partition that a rebalance took away and applies it
 * when the partition comes back, seconds later, rewinding it past other members' commits.
 *
 * Acks are committed every commitIntervalMs, when the group rebalances and on close, never
 * awaited per batch: a commit round trip after each batch held up the next one and added ~100 ms to
 * bench's end-to-end latency on Kafka (mean 140–177 → 61–65 ms at 300 payments/s). After a crash, what
 * was acked since the last commit comes again (at least once, as with any Kafka consumer).
 *
 * A tap (SubscribeOptions.tap) is a consumer group of its own, `payq-tap.<random>`, starting at
 * the end of each topic unless fromBeginning. Its acks are committed like any group's, so a
 * rebalance of the one-member group (a session timeout, a coordinator moving, partitions added)
 * resumes where it was instead of skipping to the end; on close the group is deleted so taps leave
 * nothing behind. A process that dies without closing leaves its tap group until Kafka's
 * offsets.retention.minutes expires it (7 days by default); it holds no partitions meanwhile.
 *
 * A group commits where it starts, read before it joined, on its partitions that have no offset
 * yet (deps.startOffsets): the end, or the beginning with fromBeginning. Otherwise a partition not
 * acked on yet keeps no position: after a broker restart one that started at the end would be
 * reset to the end again, and what was sent meanwhile never seen (README "Failure drills"); and
 * the group's next run, without fromBeginning, would start a partition that the first run
 * (consume --from-beginning --limit N) never reached at its end, skipping all it holds. Through
 * the member's own commit, not admin.setOffsets, which joins the group itself.
 *
 * A broker that goes away (README "Failure drills"): kafkajs' consumer crashes with a retriable
 * error and restarts itself, joining the group again; the join resets the local windows, so each
 * partition resumes at the group's committed offset (a tap's too: its commits and its start are
 * offsets of its own group), and late acks of deliveries from before the outage only mark their
 * offsets done (PartitionOffsets: detached slots): those deliveries stay `settleable`. One whose
 * partition a rebalance gave to another member is not (that member reads it again). The
 * driver's link status follows (deps.link): lost at an outage crash, restored at the next join
 * or fetch. A start that finds the broker away fails retriable (the driver tries again within
 * reconnectTimeoutMs): startOffsets failing to reach the broker is such a failure, since joining
 * without them would skip what is sent until the broker is back.
 *
 * A sharded tap (SubscribeOptions.shard, README "Tracer shards") reads only the partitions p with
 * p mod count = index − 1 of every topic. kafkajs has no manual assignment, but the tap's group
 * has one member: a partition assigner of payq's own hands that member only its shard's
 * partitions, and a rebalance hands it the same ones again. Before joining, the topics'
 * partition counts are checked: a payment's events (keyed by its id) sit in the same partition
 * number of every topic only when the counts are equal.
 */
import { AssignerProtocol, type Batch, type Consumer, type EachBatchPayload, type IHeaders, type Kafka, type KafkaMessage, type PartitionAssigner } from 'kafkajs';
import { randomBytes } from 'node:crypto';
import { BrokerUnavailableError, ConfigError, InternalError, UsageError } from '../../errors.js';
import { PAYQ_WIRE_HEADER, unpackPayqHeader } from '../../events/payq-header.js';
import type { Delivery, DeliveryHandler, Headers, SubscribeOptions, Subscription } from '../types.js';
import { tapDeadLetterRefused } from '../common.js';
import { HandlerFailures } from '../retry.js';
import { KAFKA_TUNING } from './config.js';
import { classifyKafkaError, mapKafkaError } from './errors.js';
import { PartitionOffsets, type Slot } from './partition-offsets.js';

export interface DeadLetterMessage {
  key: Buffer | null;
  value: Buffer | null;
  headers: Headers;
}

export interface TopicPartitionOffset {
  topic: string;
  partition: number;
  offset: string;
}

export interface KafkaSubscriptionDeps {
  kafka: Kafka;
  /** The redacted broker URL, for error messages. */
  url: string;
  /** Produces to the dead-letter topic with acks=all. */
  produceDeadLetter(topic: string, message: DeadLetterMessage): Promise<void>;
  /** Deletes a tap's consumer group once its consumer has left (best effort: may reject). */
  deleteGroup(groupId: string): Promise<void>;
  /**
   * Where the group starts (`from`: the beginning or the end) on each partition of `topics` for
   * which `groupId` has no committed offset (best effort: may reject). The subscription commits
   * these for its own partitions once it has joined (see the top).
   */
  startOffsets(groupId: string, topics: string[], from: 'earliest' | 'latest'): Promise<TopicPartitionOffset[]>;
  /** The driver's LinkMonitor: told when the consumer loses the broker and when it works again. */
  link: { lost(): void; restored(): void };
  /** Work in flight, abandoned once the stop's grace is over (types.ts, DriverOptions.signal). */
  graced<T>(work: Promise<T>, what: string): Promise<T>;
}

/** A failure that means the broker is away (worth waiting for), not a refusal. */
function isOutage(err: unknown, url: string): boolean {
  const mapped = mapKafkaError(err, { operation: 'subscribe', url });
  return mapped instanceof BrokerUnavailableError && mapped.retriable;
}

export interface Shard {
  index: number;
  count: number;
}

/** The partitions of shard `index`/`count` among `partitions` (0 … partitions − 1). */
export function shardPartitions(partitions: number, shard: Shard): number[] {
  const mine: number[] = [];
  for (let p = shard.index - 1; p < partitions; p += shard.count) mine.push(p);
  return mine;
}

const SHARD_ASSIGNER = 'PayqShardAssigner';

/**
 * The assigner of a sharded tap's one-member group: its member gets the shard's partitions of
 * every topic (a second member, which a unique group never has, would get none).
 */
export function shardAssigner(shard: Shard): PartitionAssigner {
  return ({ cluster }) => ({
    name: SHARD_ASSIGNER,
    version: 0,
    async assign({ members, topics }) {
      const assignment: Record<string, number[]> = {};
      for (const topic of topics) {
        const ids = cluster.findTopicPartitionMetadata(topic).map((m) => m.partitionId);
        assignment[topic] = shardPartitions(ids.length === 0 ? 0 : Math.max(...ids) + 1, shard).filter((p) => ids.includes(p));
      }
      const sorted = [...members].sort((a, b) => (a.memberId < b.memberId ? -1 : 1));
      return sorted.map((m, i) => ({
        memberId: m.memberId,
        memberAssignment: AssignerProtocol.MemberAssignment.encode({ version: 0, assignment: i === 0 ? assignment : {}, userData: Buffer.alloc(0) }),
      }));
    },
    protocol({ topics }) {
      return { name: SHARD_ASSIGNER, metadata: AssignerProtocol.MemberMetadata.encode({ version: 0, topics, userData: Buffer.alloc(0) }) };
    },
  });
}

/**
 * Refuses a shard that cannot hold whole payments: topics with different partition counts (a
 * payment's events would sit in different partition numbers), or a shard with no partition.
 */
export function checkShardLayout(partitionCounts: ReadonlyMap<string, number>, shard: Shard): void {
  const counts = [...new Set(partitionCounts.values())];
  if (counts.length > 1) {
    const listed = [...partitionCounts].sort(([a], [b]) => a.localeCompare(b)).map(([topic, n]) => `${topic} ${n}`).join(', ');
    throw new UsageError(`--shard ${shard.index}/${shard.count} splits by partition, which needs one partition count on every traced topic; these differ (${listed})`);
  }
  const partitions = counts[0] ?? 0;
  if (shardPartitions(partitions, shard).length === 0) {
    throw new UsageError(`--shard ${shard.index}/${shard.count}: the topics have ${partitions} partition${partitions === 1 ? '' : 's'}, so shard ${shard.index} would read none; use at most ${partitions} shards`);
  }
}

/** A tap's group: unique, and recognisable in `kafka-consumer-groups --list`. */
export function tapGroupId(): string {
  return `payq-tap.${randomBytes(8).toString('hex')}`;
}

const noop = () => {};

export function decodeHeaders(headers: IHeaders | undefined): Headers {
  const out: Headers = {};
  if (!headers) return out;
  for (const name in headers) {
    const raw = headers[name];
    // A repeated header: the last one wins, as with Java's Headers.lastHeader.
    const value = Array.isArray(raw) ? raw[raw.length - 1] : raw;
    // A header without a value (null, length -1 on the wire) is left out, as if absent.
    if (value === undefined || value === null) continue;
    const text = typeof value === 'string' ? value : value.toString('utf8');
    // payq's compact header becomes the fields it carries (events/payq-header.ts).
    if (name === PAYQ_WIRE_HEADER && unpackPayqHeader(text, out)) continue;
    out[name] = text;
  }
  return out;
}

/** The offset a batch was fetched from (kafkajs keeps it on the batch but doesn't type it). */
function fetchedOffsetOf(batch: Batch): bigint {
  const fetched = (batch as unknown as { fetchedOffset?: string }).fetchedOffset;
  return BigInt(fetched ?? batch.messages[0]?.offset ?? '0');
}

interface PartitionState {
  topic: string;
  partition: number;
  offsets: PartitionOffsets;
  /** kafkajs' resolveOffset for this partition (from its latest batch): sets the fetch position. */
  resolve: ((offset: string) => void) | undefined;
  /** The fetch position was moved back to here; batches fetched from further on are stale. */
  rewoundTo: bigint | undefined;
}

export class KafkaSubscription implements Subscription {
  private consumer: Consumer | undefined;
  private readonly partitions = new Map<string, PartitionState>();
  private readonly unsubscribers: Array<() => void> = [];
  private outstanding = 0;
  private closing = false;
  private readonly failures = new HandlerFailures();
  private closePromise: Promise<void> | undefined;
  private handlerRunning: Promise<void> | undefined;
  private wake: (() => void) | undefined;
  private commitChain: Promise<void> = Promise.resolve();
  private commitTimer: NodeJS.Timeout | undefined;
  private joins = 0;
  /** The consumer group: the caller's, or a tap's own. */
  private readonly groupId: string;
  /** This member's partitions since its latest join. */
  private assignment: Record<string, number[]> = {};
  /** close() has taken its last commit point: a later ack reaches no one. */
  private released = false;

  constructor(
    private readonly deps: KafkaSubscriptionDeps,
    private readonly options: SubscribeOptions,
    private readonly handler: DeliveryHandler,
  ) {
    this.groupId = options.tap ? tapGroupId() : options.group;
  }

  /** Resolves once the group is joined and initial offsets are known, so nothing sent after is missed. */
  async start(): Promise<void> {
    const { kafka, url } = this.deps;
    const { destinations, fromBeginning } = this.options;
    const group = this.groupId;
    const tuning = KAFKA_TUNING.consumer;
    const shard = this.options.shard;
    if (shard !== undefined) {
      // Only a tap's group is ours alone: in a shared group the assigner would fight the others'.
      if (!this.options.tap) throw new ConfigError('subscribe: a shard is read by a tap (a group of its own), not as a member of a shared group');
      checkShardLayout(await this.partitionCounts(), shard);
    }
    const consumer = kafka.consumer({
      groupId: group,
      ...(shard !== undefined ? { partitionAssigners: [shardAssigner(shard)] } : {}),
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
    // Awaited after connect and subscribe: a timeout before then must not be an unhandled rejection.
    ready.catch(noop);
    this.unsubscribers.push(
      consumer.on(consumer.events.GROUP_JOIN, (event) => {
        joined = true;
        this.deps.link.restored();
        assigned = event.payload.memberAssignment;
        this.assignment = assigned;
        // Every join after the first is a rebalance: kafkajs restarts each partition from the
        // broker's committed offset, so the local windows (and pending rewinds) are void.
        if (this.joins++ > 0) {
          for (const state of this.partitions.values()) {
            state.offsets.reset();
            state.resolve = undefined;
            state.rewoundTo = undefined;
          }
        }
      }),
      // Rewinds wait for a moment when kafkajs is between a join and a fetch: now.
      consumer.on(consumer.events.FETCH_START, () => this.applyRewinds()),
      // The first fetch after the join has resolved the initial offsets (earliest/latest).
      consumer.on(consumer.events.FETCH, () => {
        if (!joined) return;
        this.deps.link.restored();
        settleReady?.resolve();
      }),
      // After start, kafkajs restarts the consumer itself after a retriable crash (an outage).
      consumer.on(consumer.events.CRASH, (event) => {
        if (!this.closing && classifyKafkaError(event.payload.error) === 'unavailable') this.deps.link.lost();
        settleReady?.reject(event.payload.error);
      }),
      // Commit what is acked before the group moves partitions away (best effort).
      consumer.on(consumer.events.REBALANCING, () => {
        void this.commit();
      }),
    );

    // Before the join's clock starts: its admin round trips are not the group's settling. Best
    // effort, except when the broker is away: then this start fails and is tried again.
    const unset = await this.deps
      .startOffsets(group, destinations, fromBeginning ? 'earliest' : 'latest')
      .catch((err: unknown): TopicPartitionOffset[] => {
          if (!isOutage(err, url)) return [];
          this.stopListening();
          throw mapKafkaError(err, { operation: 'subscribe', url, subject });
        });
    let assigned: Record<string, number[]> = {};
    // Retriable: a broker restarting meanwhile is why a group does not settle (the driver retries).
    const readyTimeout = setTimeout(
      () => settleReady?.reject(new BrokerUnavailableError(`kafka ${url}: the group did not settle within ${tuning.readyTimeoutMs} ms (${subject})`, { retriable: true })),
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
      const mine = unset.filter((p) => assigned[p.topic]?.includes(p.partition));
      if (mine.length > 0) await consumer.commitOffsets(mine).catch(noop);
    } catch (err) {
      this.closing = true;
      this.stopListening();
      await consumer.disconnect().catch(noop);
      await this.deleteTapGroup();
      throw mapKafkaError(err, { operation: 'subscribe', url, subject });
    } finally {
      clearTimeout(readyTimeout);
      settleReady = undefined;
    }
    this.commitTimer = setInterval(() => void this.commit(), tuning.commitIntervalMs);
    this.commitTimer.unref();
  }

  /** Each subscribed topic's partition count, from a short-lived admin client of its own. */
  private async partitionCounts(): Promise<Map<string, number>> {
    const { destinations } = this.options;
    const admin = this.deps.kafka.admin({ retry: { ...KAFKA_TUNING.retry } });
    try {
      await admin.connect();
      const { topics } = await admin.fetchTopicMetadata({ topics: destinations });
      return new Map(topics.map((t) => [t.name, t.partitions.length]));
    } catch (err) {
      throw mapKafkaError(err, { operation: 'subscribe', url: this.deps.url, subject: `topics ${destinations.join(', ')}` });
    } finally {
      await admin.disconnect().catch(noop);
    }
  }

  private stateFor(topic: string, partition: number): PartitionState {
    const key = `${partition}:${topic}`;
    let state = this.partitions.get(key);
    if (!state) {
      state = { topic, partition, offsets: new PartitionOffsets(), resolve: undefined, rewoundTo: undefined };
      this.partitions.set(key, state);
    }
    return state;
  }

  private async onBatch({ batch, resolveOffset, heartbeat, isRunning }: EachBatchPayload): Promise<void> {
    const { topic, partition, messages } = batch;
    const state = this.stateFor(topic, partition);
    state.resolve = resolveOffset;
    // kafkajs' generation can't change while a batch is being handled: rewinds are safe here.
    this.applyRewinds();
    if (state.rewoundTo !== undefined) {
      // Fetched before the position was moved back: drop it, the rewound fetch follows.
      if (fetchedOffsetOf(batch) > state.rewoundTo) return;
      state.rewoundTo = undefined;
    }
    const offsets = state.offsets;
    let i = 0;
    while (i < messages.length) {
      const room = await this.waitForRoom(heartbeat);
      // Checked after the wait: a nack may have moved this partition back meanwhile, and the
      // rest of this batch must then not be handed out.
      if (room === 0 || !isRunning() || offsets.hasPendingSeek() || state.rewoundTo !== undefined) break;
      const chunk: Delivery[] = [];
      while (i < messages.length && chunk.length < room) {
        const message = messages[i++]!;
        const receipt = offsets.receive(BigInt(message.offset));
        // The fetch position moves on; redelivery moves it back.
        resolveOffset(message.offset);
        if (receipt.skip) continue;
        chunk.push(this.toDelivery(topic, partition, message, offsets, receipt.slot, receipt.redelivered));
      }
      if (chunk.length > 0) await this.runHandler(chunk, heartbeat);
      this.applyRewinds();
      // Lets kafkajs notice a rebalance between chunks (it throws; kafkajs re-joins).
      await heartbeat();
    }
    state.rewoundTo = undefined;
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
      .then(
        () => this.failures.succeeded(),
        async () => {
          // The handler-failure policy of every driver (retry.ts): unsettled messages back, a pause.
          for (const delivery of chunk) delivery.nack();
          await this.failures.failed();
        },
      );
    this.handlerRunning = run;
    try {
      await run;
    } finally {
      clearInterval(beat);
      this.handlerRunning = undefined;
    }
  }

  /**
   * Moves every partition with a nack back to its lowest nacked offset. Only called where kafkajs'
   * group generation is stable (inside a batch, at fetch start), so the position set belongs to
   * the same generation as the nacked delivery.
   */
  private applyRewinds(): void {
    for (const state of this.partitions.values()) {
      if (!state.resolve || !state.offsets.hasPendingSeek()) continue;
      const target = state.offsets.takeSeek()!;
      state.resolve((target - 1n).toString());
      state.rewoundTo = target;
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
    const reachable = () => !this.released && (this.assignment[topic]?.includes(partition) ?? false);
    let settled = false;
    const settle = (how: 'ack' | 'nack'): void => {
      if (settled) return;
      settled = true;
      this.outstanding--;
      if (how === 'ack') offsets.ack(slot);
      else offsets.nack(slot);
      this.wake?.();
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
      // An outage ridden out on this member keeps late acks (see the header); a partition moved
      // to another member, or a closed subscription, is read again from the committed offset.
      get settleable() {
        return reachable();
      },
      ack: () => settle('ack'),
      // The rewind happens after the handler returns, or at the next fetch for a late nack.
      nack: () => settle('nack'),
      deadLetter: async (extraHeaders: Headers) => {
        if (settled) throw new InternalError(`dead-letter of ${topic}[${partition}]@${message.offset}: already settled`);
        // A tap only watches: the topic's consumers decide; a copy from here would be a duplicate.
        if (this.options.tap) {
          throw tapDeadLetterRefused(topic);
        }
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
      const points: Array<{ state: PartitionState; at: bigint }> = [];
      for (const state of this.partitions.values()) {
        const at = state.offsets.commitPoint();
        if (at !== undefined) points.push({ state, at });
      }
      if (points.length === 0) return;
      try {
        await consumer.commitOffsets(
          points.map(({ state, at }) => ({ topic: state.topic, partition: state.partition, offset: at.toString() })),
        );
        for (const { state, at } of points) state.offsets.committed(at);
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

  /**
   * Stops fetching, waits for the running handler, commits what was acked, leaves the group. After
   * the command's stop, a cluster that does not answer is waited for only the stop's grace: what
   * was acked and not committed then comes again, and a tap's group stays until Kafka expires it.
   */
  close(): Promise<void> {
    this.closePromise ??= (async () => {
      this.closing = true;
      this.wake?.();
      this.failures.stop();
      if (this.handlerRunning) await this.handlerRunning;
      this.released = true;
      const { graced } = this.deps;
      await graced(this.commit(), 'committing offsets').catch(noop);
      this.stopListening();
      if (this.consumer) await graced(this.consumer.disconnect(), `leaving group ${this.groupId}`).catch(noop);
      await graced(this.deleteTapGroup(), `deleting group ${this.groupId}`).catch(noop);
    })();
    return this.closePromise;
  }

  /** A tap's group has no use after its only member left; without this it would linger for days. */
  private async deleteTapGroup(): Promise<void> {
    if (!this.options.tap) return;
    await this.deps.deleteGroup(this.groupId).catch(noop);
  }
}
