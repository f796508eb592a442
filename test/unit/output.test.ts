/** Output writes data exactly as given; human lines get only structural URL redaction. */
import { Writable } from 'node:stream';
import { describe, expect, it } from 'vitest';
import { Output } from '../../src/cli/output.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';

function capture(): { stream: Writable; text: () => string } {
  let text = '';
  const stream = new Writable({
    write(chunk, _enc, done) {
      text += String(chunk);
      done();
    },
  });
  return { stream, text: () => text };
}

describe('Output', () => {
  it('never rewrites data, whatever passwords were seen', async () => {
    parseBrokerUrl('amqp://guest:order@127.0.0.1:5672');
    parseBrokerUrl('nats://event:latency@127.0.0.1:4222');
    const stdout = capture();
    const stderr = capture();
    const out = new Output({ stdout: stdout.stream, stderr: stderr.stream }, 'normal', false);
    const data = '{"event":"order_placed","destination":"newb.guest","latency":{"p99_ms":1},"callback":"https://user:pw@example.com/x"}\n';
    out.data(data);
    await out.dataAsync(data);
    expect(stdout.text()).toBe(data + data);
  });

  it('redacts a URL with userinfo in human lines, and no other word', () => {
    const stdout = capture();
    const stderr = capture();
    const out = new Output({ stdout: stdout.stream, stderr: stderr.stream }, 'verbose', true);
    out.info('order latency for guest on amqp://guest:order@h:5672');
    out.verbose('event data at nats://:t0ken@h');
    out.warn('payment checkout kafka://u:p@h');
    out.error('cannot reach amqps://guest:latency@h:5671');
    out.diagnostic('    at x (amqp://a:b@c)');
    expect(stderr.text()).toBe(
      [
        'order latency for guest on amqp://guest:***@h:5672',
        'event data at nats://:***@h',
        'warning: payment checkout kafka://u:***@h',
        'payq: error: cannot reach amqps://guest:***@h:5671',
        '    at x (amqp://a:***@c)',
        '',
      ].join('\n'),
    );
  });
});
