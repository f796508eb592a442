/**
 * payq headers ↔ NATS headers. NATS headers are HTTP-like lines: the client trims values and a
 * CR or LF would end the line, so a value that would not survive (leading or trailing
 * whitespace, control characters) travels as a MIME encoded-word (`=?UTF-8?B?…?=`, RFC 2047),
 * decoded on receipt; so does a value that already looks like one, which keeps the mapping
 * exact. UTF-8 travels as is.
 *
 * The message key (the payment id: Kafka's key, part of RabbitMQ's routing) has no place in a
 * NATS message, so it travels in the `payq-key` header, which the receiving side removes from
 * the delivery's headers and returns as `key`.
 */
import { headers as natsHeaders, type MsgHdrs } from '@nats-io/transport-node';
import { DeliveryError } from '../../errors.js';
import type { Headers } from '../types.js';

export const KEY_HEADER = 'payq-key';

const ENCODED_WORD = /^=\?UTF-8\?B\?([A-Za-z0-9+/]*={0,2})\?=$/;
// eslint-disable-next-line no-control-regex
const UNSAFE = /^\s|\s$|[\u0000-\u001f\u007f]|^=\?/;
/** Header names: printable ASCII without ':' (NATS_HEADER name rules, like HTTP tokens). */
const NAME = /^[!-9;-~]+$/;

export function encodeValue(value: string): string {
  return UNSAFE.test(value) ? `=?UTF-8?B?${Buffer.from(value, 'utf8').toString('base64')}?=` : value;
}

export function decodeValue(value: string): string {
  const m = ENCODED_WORD.exec(value);
  return m ? Buffer.from(m[1]!, 'base64').toString('utf8') : value;
}

/** The NATS headers of an outgoing message; DeliveryError for a name NATS cannot carry. */
export function toNatsHeaders(headers: Headers, key: string | undefined, destination: string): MsgHdrs {
  const out = natsHeaders();
  for (const [name, value] of Object.entries(headers)) {
    if (name === KEY_HEADER) continue;
    if (!NAME.test(name)) {
      throw new DeliveryError(`header name '${name}' of a message to '${destination}' cannot be carried by NATS`, {
        hint: 'NATS header names are printable ASCII without spaces or colons',
      });
    }
    out.set(name, encodeValue(value));
  }
  if (key !== undefined) out.set(KEY_HEADER, encodeValue(key));
  return out;
}

/** A received message's headers (the last value of a repeated one) and its key. */
export function fromNatsHeaders(raw: MsgHdrs | undefined): { headers: Headers; key: string | undefined } {
  const headers: Headers = {};
  let key: string | undefined;
  if (!raw) return { headers, key };
  for (const name of raw.keys()) {
    const values = raw.values(name);
    const value = decodeValue(values[values.length - 1] ?? '');
    if (name === KEY_HEADER) key = value;
    else headers[name] = value;
  }
  return { headers, key };
}

/** Bytes the headers add on the wire, for the max_payload check. */
export function headerBytes(raw: MsgHdrs): number {
  return (raw as unknown as { encode(): Uint8Array }).encode().length;
}
