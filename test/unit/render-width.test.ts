/**
 * Every table payq prints fits in 100 columns (issue 11, defect 13), whatever the values: long
 * broker URLs and version texts, long handler and destination names, long exception class names.
 * Widths are measured without ANSI codes, with colours on and off.
 */
import { Chalk } from 'chalk';
import { describe, expect, it } from 'vitest';
import { benchReportText, comparisonTable, fitTable, issuesTable, keyValueTable, TABLE_WIDTH, visibleWidth } from '../../src/cli/render.js';
import { compareReports } from '../../src/metrics/compare.js';
import { createLatencyHistogram, recordUs } from '../../src/metrics/histogram.js';
import { buildReport, type Report, type RunData } from '../../src/metrics/report.js';
import { testReportSettings } from '../helpers/report.js';

const COLOURS = [new Chalk({ level: 0 }), new Chalk({ level: 3 })];
const LONG_BROKER = 'kafka://broker-1.payments-prod.eu-west-1.example.internal:9092,broker-2.payments-prod.eu-west-1.example.internal:9092';
const KAFKA_VERSION =
  'Kafka protocol, API versions of Apache Kafka 4.0 or later (KIP-896 baseline); Produce v3-12, Fetch v4-17, Metadata v0-13; 60 APIs; cluster 5L6g3nShT-eMCtK--X86sw, 1 broker';
const LONG_STAGES = ['payment-authorization-and-fraud-scoring-service', 'capture', 'order-fulfilment-and-shipping-notification-service'];

function expectFits(text: string, what: string): void {
  const lines = text.split('\n');
  expect(lines.length, what).toBeGreaterThan(2);
  for (const line of lines) expect(visibleWidth(line), `${what}: ${line}`).toBeLessThanOrEqual(TABLE_WIDTH);
}

function report(stages: string[], broker: string, version: string | null): Report {
  const h = (us: number) => {
    const x = createLatencyHistogram();
    for (let i = 0; i < 50; i++) recordUs(x, us * (1 + i / 10));
    return x;
  };
  const data = {
    elapsed_s: 61.25,
    producers: { sent: 1_234_567, acked: 1_234_567, failed: 0, bytes: 987_654_321 },
    stages: Object.fromEntries(
      stages.map((name) => [
        name,
        {
          handled: 1_234_567, received: 1_234_600, redelivered: 33, attempts: 1_250_000, retries: 15_433, transient_failures: 15_433, emitted: 1_200_000,
          dead_lettered: 12_345, bytes_received: 1e9, bytes_handled: 1e9, bytes_emitted: 1e9, processing: h(123_456), wall: h(133_456), delivery: h(1_234_567),
        },
      ]),
    ),
    sink: { destination: 'payments.completed-orders-and-refunds.events', consumed: 1_200_000, bytes: 1e9, delivery: h(2_000_000) },
    events: { acknowledged: 4_000_000, consumed: 3_900_000, unacknowledged: 12, redelivered: 33, duplicates: 1234, out_of_order: 567, missing_steps: 0, undecodable: 0, in_flight: 50_000, not_drained: 0 },
    payments: { finished: 1_100_000, in_flight: 134_567, stuck: 1234, by_class: { completed: 900_000, declined: 100_000, refunded: 50_000, 'dead-lettered': 50_000 } },
    dlq_by_reason: { 'permanent-failure': 10_000, 'retries-exhausted': 2000, undecodable: 300, 'unexpected-type': 45 },
    windows: { total: 62, available: 61 },
    latency: { publish: h(3000), publish_delay: h(100), publish_from_intended: h(3100), end_to_end: h(3_500_000) },
    errors: ['KafkaJSNumberOfRetriesExceeded: connection to broker-2.payments-prod.eu-west-1.example.internal:9092 timed out'],
  } as RunData;
  return buildReport(data, {
    run_id: 'nightly-2026-01-01-payments-checkout-42',
    role: 'all',
    settings: { ...testReportSettings(broker), broker_version: version, scenario: 'checkout-with-refunds-and-long-names', rate_per_s: 12_345, duration_s: 3600 },
  });
}

describe('tables fit in 100 columns', () => {
  it.each(COLOURS.map((c) => [c.level, c] as const))('bench / report, colour level %i: Kafka with its API-version text and long handler names', (_level, color) => {
    expectFits(benchReportText(report(LONG_STAGES, LONG_BROKER, KAFKA_VERSION), color), 'kafka');
    expectFits(benchReportText(report(['payment-service', 'capture-service', 'fulfilment-service', 'refund-service'], 'memory://', 'payq memory broker'), color), 'memory');
    // Nothing is lost by fitting: the version text is all there, across lines.
    const text = benchReportText(report(LONG_STAGES, LONG_BROKER, KAFKA_VERSION), new Chalk({ level: 0 }));
    const flat = text.replace(/[│\s]+/g, '');
    expect(flat).toContain(KAFKA_VERSION.replace(/\s+/g, ''));
  });

  it.each(COLOURS.map((c) => [c.level, c] as const))('report --compare, colour level %i, with long handler and hop names', (_level, color) => {
    const base = report(LONG_STAGES, LONG_BROKER, KAFKA_VERSION);
    const cur = structuredClone(base);
    cur.apt_ms *= 1.5;
    expectFits(comparisonTable(compareReports(cur, base), color), 'compare');
  });

  it.each(COLOURS.map((c) => [c.level, c] as const))('produce summary, trace summary and timeline, colour level %i', (_level, color) => {
    expectFits(
      keyValueTable(
        [
          ['broker', 'amqps://payments-service-user:***@rabbitmq-0.rabbitmq-headless.payments-prod.svc.cluster.local:5671/payments-production-vhost'],
          ['destination', 'payments.order-placed-events-from-the-checkout-frontend.v2.partitioned-by-merchant'],
          ['source', '/very/long/path/to/the/recorded/production/traffic/events-2026-01-01T00-00-00.ndjson (checkout, seed 42)'],
          ['publish latency', 'p50 1234.567 ms · p99 2345.678 ms · max 3456.789 ms'],
          ['hop order-fulfilment-and-shipping-notification-service', 'p50 1234.567 ms · p99 2345.678 ms · max 3456.789 ms'],
        ],
        color,
      ),
      'key-value',
    );
    expectFits(
      issuesTable(
        'payments that failed --expect',
        [
          { payment_id: 'pay_0123456789abcdef0123456789abcdef', reason: 'missing payment_captured, order_completed within 30s', last_type: 'payment_authorized', types: ['order_placed', 'payment_authorized', 'payment_captured', 'refund_requested', 'refund_completed', 'order_completed'], age_s: 12345 },
        ],
        color,
      ),
      'issues',
    );
  });

  it.each(COLOURS.map((c) => [c.level, c] as const))('replay --dry-run and worker tables (fitTable), colour level %i', (_level, color) => {
    expectFits(
      fitTable(
        ['origin', 'reason', 'event type', 'would', 'messages'].map((h) => color.bold(h)),
        [
          ['payments.order-placed-events-from-the-checkout-frontend.v2', 'RecordTooLargeExceptionWithAVeryLongNameFromKafkaConnect', 'payment_authorized', color.green('replay'), '1,234,567'],
          ['orders', 'retries-exhausted', 'order_placed', color.yellow('park: over --max-replays'), '12'],
        ],
        color,
      ),
      'replay',
    );
    expectFits(
      fitTable(
        ['stage', 'handled', 'processing p50 / p99', 'attempts', 'retries', 'dead-lettered', 'undecodable', 'emitted'].map((h) => color.bold(h)),
        [[LONG_STAGES[0]!, '1,234,567', '123.456 / 234.567 ms', '1,250,000', '15,433', color.yellow('12,345'), '0', '1,200,000']],
        color,
      ),
      'worker',
    );
  });

  it('a table that fits is left as it is; one that does not wraps its widest column first', () => {
    const plain = new Chalk({ level: 0 });
    const small = fitTable(['a', 'b'], [['1', '2']], plain);
    expect(small.split('\n')[1]).toBe('│ a │ b │');
    const wide = fitTable(['name', 'n'], [['x'.repeat(150), '7']], plain);
    expectFits(wide, 'wide');
    expect(wide).toContain('│ 7 │');
  });
});
