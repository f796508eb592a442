import { describe, expect, it } from 'vitest';
import { startMetricsServer } from '../../src/cli/metrics-server.js';
import { createLatencyHistogram, cumulativeCounts, recordUs } from '../../src/metrics/histogram.js';
import { LATENCY_BUCKETS_S, OPENMETRICS_CONTENT_TYPE, renderOpenMetrics, type Metric } from '../../src/metrics/openmetrics.js';
import { parseOpenMetrics, sampleValue } from '../helpers/openmetrics.js';

function metrics(): Metric[] {
  const e2e = createLatencyHistogram();
  for (const us of [400, 999, 1000, 1001, 2_600, 49_000, 250_000, 59_000_000, 3_000_000_000]) recordUs(e2e, us);
  const hop = createLatencyHistogram();
  recordUs(hop, 700, 5);
  return [
    { kind: 'counter', name: 'payq_events_sent', help: 'events sent', value: 1234 },
    { kind: 'counter', name: 'payq_sent_bytes', help: 'bytes sent', value: 99, unit: 'bytes' },
    { kind: 'gauge', name: 'payq_backlog_events', help: 'events sent and not yet consumed', value: 17, unit: 'events' },
    { kind: 'histogram', name: 'payq_end_to_end_latency_seconds', help: 'a payment\'s first event published → its last handled\nsecond line', histogram: e2e },
    { kind: 'histogram', name: 'payq_hop_latency_seconds', help: 'published → consumed by the next stage', histogram: hop, labels: { stage: 'payment-service' } },
    { kind: 'histogram', name: 'payq_hop_latency_seconds', help: 'published → consumed by the next stage', histogram: createLatencyHistogram(), labels: { stage: 'odd "name"\\x' } },
  ];
}

describe('OpenMetrics', () => {
  it('renders counters, gauges and histograms a strict reader accepts, with the exact counts', () => {
    const text = renderOpenMetrics(metrics());
    const families = parseOpenMetrics(text);
    expect(sampleValue(families, 'payq_events_sent_total')).toBe(1234);
    expect(families.get('payq_sent_bytes')!.unit).toBe('bytes');
    expect(sampleValue(families, 'payq_backlog_events')).toBe(17);
    expect(sampleValue(families, 'payq_end_to_end_latency_seconds_count')).toBe(9);
    // ≤ 1 ms: 400 µs, 999 µs and 1000 µs; 1001 µs is above (the histogram keeps 3 digits).
    expect(sampleValue(families, 'payq_end_to_end_latency_seconds_bucket', { le: '0.001' })).toBe(3);
    expect(sampleValue(families, 'payq_end_to_end_latency_seconds_bucket', { le: '60' })).toBe(8);
    expect(sampleValue(families, 'payq_end_to_end_latency_seconds_bucket', { le: '+Inf' })).toBe(9);
    expect(sampleValue(families, 'payq_end_to_end_latency_seconds_sum')).toBeCloseTo(3059.3, 0);
    expect(sampleValue(families, 'payq_hop_latency_seconds_count', { stage: 'payment-service' })).toBe(5);
    expect(text).toContain('stage="odd \\"name\\"\\\\x"');
    expect(text).toContain('\\nsecond line');
  });

  it('the strict reader refuses what the format does not allow', () => {
    const good = renderOpenMetrics(metrics());
    expect(() => parseOpenMetrics(good.replace('# EOF\n', ''))).toThrow(/EOF/);
    expect(() => parseOpenMetrics(good.replace('payq_events_sent_total', 'payq_events_sent'))).toThrow(/not allowed/);
    expect(() => parseOpenMetrics(good.replace('payq_end_to_end_latency_seconds_count 9', 'payq_end_to_end_latency_seconds_count 8'))).toThrow(/differs/);
    expect(() => parseOpenMetrics(`\n${good}`)).toThrow(/blank/);
  });

  it('cumulative counts match a brute-force count at every bound', () => {
    const h = createLatencyHistogram();
    const values: number[] = [];
    let x = 17;
    for (let i = 0; i < 5000; i++) {
      x = (x * 1103515245 + 12345) % 2 ** 31;
      const v = 1 + (x % 20_000_000);
      values.push(v);
      recordUs(h, v);
    }
    const bounds = LATENCY_BUCKETS_S.map((s) => s * 1e6);
    const counts = cumulativeCounts(h, bounds);
    bounds.forEach((b, i) => {
      const brute = values.filter((v) => v <= b).length;
      // Exact but for values in the bucket that straddles the bound (3 significant digits).
      expect(Math.abs(counts[i]! - brute)).toBeLessThanOrEqual(values.filter((v) => Math.abs(v - b) <= b * 0.001).length);
    });
  });

  it('serves /metrics over HTTP on loopback and nothing else', async () => {
    let sent = 0;
    const server = await startMetricsServer('127.0.0.1', 0, () => [{ kind: 'counter', name: 'payq_events_sent', help: 'events sent', value: ++sent }]);
    try {
      const r = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(r.status).toBe(200);
      expect(r.headers.get('content-type')).toBe(OPENMETRICS_CONTENT_TYPE);
      expect(sampleValue(parseOpenMetrics(await r.text()), 'payq_events_sent_total')).toBe(1);
      const again = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(sampleValue(parseOpenMetrics(await again.text()), 'payq_events_sent_total')).toBe(2);
      expect((await fetch(`http://127.0.0.1:${server.port}/`)).status).toBe(404);
      expect((await fetch(`http://127.0.0.1:${server.port}/metrics`, { method: 'POST' })).status).toBe(405);
      await expect(startMetricsServer('127.0.0.1', server.port, () => [])).rejects.toThrow(/--metrics-port: cannot listen on 127\.0\.0\.1:\d+: the port is in use/);
    } finally {
      await server.close();
    }
  });
});
