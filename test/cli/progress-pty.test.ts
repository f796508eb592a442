/**
 * Progress on real pseudo-terminals (util-linux `script`) that report odd sizes: the command
 * finishes (the timeout is only a hang detector) and writes a bounded number of bytes, whatever
 * the terminal says its width is.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { BIN } from '../helpers/cli.js';

interface PtyRun {
  code: number | null;
  output: string;
  bytes: number;
}

function runOnPty(columns: number, args: string[], hangAfterMs = 90_000): Promise<PtyRun> {
  const command = `stty cols ${columns} rows 0; exec ${JSON.stringify(process.execPath)} ${JSON.stringify(BIN)} ${args.join(' ')}`;
  const env: NodeJS.ProcessEnv = { ...process.env, TERM: 'xterm' };
  // Progress is drawn only outside CI, on a TTY: this is that case.
  delete env['CI'];
  delete env['NO_COLOR'];
  return new Promise((resolve, reject) => {
    const child = spawn('script', ['-qfec', command, '/dev/null'], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    const chunks: Buffer[] = [];
    let bytes = 0;
    child.stdout.on('data', (d: Buffer) => {
      bytes += d.length;
      // Keep a bounded sample; the byte count is what is checked.
      if (bytes < 1_000_000) chunks.push(d);
    });
    child.stderr.on('data', (d: Buffer) => (bytes += d.length));
    const timer = setTimeout(() => child.kill('SIGKILL'), hangAfterMs);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ code, output: Buffer.concat(chunks).toString('utf8'), bytes });
    });
  });
}

const MAX_BYTES = 64 * 1024;
/** The progress line: a spinner frame redrawn in place, cleared to the end of the line. */
const PROGRESS = /\r[⠋⠙⠹⠸⠼⠴⠦⠧⠇⠏] [^\r\n]*\x1b\[K/g;

describe('progress on odd terminals', () => {
  it.each([
    ['produce --count 200', ['produce', '--broker', 'memory://', '--count', '200', '--rate', '100']],
    ['bench --duration 2s', ['bench', '--broker', 'memory://', '--duration', '2s', '--warmup', '1s']],
  ])('%s finishes with bounded output on 0, 1, 80 and 5000 columns', { timeout: 400_000 }, async (_name, args) => {
    for (const columns of [0, 1, 80, 5000]) {
      const r = await runOnPty(columns, args);
      const context = `${columns} columns: ${r.bytes} bytes\n${r.output.slice(-1500)}`;
      expect(r.code, context).toBe(0);
      expect(r.bytes, context).toBeLessThan(MAX_BYTES);
      const lines = r.output.match(PROGRESS) ?? [];
      if (columns === 1) {
        // Too narrow to say anything: no progress line at all.
        expect(lines, context).toHaveLength(0);
      } else {
        // It did run on a terminal, and every redraw fits one line of the width in use (80 for 0;
        // a progress line is never wider than 200).
        expect(lines.length, context).toBeGreaterThan(1);
        const width = columns === 0 ? 80 : Math.min(columns, 200);
        for (const line of lines) expect([...line.replace('\x1b[K', '').slice(1)].length, line).toBeLessThan(width);
      }
    }
  });
});
