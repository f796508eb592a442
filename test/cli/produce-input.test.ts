/**
 * `payq produce --from-file` with users' NDJSON (README, produce): a regular file is checked
 * whole before anything is sent; a stream (stdin, a pipe) stops at a bad line and says exactly
 * what was sent and how to resume. Checked on a real RabbitMQ queue, read with amqplib.
 */
import amqplib from 'amqplib';
import { mkdirSync, mkdtempSync, writeFileSync } from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { AMQP_URL, brokerAvailable, uniqueName } from '../helpers/brokers.js';
import { deleteDestinations } from '../helpers/cleanup.js';
import { expectOneErrorLine, runCli } from '../helpers/cli.js';

const dir = mkdtempSync(path.join(os.tmpdir(), 'payq-input-'));
function file(name: string, content: string | Buffer): string {
  const p = path.join(dir, name);
  writeFileSync(p, content);
  return p;
}
const event = (n: number) => `{"event":"order_placed","id":"e${n}","data":{"order_id":${n},"user_id":1}}`;
const good = (n: number) => Array.from({ length: n }, (_, i) => event(i + 1));

describe.concurrent('produce --from-file: input problems are exit 2, one line, before anything is sent', () => {
  it.each([
    ['a bad line 2 of 3', [event(1), '{"event":', event(3)].join('\n'), /bad-2\.ndjson:2: not JSON .*; nothing was sent$/],
    ['an array line', [event(1), '[1,2]'].join('\n'), /:2: not a JSON object \(got an array\); nothing was sent$/],
    ['a number line', [event(1), event(2), '42'].join('\n'), /:3: not a JSON object \(got a number\)/],
    ['a line without the type field', [event(1), '{"type":"x"}'].join('\n'), /:2: no event type in field 'event'/],
    ['invalid UTF-8', Buffer.concat([Buffer.from(`${event(1)}\n{"event":"a","x":"`), Buffer.from([0xc3, 0x28]), Buffer.from('"}\n')]), /:2: not valid UTF-8/],
    ['a line over 1 MiB', `${event(1)}\n{"event":"a","pad":"${'x'.repeat(1_100_000)}"}\n`, /:2: the line is longer than 1 MiB; payq sends events of at most 1 MiB/],
  ])('%s', async (name, content, pattern) => {
    const p = file(name === 'a bad line 2 of 3' ? 'bad-2.ndjson' : `${name.replaceAll(' ', '-')}.ndjson`, content);
    // No broker listens on port 1: an error about the file proves it came before connecting.
    const r = await runCli(['produce', '--broker', 'kafka://127.0.0.1:1', '--from-file', p]);
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, pattern);
  });

  it.each([
    ['a directory', () => dir, /--from-file: cannot read .*: it is a directory, not an NDJSON file/],
    ['a missing file', () => path.join(dir, 'nope.ndjson'), /--from-file: cannot read .*nope\.ndjson: no such file/],
  ])('%s', async (_name, target, pattern) => {
    const sub = path.join(dir, 'sub');
    mkdirSync(sub, { recursive: true });
    for (const args of [['--broker', 'memory://'], ['--dry-run']]) {
      const r = await runCli(['produce', ...args, '--from-file', target()]);
      expect(r.code, r.stderr).toBe(2);
      expectOneErrorLine(r.stderr, pattern);
    }
  });

  it('an endless line (/dev/zero) ends at once as too long, not after reading for ever', async () => {
    const r = await runCli(['produce', '--dry-run', '--from-file', '/dev/zero'], { timeoutMs: 60_000 });
    expect(r.code, r.stderr).toBe(2);
    expectOneErrorLine(r.stderr, /^payq: error: \/dev\/zero:1: the line is longer than 1 MiB.*; nothing was sent$/);
  });

  it('--skip-lines needs --from-file, and --size does not apply to it', async () => {
    const a = await runCli(['produce', '--broker', 'memory://', '--skip-lines', '3']);
    expect(a.code).toBe(2);
    expectOneErrorLine(a.stderr, /--skip-lines applies to --from-file only/);
    const b = await runCli(['produce', '--broker', 'memory://', '--from-file', file('ok.ndjson', good(2).join('\n')), '--size', '100']);
    expect(b.code).toBe(2);
    expectOneErrorLine(b.stderr, /--size pads generated events/);
  });
});

describe.concurrent('produce --from-file: what is read', () => {
  it('--count N sends the first N events of a file or of stdin, blank lines aside', async () => {
    const p = file('five.ndjson', ['', ...good(5)].join('\n'));
    for (const [count, last] of [
      [1, 2],
      [3, 4],
      [9, 6],
    ] as const) {
      const r = await runCli(['produce', '--broker', 'memory://', '--from-file', p, '--count', String(count), '--json']);
      expect(r.code, r.stderr).toBe(0);
      expect(JSON.parse(r.stdout)).toMatchObject({ sent: Math.min(count, 5), acked: Math.min(count, 5), last_line: last });
      const s = await runCli(['produce', '--broker', 'memory://', '--from-file', '-', '--count', String(count), '--json'], { input: ['', ...good(5)].join('\n') });
      expect(s.code, s.stderr).toBe(0);
      expect(JSON.parse(s.stdout)).toMatchObject({ sent: Math.min(count, 5), last_line: last });
    }
  });

  it('--count stops before a bad line after the events it sends: nothing bad is read', async () => {
    const p = file('bad-late.ndjson', [...good(3), 'oops'].join('\n'));
    const r = await runCli(['produce', '--broker', 'memory://', '--from-file', p, '--count', '3', '--json']);
    expect(r.code, r.stderr).toBe(0);
    expect(JSON.parse(r.stdout).sent).toBe(3);
  });

  it('a UTF-8 byte order mark is not part of the first event, and --count still counts', async () => {
    const bom = Buffer.from([0xef, 0xbb, 0xbf]);
    const p = file('bom.ndjson', Buffer.concat([bom, Buffer.from(good(3).join('\r\n'))]));
    const dry = await runCli(['produce', '--dry-run', '--from-file', p, '--count', '2']);
    expect(dry.code, dry.stderr).toBe(0);
    expect(dry.stdout).toBe(`${event(1)}\n${event(2)}\n`);
    const sent = await runCli(['produce', '--broker', 'memory://', '--from-file', p, '--count', '1', '--json']);
    expect(JSON.parse(sent.stdout).sent).toBe(1);
    const piped = await runCli(['produce', '--dry-run', '--from-file', '-'], { input: `\ufeff${good(2).join('\n')}\n` });
    expect(piped.stdout).toBe(`${event(1)}\n${event(2)}\n`);
  });
});

describe('produce --from-file on RabbitMQ: nothing sent from a bad file; a bad stream resumes exactly', async () => {
  const up = await brokerAvailable(AMQP_URL);
  const queues: string[] = [];
  afterAll(async () => {
    if (up) await deleteDestinations(AMQP_URL, queues);
  });

  async function depth(queue: string): Promise<number | undefined> {
    const conn = await amqplib.connect(AMQP_URL);
    try {
      const ch = await conn.createChannel();
      ch.on('error', () => undefined);
      try {
        return (await ch.checkQueue(queue)).messageCount;
      } catch {
        return undefined; // never declared
      }
    } finally {
      await conn.close().catch(() => undefined);
    }
  }

  it.skipIf(!up)('a bad line 2, 5 or 40 in a file: nothing is sent, the queue is not even declared', async () => {
    for (const bad of [2, 5, 40]) {
      const queue = uniqueName('input-file');
      queues.push(queue);
      const lines = good(50);
      lines[bad - 1] = '{"event": oops}';
      const r = await runCli(['produce', '--broker', AMQP_URL, '--topic', queue, '--from-file', file(`bad-${bad}.ndjson`, lines.join('\n'))]);
      expect(r.code, r.stderr).toBe(2);
      expectOneErrorLine(r.stderr, new RegExp(`:${bad}: not JSON.*nothing was sent$`));
      expect(await depth(queue)).toBeUndefined();
    }
  });

  it.skipIf(!up)('stdin with a bad line: the summary and the error say what was sent; --skip-lines resumes with no duplicate', async () => {
    for (const bad of [2, 7]) {
      const queue = uniqueName('input-stdin');
      queues.push(queue);
      const lines = [...good(5), '', ...good(10).slice(5)];
      lines[bad - 1] = 'not json';
      const r = await runCli(['produce', '--broker', AMQP_URL, '--topic', queue, '--from-file', '-', '--json'], { input: `${lines.join('\n')}\n` });
      expect(r.code, r.stderr).toBe(2);
      const summary = JSON.parse(r.stdout);
      const before = lines.slice(0, bad - 1).filter((l) => l !== '').length;
      expect(summary).toMatchObject({ sent: before, acked: before });
      const lastLine = lines.slice(0, bad - 1).map((l, i) => (l === '' ? 0 : i + 1)).reduce((a, b) => Math.max(a, b), 0);
      expect(summary.last_line).toBe(lastLine);
      const errorLine = r.stderr.trim().split('\n').at(-1)!;
      expect(errorLine).toMatch(
        new RegExp(`^payq: error: stdin:${bad}: not JSON .*stopped there: ${before} events? before it sent \\(${before} acknowledged\\), up to line ${lastLine}; fix line ${bad} and resume with --skip-lines ${bad - 1}$`),
      );
      expect(await depth(queue)).toBe(before);

      // Resume: the fixed stream, skipping what was sent.
      const fixed = [...good(5), '', ...good(10).slice(5)];
      const resumed = await runCli(['produce', '--broker', AMQP_URL, '--topic', queue, '--from-file', '-', '--skip-lines', String(bad - 1), '--json'], {
        input: `${fixed.join('\n')}\n`,
      });
      expect(resumed.code, resumed.stderr).toBe(0);
      expect(await depth(queue)).toBe(10);
    }
  });
});
