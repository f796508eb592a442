/**
 * What the Kafka protocol tells about a broker's version. Kafka has no "version" request; the
 * ApiVersions response lists the protocol versions the broker speaks, and Kafka 4.0 dropped the
 * old ones (KIP-896): the one tell of its era. kafkajs keeps this response private, so this
 * module sends ApiVersions v0 itself (allowed before SASL authentication).
 */
import net from 'node:net';
import tls from 'node:tls';

export interface ApiVersionRange {
  min: number;
  max: number;
}

const API_VERSIONS_KEY = 18;
const NAMES: Record<number, string> = { 0: 'Produce', 1: 'Fetch', 3: 'Metadata' };

export function encodeApiVersionsRequest(correlationId: number, clientId: string): Buffer {
  const client = Buffer.from(clientId, 'utf8');
  const body = Buffer.alloc(2 + 2 + 4 + 2 + client.length);
  body.writeInt16BE(API_VERSIONS_KEY, 0);
  body.writeInt16BE(0, 2);
  body.writeInt32BE(correlationId, 4);
  body.writeInt16BE(client.length, 8);
  client.copy(body, 10);
  const size = Buffer.alloc(4);
  size.writeInt32BE(body.length, 0);
  return Buffer.concat([size, body]);
}

/** Parses an ApiVersions v0 response body (after the size prefix). */
export function decodeApiVersionsResponse(body: Buffer): Map<number, ApiVersionRange> {
  let at = 4; // correlation id
  at += 2; // error code: even UNSUPPORTED_VERSION comes with the broker's list
  const count = body.readInt32BE(at);
  at += 4;
  const out = new Map<number, ApiVersionRange>();
  for (let i = 0; i < count && at + 6 <= body.length; i++, at += 6) {
    out.set(body.readInt16BE(at), { min: body.readInt16BE(at + 2), max: body.readInt16BE(at + 4) });
  }
  return out;
}

export function describeApiVersions(versions: Map<number, ApiVersionRange>): string {
  // Fetch v0-3 are gone since 4.0. (Produce is no tell: 4.x still advertises v0 for librdkafka's
  // sake, KAFKA-18659, while refusing v0-2 requests.)
  const fetch = versions.get(1);
  const era =
    fetch === undefined
      ? 'an unknown broker'
      : fetch.min >= 4
        ? 'Apache Kafka 4.0 or later (KIP-896 baseline)'
        : 'Apache Kafka before 4.0 (or a compatible broker)';
  const ranges = [0, 1, 3]
    .filter((key) => versions.has(key))
    .map((key) => `${NAMES[key]} v${versions.get(key)!.min}-${versions.get(key)!.max}`);
  return `Kafka protocol, API versions of ${era}; ${ranges.join(', ')}; ${versions.size} APIs`;
}

/** Asks one broker for its API versions; undefined when it doesn't answer within the timeout. */
export function probeApiVersions(
  host: string,
  port: number,
  useTls: boolean,
  timeoutMs = 3_000,
): Promise<Map<number, ApiVersionRange> | undefined> {
  return new Promise((resolve) => {
    const socket = useTls
      ? tls.connect({ host, port, servername: net.isIP(host) ? undefined : host })
      : net.connect({ host, port });
    let received = Buffer.alloc(0);
    const done = (result: Map<number, ApiVersionRange> | undefined) => {
      clearTimeout(timer);
      socket.destroy();
      resolve(result);
    };
    const timer = setTimeout(() => done(undefined), timeoutMs);
    socket.once(useTls ? 'secureConnect' : 'connect', () => socket.write(encodeApiVersionsRequest(1, 'payq')));
    socket.on('data', (chunk: Buffer) => {
      received = Buffer.concat([received, chunk]);
      if (received.length < 4) return;
      const size = received.readInt32BE(0);
      if (size < 10 || size > 1_000_000) return done(undefined);
      if (received.length < 4 + size) return;
      try {
        done(decodeApiVersionsResponse(received.subarray(4, 4 + size)));
      } catch {
        done(undefined);
      }
    });
    socket.once('error', () => done(undefined));
    socket.once('close', () => done(undefined));
  });
}
