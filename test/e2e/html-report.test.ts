/**
 * The HTML report in a real browser (Debian's chromium driven by playwright-core): every chart
 * renders with data, no console error, no network request, in the light and the dark theme.
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { pathToFileURL } from 'node:url';
import { chromium, type Browser } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { brokersRequired } from '../helpers/brokers.js';
import { runCli } from '../helpers/cli.js';

const CHROMIUM = '/usr/bin/chromium';
const haveChromium = existsSync(CHROMIUM);
if (!haveChromium && brokersRequired) throw new Error(`${CHROMIUM} is missing and CI requires it (apt-get install chromium)`);

describe.skipIf(!haveChromium)('payq report --html in headless Chromium', () => {
  let dir: string;
  let browser: Browser;

  beforeAll(async () => {
    dir = mkdtempSync(path.join(os.tmpdir(), 'payq-html-'));
    const baseline = await runCli(['bench', '--broker', 'memory://', '--duration', '2s', '--warmup', '1s', '--seed', '3', '--json', path.join(dir, 'baseline.json'), '-q']);
    expect(baseline.code, baseline.stderr).toBe(0);
    const current = await runCli(['bench', '--broker', 'memory://', '--duration', '2s', '--warmup', '1s', '--seed', '4', '--json', path.join(dir, 'current.json'), '-q']);
    expect(current.code, current.stderr).toBe(0);
    const html = await runCli(['report', path.join(dir, 'current.json'), '--compare', path.join(dir, 'baseline.json'), '--assert', 'loss==0', '--html', path.join(dir, 'report.html'), '-q']);
    expect(html.code, html.stderr).toBe(0);
    browser = await chromium.launch({
      executablePath: CHROMIUM,
      headless: true,
      args: ['--no-sandbox', '--disable-gpu', '--disable-background-networking', '--disable-component-update', '--disable-sync', '--no-first-run'],
    });
  });

  afterAll(async () => {
    await browser?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
  });

  for (const colorScheme of ['light', 'dark'] as const) {
    it(`renders every chart with data, no console error and no request (${colorScheme})`, async () => {
      const page = await browser.newPage({ colorScheme, viewport: { width: 1280, height: 900 } });
      const problems: string[] = [];
      const url = pathToFileURL(path.join(dir, 'report.html')).href;
      page.on('console', (m) => {
        if (m.type() === 'error' || m.type() === 'warning') problems.push(`console ${m.type()}: ${m.text()}`);
      });
      page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
      page.on('request', (r) => {
        if (r.url() !== url) problems.push(`request: ${r.url()}`);
      });
      await page.goto(url);
      const charts = await page.$$eval('figure.chart', (figs) =>
        figs.map((f) => ({
          kind: f.getAttribute('data-chart'),
          title: f.querySelector('svg')?.getAttribute('aria-label') ?? '',
          empty: f.querySelector('.empty') !== null,
          paths: [...f.querySelectorAll('path.series')].map((p) => (p.getAttribute('d') ?? '').split('L').length),
          bars: [...f.querySelectorAll('rect.bar')].map((r) => Number(r.getAttribute('width'))),
          box: (() => {
            const b = f.getBoundingClientRect();
            return { w: b.width, h: b.height };
          })(),
        })),
      );
      const titles = charts.map((c) => c.title);
      expect(titles).toEqual(expect.arrayContaining(['Throughput over time', 'End-to-end latency over time', 'Backlog over time', 'Availability over time', 'Latency by percentile', 'tᵢ — mean processing time per handler', 'cᵢ — events handled per handler', 'Dead letters by reason', 'Payments by class']));
      for (const c of charts) {
        expect(c.box.w, c.title).toBeGreaterThan(200);
        expect(c.box.h, c.title).toBeGreaterThan(50);
        if (c.title === 'Dead letters by reason') continue; // may legitimately be all zero
        expect(c.empty, c.title).toBe(false);
        // A distribution has many points; a series over a 2-second run has a point a second.
        if (c.kind === 'line') expect(Math.min(...c.paths), c.title).toBeGreaterThan(c.title.includes('over time') ? 1 : 5);
        if (c.kind === 'bar') expect(Math.max(...c.bars), c.title).toBeGreaterThan(10);
      }
      // The baseline is overlaid (dashed) on the latency chart, and the comparison table is there.
      expect(await page.locator('path.dashed[data-series="end to end (baseline)"]').count()).toBe(1);
      expect(await page.locator('text=Compared with').count()).toBeGreaterThan(0);
      const bg = await page.evaluate('getComputedStyle(document.body).backgroundColor');
      expect(bg).toBe(colorScheme === 'dark' ? 'rgb(18, 22, 28)' : 'rgb(255, 255, 255)');
      await page.screenshot({ path: path.join(process.env['PAYQ_SCREENSHOT_DIR'] ?? dir, `report-${colorScheme}.png`), fullPage: true });
      expect(problems).toEqual([]);
      await page.close();
    });
  }

  it('prints (print media) without the theme button', async () => {
    const page = await browser.newPage();
    await page.goto(pathToFileURL(path.join(dir, 'report.html')).href);
    await page.emulateMedia({ media: 'print' });
    expect(await page.locator('#theme').isVisible()).toBe(false);
    const pdf = await page.pdf({ format: 'A4' });
    expect(pdf.length).toBeGreaterThan(10_000);
    await page.close();
  });
});
