/**
 * A subscription: one SUB socket connected to the hub's XPUB, subscribed to each destination's
 * topic; deliveries go to the handler in micro-batches, one call at a time.
 *
 * What ZeroMQ cannot do, and what this does instead:
 * - no acknowledgements: ack() only frees the slot; `prefetch` is honoured by not reading the
 *   socket while that many deliveries are unsettled, so what arrives meanwhile waits in
 *   ZeroMQ's queues and is dropped by them when they overflow (`hwm`): the loss bench reports.
 * - no redelivery: nack() hands the message to this subscription again, flagged redelivered
 *   (it is still in memory); a closed subscription's unsettled messages are gone.
 * - no consumer groups: every subscriber gets every message, so a group and a tap are the same
 *   here except that a tap's delivery cannot be dead-lettered.
 * - no history: it sees what is published after subscribe() resolved.
 *
 * subscribe() resolves once a probe sent through the hub to this socket came back: the hub then
 * has its subscriptions and has passed them on to the publishers (ZeroMQ publishers drop what
 * no one is known to subscribe to, so anything sent before would be lost).
 */
import { randomBytes } from 'node:crypto';
import { Subscriber } from 'zeromq';
import { BrokerUnavailableError, InternalError } from '../../errors.js';
import type { Delivery, DeliveryHandler, Headers, SubscribeOptions, Subscription } from '../types.js';
import { tapDeadLetterRefused } from '../common.js';
import { DeliveryPump } from '../pump.js';
import type { ZmqConfig } from './config.js';
import { decodeFrames, probeTopic, topicOf } from './wire.js';

export interface ZmqSubscriptionDeps {
  config: ZmqConfig;
  url: string;
  /** Sends a probe through the hub (the driver's publisher). */
  sendProbe(id: string): Promise<void>;
  /** Publishes a dead letter to `<destination>.dlq`. */
  publishDeadLetter(destination: string, message: { key: string | undefined; type: string; value: Buffer; headers: Headers }): Promise<void>;
  forget(sub: ZmqSubscription): void;
}

const PROBE_EVERY_MS = 50;

export class ZmqSubscription implements Subscription {
  private readonly socket: Subscriber;
  private readonly probeId = randomBytes(8).toString('hex');
  private probed: (() => void) | undefined;
  private readonly destinations: Set<string>;
  private readonly pump: DeliveryPump<Delivery>;
  private unsettled = 0;
  private wakeReader: (() => void) | undefined;
  private reading: Promise<void> | undefined;
  private closing = false;
  private closed: Promise<void> | undefined;

  constructor(
    private readonly deps: ZmqSubscriptionDeps,
    private readonly options: SubscribeOptions,
    handler: DeliveryHandler,
  ) {
    this.destinations = new Set(options.destinations);
    this.pump = new DeliveryPump(options.prefetch, handler, (d) => d);
    this.socket = new Subscriber({ receiveHighWaterMark: deps.config.hwm, linger: 0, ipv6: deps.config.host.includes(':') });
  }

  async start(): Promise<this> {
    const { config } = this.deps;
    this.socket.connect(config.subscribeEndpoint);
    for (const d of this.destinations) this.socket.subscribe(topicOf(d));
    // Last: the hub handles one socket's subscriptions in order, so when this one works, all do.
    this.socket.subscribe(probeTopic(this.probeId));
    const answered = new Promise<void>((resolve) => (this.probed = resolve));
    this.reading = this.read();
    const deadline = Date.now() + config.answerTimeoutMs;
    let ok = false;
    while (Date.now() < deadline) {
      await this.deps.sendProbe(this.probeId);
      ok = await Promise.race([answered.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), PROBE_EVERY_MS))]);
      if (ok) break;
    }
    if (!ok) {
      await this.close();
      throw new BrokerUnavailableError(`ZeroMQ ${this.deps.url}: the hub did not pass a subscription on within ${config.answerTimeoutMs / 1000} s`, {
        retriable: true,
        hint: 'is the payq process hosting the hub still running?',
      });
    }
    return this;
  }

  private async read(): Promise<void> {
    const max = Math.max(1, this.options.prefetch);
    while (!this.closing) {
      if (this.unsettled >= max) {
        await new Promise<void>((resolve) => (this.wakeReader = resolve));
        this.wakeReader = undefined;
        continue;
      }
      let frames: Buffer[];
      try {
        frames = await this.socket.receive();
      } catch {
        return; // closed
      }
      const decoded = decodeFrames(frames);
      if (decoded.kind === 'probe') {
        if (decoded.id === this.probeId) this.probed?.();
        continue;
      }
      if (!this.destinations.has(decoded.destination)) continue;
      this.pump.push(this.delivery(decoded.destination, decoded.key, decoded.type, decoded.headers, decoded.value, false));
    }
  }

  private delivery(destination: string, key: string | undefined, type: string, headers: Headers, value: Buffer, redelivered: boolean): Delivery {
    let settled = false;
    this.unsettled++;
    const settle = (): boolean => {
      if (settled) return false;
      settled = true;
      this.unsettled--;
      this.wakeReader?.();
      return true;
    };
    const tap = this.options.tap === true;
    return {
      destination,
      key,
      value,
      headers,
      partition: undefined,
      offset: undefined,
      redelivered,
      // ZeroMQ keeps nothing to settle with: settling is this subscription's own bookkeeping.
      settleable: true,
      ack: () => void settle(),
      nack: () => {
        // Nothing to give it back to: it is handed to this subscription again.
        if (settle() && !this.closing) this.pump.push(this.delivery(destination, key, type, headers, value, true));
      },
      deadLetter: async (extra: Headers) => {
        if (tap) throw tapDeadLetterRefused(destination);
        if (settled) throw new InternalError(`dead-letter of a message from ${destination}: already settled`);
        await this.deps.publishDeadLetter(destination, { key, type, value, headers: { ...headers, ...extra } });
        settle();
      },
    };
  }

  close(): Promise<void> {
    this.closed ??= (async () => {
      this.closing = true;
      this.wakeReader?.();
      this.socket.close();
      await this.reading;
      // Unsettled messages have nowhere to go back to: ZeroMQ keeps nothing.
      await this.pump.stop();
      this.deps.forget(this);
    })();
    return this.closed;
  }
}
