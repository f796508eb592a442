/**
 * payq messages as ZeroMQ multipart messages:
 *
 *   frame 0  topic: `<destination>\0` (subscriptions are byte prefixes; the NUL keeps
 *            `orders` from matching `orders.dlq`)
 *   frame 1  meta: JSON {"k": key, "t": type, "h": {headers}} (exact strings, UTF-8)
 *   frame 2  the body, as is
 *
 * A probe is `\x01probe.<id>` with an empty frame: connect() and subscribe() send one through
 * the hub to themselves to learn that the path works (see zeromq-driver.ts).
 */
import type { Headers, OutgoingMessage } from '../types.js';

const PROBE_PREFIX = '\x01probe.';

export function topicOf(destination: string): string {
  return `${destination}\0`;
}

export function probeTopic(id: string): string {
  return `${PROBE_PREFIX}${id}`;
}

export function encodeMessage(destination: string, m: OutgoingMessage): [string, string, Buffer] {
  return [topicOf(destination), JSON.stringify({ k: m.key, t: m.type, h: m.headers }), m.value];
}

export type Decoded =
  | { kind: 'probe'; id: string }
  | { kind: 'message'; destination: string; key: string | undefined; type: string; headers: Headers; value: Buffer };

/**
 * What arrived. Frames another ZeroMQ program published on a payq topic are handed out as they
 * are (the last frame as the body, no headers) rather than dropped: consume shows them as
 * undecodable, the worker dead-letters them.
 */
export function decodeFrames(frames: Buffer[]): Decoded {
  const topic = frames[0]?.toString('utf8') ?? '';
  if (topic.startsWith(PROBE_PREFIX)) return { kind: 'probe', id: topic.slice(PROBE_PREFIX.length) };
  const nul = topic.indexOf('\0');
  const destination = nul === -1 ? topic : topic.slice(0, nul);
  const raw = { kind: 'message' as const, destination, key: undefined, type: '', headers: {}, value: frames[frames.length - 1] ?? Buffer.alloc(0) };
  if (frames.length !== 3 || nul !== topic.length - 1) return raw;
  try {
    const meta = JSON.parse(frames[1]!.toString('utf8')) as { k?: unknown; t?: unknown; h?: unknown };
    const headers: Headers = {};
    if (meta.h && typeof meta.h === 'object') {
      for (const [name, value] of Object.entries(meta.h as Record<string, unknown>)) if (typeof value === 'string') headers[name] = value;
    }
    return {
      kind: 'message',
      destination,
      key: typeof meta.k === 'string' ? meta.k : undefined,
      type: typeof meta.t === 'string' ? meta.t : '',
      headers,
      value: frames[2]!,
    };
  } catch {
    return raw;
  }
}
