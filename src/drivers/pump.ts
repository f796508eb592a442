/**
 * Hands the deliveries a push-based client received (RabbitMQ, NATS, ZeroMQ) to a subscription's
 * handler: at most `prefetch` per call, one call at a time, starting on the turn after something
 * arrives so a burst becomes one batch. The memory broker pulls instead and needs none of this.
 */
import { HandlerFailures } from './retry.js';
import type { Delivery, DeliveryHandler } from './types.js';

export class DeliveryPump<T> {
  private readonly buffer: T[] = [];
  private readonly batchSize: number;
  private scheduled = false;
  private running: Promise<void> | undefined;
  private stopped = false;
  private readonly failures = new HandlerFailures();

  constructor(
    prefetch: number,
    private readonly handler: DeliveryHandler,
    /** The delivery of a buffered item, or undefined to skip it (settled or gone meanwhile). */
    private readonly deliveryOf: (item: T) => Delivery | undefined,
  ) {
    this.batchSize = Math.max(1, Math.floor(prefetch));
  }

  push(item: T): void {
    if (this.stopped) return;
    this.buffer.push(item);
    this.schedule();
  }

  /**
   * Hands out nothing more and forgets what was not handed out yet (the caller's broker gets it
   * back its own way); resolves when the handler call under way, if any, has returned.
   */
  async stop(): Promise<void> {
    this.stopped = true;
    this.failures.stop();
    this.buffer.length = 0;
    await this.running;
  }

  private schedule(): void {
    if (this.scheduled || this.running) return;
    this.scheduled = true;
    setImmediate(() => {
      this.scheduled = false;
      this.running ??= this.run().finally(() => {
        this.running = undefined;
        if (this.buffer.length > 0 && !this.stopped) this.schedule();
      });
    });
  }

  private async run(): Promise<void> {
    while (this.buffer.length > 0 && !this.stopped) {
      const batch: Delivery[] = [];
      for (const item of this.buffer.splice(0, this.batchSize)) {
        const d = this.deliveryOf(item);
        if (d !== undefined) batch.push(d);
      }
      if (batch.length === 0) continue;
      try {
        await this.handler(batch);
        this.failures.succeeded();
      } catch {
        // The handler-failure policy of every driver (retry.ts): what it left unsettled goes back
        // to the broker for redelivery (settled deliveries ignore nack), then a pause.
        for (const d of batch) d.nack();
        await this.failures.failed();
      }
    }
  }
}
