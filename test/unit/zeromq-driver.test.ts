/** The ZeroMQ driver's pure parts (frames, URL) and its refusals, which need no socket. */
import { describe, expect, it } from 'vitest';
import { zmqConfig } from '../../src/drivers/zeromq/config.js';
import { ZMQ_DRIVER } from '../../src/drivers/zeromq/descriptor.js';
import { decodeFrames, encodeMessage, probeTopic } from '../../src/drivers/zeromq/wire.js';
import { createDriver } from '../../src/drivers/registry.js';
import { parseBrokerUrl } from '../../src/drivers/url.js';
import { ConfigError } from '../../src/errors.js';

describe('ZeroMQ frames', () => {
  it('a message survives the wire exactly; a topic never matches a longer destination', () => {
    const m = { key: 'pay_1', type: 'order_placed', value: Buffer.from('{"a":1}'), headers: { ce_id: 'x', 'payq-spaces': '  a  ', empty: '' } };
    const frames = encodeMessage('checkout.orders', m).map((f) => Buffer.from(f));
    expect(frames[0]!.toString()).toBe('checkout.orders\0');
    expect(Buffer.from('checkout.orders.dlq\0').subarray(0, frames[0]!.length).equals(frames[0]!)).toBe(false);
    expect(decodeFrames(frames)).toEqual({ kind: 'message', destination: 'checkout.orders', key: 'pay_1', type: 'order_placed', headers: m.headers, value: m.value });
  });

  it("probes are recognised; frames payq didn't write are handed out raw, not dropped", () => {
    expect(decodeFrames([Buffer.from(probeTopic('abc')), Buffer.alloc(0)])).toEqual({ kind: 'probe', id: 'abc' });
    expect(decodeFrames([Buffer.from('d\0'), Buffer.from('not json'), Buffer.from('body')])).toMatchObject({ kind: 'message', destination: 'd', headers: {}, value: Buffer.from('body') });
    expect(decodeFrames([Buffer.from('d\0'), Buffer.from('only')])).toMatchObject({ kind: 'message', destination: 'd', value: Buffer.from('only') });
  });
});

describe('ZeroMQ URL', () => {
  const cfg = (u: string) => zmqConfig(parseBrokerUrl(u));

  it('the hub takes the port and the next one', () => {
    expect(cfg('zmq://127.0.0.1:5555')).toMatchObject({ publishEndpoint: 'tcp://127.0.0.1:5555', subscribeEndpoint: 'tcp://127.0.0.1:5556', hub: 'auto', hwm: 10_000 });
    expect(cfg('zmq://h:7000?hub=join&hwm=5')).toMatchObject({ hub: 'join', hwm: 5 });
  });

  it('refuses what it cannot use', () => {
    expect(() => cfg('zmq://h:65535')).toThrow(ConfigError);
    expect(() => cfg('zmq://a:1,b:2')).toThrow(/zmq:\/\/ takes one host, not 2/);
    expect(() => cfg('zmq://u:p@h:1')).toThrow(/zmq:\/\/ takes no user name or password/);
    expect(() => cfg('zmq://h:1?hub=maybe')).toThrow(ConfigError);
    expect(() => cfg('zmq://h:1?linger=1')).toThrow(/unknown parameter 'linger'; zmq:\/\/ takes hub, hwm/);
  });
});

describe('ZeroMQ capabilities and refusals', () => {
  it('declares what a brokerless transport lacks', () => {
    expect(ZMQ_DRIVER.capabilities).toMatchObject({ persistence: false, replayFromBeginning: false, consumerGroups: false, nativeDeadLetter: false, partitions: false });
  });

  it('operations that need stored messages fail at once with exit 2 and say why', async () => {
    const driver = await createDriver('zmq://127.0.0.1:5999?hub=join');
    const replay = await driver.exists!(['checkout.orders.dlq']).catch((e: unknown) => e);
    expect(replay).toBeInstanceOf(ConfigError);
    expect((replay as ConfigError).exitCode).toBe(2);
    expect((replay as Error).message).toMatch(/keeps no destinations/);
    const history = await driver
      .subscribe({ destinations: ['checkout.orders'], group: 'g', fromBeginning: true, prefetch: 1, tap: true }, () => undefined)
      .catch((e: unknown) => e);
    expect(history).toBeInstanceOf(ConfigError);
    expect((history as Error).message).toMatch(/sees what is published after it starts/);
    await driver.close();
  });
});
