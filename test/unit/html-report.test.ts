import { readFileSync } from 'node:fs';
import { describe, expect, it } from 'vitest';
import { percentilePoints, renderHtmlReport } from '../../src/cli/html-report.js';
import { createLatencyHistogram, decodeHistogram, encodeHistogram, recordUs, summarize } from '../../src/metrics/histogram.js';
import { parseReport } from '../../src/metrics/report.js';

function histogram(values: number[]): string {
  const h = createLatencyHistogram();
  for (const v of values) recordUs(h, v);
  return encodeHistogram(h);
}

describe('HTML report', () => {
  it('plots percentiles that never leave the recorded min and max, rising with the percentile', () => {
    for (const values of [[207_921, 207_921, 1_000], [477_977, ...Array.from({ length: 5000 }, (_, i) => 1000 + i * 37)], [1, 2, 3], [3_599_999_999]]) {
      const encoded = histogram(values);
      const points = percentilePoints(encoded);
      const min = Math.min(...values) / 1000;
      // Never above the maximum the report's tables show for the same histogram.
      const max = summarize(decodeHistogram(encoded)).max_ms;
      expect(max).toBeLessThanOrEqual((Math.max(...values) / 1000) * 1.001);
      expect(points.length).toBeGreaterThan(2);
      for (const [, ms] of points) {
        // The histogram keeps 3 significant digits: the minimum may read a little lower, never higher than max.
        expect(ms).toBeLessThanOrEqual(max);
        expect(ms).toBeGreaterThanOrEqual(min * 0.999);
      }
      for (let i = 1; i < points.length; i++) expect(points[i]![1]).toBeGreaterThanOrEqual(points[i - 1]![1]);
      expect(points.at(-1)![1]).toBe(max);
    }
    expect(percentilePoints(null)).toEqual([]);
    expect(percentilePoints(histogram([]))).toEqual([]);
  });

  it('escapes what it shows, keeps the data as it is, and refers to nothing outside the file', () => {
    const report = parseReport(readFileSync('fixtures/reports/html-sample.json', 'utf8'), 'fixture');
    const hostile = structuredClone(report);
    hostile.settings.scenario = '<script>alert(1)</script> & "order_placed"';
    const html = renderHtmlReport({ reports: [{ name: 'x<y>.json', report: hostile }] });
    expect(html).not.toContain('<script>alert(1)');
    expect(html).toContain('&lt;script&gt;alert(1)&lt;/script&gt; &amp; &quot;order_placed&quot;');
    expect(html).toContain('x&lt;y&gt;.json');
    // No external reference at all: no URL but the SVG namespace, no link or src attribute.
    expect(html.replaceAll('http://www.w3.org/2000/svg', '')).not.toMatch(/https?:\/\//);
    expect(html).not.toMatch(/<link|\ssrc=/);
    expect(html).toMatch(/Content-Security-Policy" content="default-src 'none'/);
  });

  it('draws the capacity curve of a --find-max report: p99 and achieved by rate, the SLO and the capacity marked', () => {
    const report = parseReport(readFileSync('fixtures/reports/html-sample.json', 'utf8'), 'fixture');
    const steps = [100, 200, 400, 300, 350, 350].map((rate, i) => ({
      index: i + 1,
      phase: (i < 3 ? 'search' : i < 5 ? 'bisect' : 'confirm') as 'search' | 'bisect' | 'confirm',
      rate_per_s: rate,
      achieved_per_s: Math.min(rate, 380),
      events_per_s: rate * 3.8,
      p99_ms: rate >= 400 ? 900 : 100 + rate / 10,
      passed: rate < 400,
      limit: rate < 400 ? null : 'p99_ms<250',
    }));
    report.capacity = { payments_per_s: 350, events_per_s: 1330, slos: ['p99_ms<250'], min_rate_per_s: 100, max_rate_per_s: null, precision: 0.05, bracketed: true, stopped_by: 'precision', first_failure: { rate_per_s: 400, limit: 'p99_ms<250' }, steps };
    const html = renderHtmlReport({ reports: [{ name: 'cap.json', report }] });
    expect(html).toContain('aria-label="Capacity: end-to-end p99 by rate"');
    expect(html).toContain('aria-label="Capacity: achieved rate by intended rate"');
    expect(html).toContain('SLO p99_ms&lt;250');
    expect(html).toContain('capacity 350/s');
    expect(html).toContain('Capacity <strong>350 payments/s</strong>');
    // Every step is a row, the failing one with its limit.
    expect(html.match(/<td>fail: p99_ms&lt;250<\/td>/g)).toHaveLength(1);
    const none = renderHtmlReport({ reports: [{ name: 'cap.json', report: { ...report, capacity: { ...report.capacity, payments_per_s: null, events_per_s: null } } }] });
    expect(none).toContain('No capacity: even 100 payments/s breaks p99_ms&lt;250');
  });
});
