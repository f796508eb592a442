/**
 * The one way commands get a driver: what weakens a connection's security is said first
 * (`?insecure=true`, README "TLS and SASL"), then the driver for the URL's scheme is loaded.
 */
import { createDriver } from '../drivers/registry.js';
import { tlsWarnings } from '../drivers/tls.js';
import type { Driver } from '../drivers/types.js';
import type { BrokerUrl } from '../drivers/url.js';
import type { Output } from './output.js';

export async function openDriver(url: BrokerUrl, out: Output, options: { reconnectTimeout: number }): Promise<Driver> {
  for (const warning of tlsWarnings(url)) out.warn(warning);
  return createDriver(url, { reconnectTimeoutMs: options.reconnectTimeout });
}
