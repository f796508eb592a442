/**
 * The hub: a ZeroMQ XSUB/XPUB forwarder (zmq_proxy on its own thread), the zguide's answer to
 * many publishers and many subscribers finding each other. Publishers connect to its XSUB on
 * the URL's port, subscribers to its XPUB on port + 1; subscriptions travel upstream through it
 * to every publisher, so each publisher sends only what someone subscribed to.
 *
 * It forwards and forgets: no storage, no acknowledgement, no redelivery. It lives inside a payq
 * process (the first on the machine to use the URL, see config.ts `hub=`), shared by every
 * driver of that process and closed with the last one. When that process ends, the others keep
 * reconnecting and lose what is sent meanwhile, until a payq process hosts it again.
 */
import { Proxy, XPublisher, XSubscriber } from 'zeromq';
import type { ZmqConfig } from './config.js';

interface HostedHub {
  refs: number;
  close: () => Promise<void>;
}

const hosted = new Map<string, HostedHub>();
/** Hubs of this process being closed: binding again waits for them. */
const closing = new Map<string, Promise<void>>();

export type HostOutcome = { hosted: true; release: () => Promise<void> } | { hosted: false; why: 'in-use' | 'not-local' | 'failed'; detail: string };

function errorCode(err: unknown): string {
  const code = (err as { code?: unknown } | null)?.code;
  return typeof code === 'string' ? code : '';
}

/** One hosting attempt at a time per endpoint, so two drivers of a process share one hub. */
const attempts = new Map<string, Promise<unknown>>();

/** Hosts the hub in this process, or shares the one it already hosts. */
export function hostHub(config: ZmqConfig): Promise<HostOutcome> {
  const key = config.publishEndpoint;
  const attempt = (attempts.get(key) ?? Promise.resolve()).catch(() => undefined).then(() => tryHost(config));
  attempts.set(key, attempt);
  return attempt;
}

async function tryHost(config: ZmqConfig): Promise<HostOutcome> {
  const key = config.publishEndpoint;
  await closing.get(key);
  let hub = hosted.get(key);
  if (!hub) {
    const xsub = new XSubscriber({ receiveHighWaterMark: config.hwm, linger: 0 });
    const xpub = new XPublisher({ sendHighWaterMark: config.hwm, linger: 0 });
    try {
      await xsub.bind(config.publishEndpoint);
      await xpub.bind(config.subscribeEndpoint);
    } catch (err) {
      xsub.close();
      xpub.close();
      const code = errorCode(err);
      const why = code === 'EADDRINUSE' ? 'in-use' : code === 'EADDRNOTAVAIL' ? 'not-local' : 'failed';
      return { hosted: false, why, detail: err instanceof Error ? err.message : String(err) };
    }
    const proxy = new Proxy(xsub, xpub);
    const running = proxy.run().catch(() => undefined);
    hub = {
      refs: 0,
      close: async () => {
        proxy.terminate();
        await running;
        xsub.close();
        xpub.close();
      },
    };
    hosted.set(key, hub);
  }
  hub.refs++;
  const lease = hub;
  let released = false;
  return {
    hosted: true,
    release: async () => {
      if (released) return;
      released = true;
      if (--lease.refs > 0) return;
      hosted.delete(key);
      const done = lease.close().finally(() => closing.delete(key));
      closing.set(key, done);
      await done;
    },
  };
}
