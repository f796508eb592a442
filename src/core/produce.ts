/**
 * `produce`: events from a source to one destination, in batches, with at most a few batches in
 * flight, paced open-loop when a rate is set. Returns a ProduceResult; never prints.
 */
import type { Driver, LinkStatus, OutgoingMessage } from '../drivers/types.js';
import { BrokerUnavailableError, isPayqError, messageOf } from '../errors.js';
import { toMessage, type EncodeContext, type EventTiming } from '../events/codec.js';
import type { GeneratedEvent } from '../events/generator.js';
import { createLatencyHistogram, recordUs, summarize, type LatencyHistogram, type LatencySummary } from '../metrics/histogram.js';
import type { Clock } from './clock.js';
import { PacedSender } from './paced-sender.js';
import type { EventSource } from './sources.js';

export interface ProduceOptions {
  destination: string;
  /** Events per second, open loop; undefined sends flat out. */
  rate?: number | undefined;
  /** Stop starting new sends after this long (ms). */
  durationMs?: number | undefined;
  encode: EncodeContext;
  /** Override the driver's preferred batch size / batches in flight. */
  batchSize?: number | undefined;
  maxInFlight?: number | undefined;
  /**
   * With a rate: stamp each payment's start (payq-start-us) with its intended send time instead
   * of the actual send, so end-to-end latency downstream counts from when the payment was due
   * (coordinated omission corrected). bench sets it; default false.
   */
  startAtIntended?: boolean | undefined;
}

export interface ProduceProgress {
  sent: number;
  acked: number;
  failed: number;
  elapsedMs: number;
}

export interface ProduceDeps {
  driver: Driver;
  source: EventSource;
  clock: Clock;
  signal?: AbortSignal | undefined;
  onProgress?: ((progress: ProduceProgress) => void) | undefined;
}

export interface ProduceResult {
  destination: string;
  payments: number;
  sent: number;
  acked: number;
  failed: number;
  /** Of the failed: sends whose acknowledgement was lost with the connection (the broker may hold them). */
  unconfirmed: number;
  bytes_acked: number;
  elapsed_s: number;
  events_per_s: number;
  mb_per_s: number;
  /** Send → broker acknowledgement. */
  publish_latency: LatencySummary;
  /** Intended send time → actual send (only with a rate). */
  publish_delay: LatencySummary | undefined;
  /** Intended send time → acknowledgement: latency corrected for coordinated omission. */
  intended_latency: LatencySummary | undefined;
  /** The distinct errors seen, at most five. */
  errors: string[];
  /** Stopped by the abort signal (Ctrl-C). */
  interrupted: boolean;
  /** Stopped early because the broker failed (sends after the failure were not attempted). */
  stopped_early: boolean;
  /** Stopped because the broker stayed away longer than the reconnect timeout (exit 3). */
  broker_gone: boolean;
  /** Connections re-established after a loss, and the seconds spent without one (Driver.link). */
  reconnects: number;
  unavailable_s: number;
  histograms: { publish: LatencyHistogram; publishDelay: LatencyHistogram; intended: LatencyHistogram };
}

const PROGRESS_EVERY_US = 100_000;

export async function produce(options: ProduceOptions, deps: ProduceDeps): Promise<ProduceResult> {
  const { driver, source, clock, signal } = deps;
  const batchSize = options.batchSize ?? driver.tuning.sendBatchSize;
  const maxInFlight = options.maxInFlight ?? driver.tuning.sendMaxInFlight;
  const publish = createLatencyHistogram();
  const publishDelay = createLatencyHistogram();
  const intended = createLatencyHistogram();
  const errors = new Set<string>();
  const sender = new PacedSender({ clock, signal, rate: options.rate, maxInFlight });

  const startUs = clock.nowUs();
  const endUs = options.durationMs === undefined ? Infinity : startUs + options.durationMs * 1000;
  sender.start(startUs);
  let sent = 0;
  let acked = 0;
  let failed = 0;
  let unconfirmed = 0;
  let bytesAcked = 0;
  let stoppedEarly = false;
  let brokerGone = false;
  let fatal: unknown;
  let lastProgressUs = startUs;
  let exhausted = false;

  const onFailure = (err: unknown, count: number) => {
    failed += count;
    if (isPayqError(err) && err.unconfirmed) unconfirmed += count;
    if (errors.size < 5) errors.add(messageOf(err));
    // A broker that is gone or refuses us: stop rather than fail every remaining batch slowly.
    if (!isPayqError(err) || !err.retriable) {
      stoppedEarly = true;
      if (err instanceof BrokerUnavailableError) brokerGone = true;
    }
  };

  const sendBatch = (events: GeneratedEvent[], intendedUs: number[] | undefined) => {
    const sendUs = clock.nowUs();
    const messages: OutgoingMessage[] = new Array(events.length);
    const sendText = String(Math.round(sendUs));
    // Produced events start their payment, so its start time is this send.
    const timing: EventTiming = { publishedUs: sendText, intendedUs: undefined, startUs: sendText };
    let bytes = 0;
    for (let i = 0; i < events.length; i++) {
      const event = events[i]!;
      if (intendedUs) {
        timing.intendedUs = String(Math.round(intendedUs[i]!));
        if (options.startAtIntended) timing.startUs = timing.intendedUs;
      }
      const message = toMessage(event, options.encode, timing);
      bytes += message.value.length;
      messages[i] = message;
    }
    sent += events.length;
    const onAck = () => {
      const ackUs = clock.nowUs();
      acked += events.length;
      bytesAcked += bytes;
      recordUs(publish, ackUs - sendUs, events.length);
      if (intendedUs) {
        for (const t of intendedUs) {
          recordUs(intended, ackUs - t);
          recordUs(publishDelay, sendUs - t);
        }
      }
    };
    sender.track(driver.send(options.destination, messages).then(onAck, (err: unknown) => onFailure(err, events.length)));
  };

  const take = async (max: number): Promise<GeneratedEvent[]> => {
    if (exhausted) return [];
    const got = await source.pull(max);
    if (got.length === 0) exhausted = true;
    return got;
  };

  try {
    while (!signal?.aborted && !stoppedEarly) {
      const nowUs = clock.nowUs();
      if (nowUs >= endUs) break;
      if (deps.onProgress && nowUs - lastProgressUs >= PROGRESS_EVERY_US) {
        lastProgressUs = nowUs;
        deps.onProgress({ sent, acked, failed, elapsedMs: (nowUs - startUs) / 1000 });
      }
      let want = batchSize;
      if (sender.paced) {
        // Everything whose intended time has come goes now, up to a batch.
        const due = sender.due(nowUs);
        if (due <= 0) {
          await sender.untilNext(nowUs);
          continue;
        }
        want = Math.min(batchSize, due);
      }
      if (sender.full) await sender.room();
      if (stoppedEarly) break;
      const events = await take(want);
      if (events.length === 0) break;
      sendBatch(events, sender.paced ? sender.take(events.length) : undefined);
    }
  } catch (err) {
    fatal = err;
  } finally {
    await sender.settle();
    source.close?.();
  }

  const elapsedUs = Math.max(1, clock.nowUs() - startUs);
  deps.onProgress?.({ sent, acked, failed, elapsedMs: elapsedUs / 1000 });
  if (fatal !== undefined) throw fatal;
  return produceResult({
    destination: options.destination,
    payments: source.payments,
    sent,
    acked,
    failed,
    unconfirmed,
    bytesAcked,
    elapsedS: elapsedUs / 1e6,
    paced: sender.paced,
    errors: [...errors],
    interrupted: signal?.aborted ?? false,
    stoppedEarly,
    brokerGone,
    link: driver.link(),
    histograms: { publish, publishDelay, intended },
  });
}

/** A produce result from its counts and histograms: one process's, or several threads' added up. */
export function produceResult(r: {
  destination: string;
  payments: number;
  sent: number;
  acked: number;
  failed: number;
  unconfirmed: number;
  bytesAcked: number;
  elapsedS: number;
  paced: boolean;
  errors: string[];
  interrupted: boolean;
  stoppedEarly: boolean;
  brokerGone: boolean;
  link: Pick<LinkStatus, 'reconnects' | 'downMs'>;
  histograms: ProduceResult['histograms'];
}): ProduceResult {
  const { publish, publishDelay, intended } = r.histograms;
  return {
    destination: r.destination,
    payments: r.payments,
    sent: r.sent,
    acked: r.acked,
    failed: r.failed,
    unconfirmed: r.unconfirmed,
    bytes_acked: r.bytesAcked,
    elapsed_s: Math.round(r.elapsedS * 1000) / 1000,
    events_per_s: Math.round(r.acked / r.elapsedS),
    mb_per_s: Math.round((r.bytesAcked / 1e6 / r.elapsedS) * 100) / 100,
    publish_latency: summarize(publish),
    publish_delay: r.paced ? summarize(publishDelay) : undefined,
    intended_latency: r.paced ? summarize(intended) : undefined,
    errors: r.errors,
    interrupted: r.interrupted,
    stopped_early: r.stoppedEarly,
    broker_gone: r.brokerGone,
    reconnects: r.link.reconnects,
    unavailable_s: Math.round(r.link.downMs) / 1000,
    histograms: r.histograms,
  };
}
