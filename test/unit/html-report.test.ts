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
});
