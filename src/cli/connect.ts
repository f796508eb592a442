/**
 * The one way commands get a driver: what weakens a connection's security is said first
 * (`?insecure=true`, README "TLS and SASL"), then the driver for the URL's scheme is loaded, and
 * its link is watched: a broker that goes away and comes back is said on stderr as it happens
 * (README "Failure drills"). A run that subscribes ends with `brokerGone` when it does not come
 * back within --reconnect-timeout.
 */
import { brokerAway } from '../drivers/common.js';
import { BrokerUnavailableError } from '../errors.js';
import { createDriver } from '../drivers/registry.js';
import { tlsWarnings } from '../drivers/tls.js';
import type { Driver } from '../drivers/types.js';
import type { BrokerUrl } from '../drivers/url.js';
import type { CommandContext } from './context.js';

/** How often the link is looked at for an outage to report. */
const LINK_WATCH_MS = 250;

/**
 * The command's driver. `ctx.signal` is its stop (Ctrl-C, SIGTERM): after it the driver no longer
 * waits for a broker that does not answer (types.ts, DriverOptions.signal).
 */
export async function openDriver(url: BrokerUrl, ctx: Pick<CommandContext, 'out' | 'signal'>, options: { reconnectTimeout: number }): Promise<Driver> {
  const { out } = ctx;
  for (const warning of tlsWarnings(url)) out.warn(warning);
  const driver = await createDriver(url, { reconnectTimeoutMs: options.reconnectTimeout, signal: ctx.signal });
  watchLink(driver, (text) => out.warn(text), options.reconnectTimeout);
  return driver;
}

/** One line when the broker goes away, one when it is back; never keeps the process alive. */
export function watchLink(driver: Driver, warn: (text: string) => void, timeoutMs: number): void {
  let awaySinceMs: number | undefined;
  const timer = setInterval(() => {
    const link = driver.link();
    if (awaySinceMs === undefined && brokerAway(link)) {
      awaySinceMs = link.downMs;
      warn(`${driver.url.redacted}: the broker went away; reconnecting for up to ${Math.round(timeoutMs / 1000)} s (--reconnect-timeout)`);
    } else if (awaySinceMs !== undefined && link.connected) {
      warn(`${driver.url.redacted}: the broker is back (reconnect ${link.reconnects}, ${(link.downMs / 1000).toFixed(1)} s without it in all)`);
      awaySinceMs = undefined;
    }
  }, LINK_WATCH_MS);
  timer.unref();
  // Watching ends with the driver: a close is not an outage.
  const close = driver.close.bind(driver);
  driver.close = () => {
    clearInterval(timer);
    return close();
  };
}

/**
 * The end of a run whose broker stayed away past --reconnect-timeout (its link is `gone`): one
 * line, exit 3, saying what the run did and what it left where (README "Failure drills").
 */
export function brokerGone(driver: Driver, reconnectTimeoutMs: number, outcome: string): BrokerUnavailableError {
  return new BrokerUnavailableError(`${driver.url.redacted}: the broker stayed away longer than --reconnect-timeout (${reconnectTimeoutMs / 1000} s): ${outcome}`);
}
