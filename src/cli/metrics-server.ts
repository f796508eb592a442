/**
 * `--metrics-port N`: serves the running command's metrics as OpenMetrics text on
 * http://HOST:N/metrics (README "Live metrics"), 127.0.0.1 unless `--metrics-host` says otherwise.
 * The command hands in a snapshot function; a scrape never changes what is measured.
 */
import http from 'node:http';
import { ConfigError } from '../errors.js';
import { OPENMETRICS_CONTENT_TYPE, renderOpenMetrics, type Metric } from '../metrics/openmetrics.js';

export interface MetricsServer {
  /** The port it listens on (the one asked for, or the one given for 0). */
  port: number;
  close(): Promise<void>;
}

export function startMetricsServer(host: string, port: number, snapshot: () => Metric[]): Promise<MetricsServer> {
  const server = http.createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (req.method !== 'GET' && req.method !== 'HEAD') {
      res.writeHead(405, { allow: 'GET, HEAD' }).end();
      return;
    }
    if (path !== '/metrics') {
      res.writeHead(404, { 'content-type': 'text/plain; charset=utf-8' }).end('payq serves /metrics only\n');
      return;
    }
    let body: string;
    try {
      body = renderOpenMetrics(snapshot());
    } catch (err) {
      res.writeHead(500, { 'content-type': 'text/plain; charset=utf-8' }).end(`${(err as Error).message}\n`);
      return;
    }
    res.writeHead(200, { 'content-type': OPENMETRICS_CONTENT_TYPE, 'content-length': Buffer.byteLength(body) });
    res.end(req.method === 'HEAD' ? undefined : body);
  });
  server.keepAliveTimeout = 1000;
  return new Promise((resolve, reject) => {
    server.once('error', (err: NodeJS.ErrnoException) => {
      const why = err.code === 'EADDRINUSE' ? 'the port is in use' : err.code === 'EACCES' ? 'permission denied' : err.code === 'EADDRNOTAVAIL' ? 'no such local address' : err.message;
      reject(new ConfigError(`--metrics-port: cannot listen on ${host}:${port}: ${why}`, { cause: err }));
    });
    server.listen(port, host, () => {
      const address = server.address();
      server.unref();
      resolve({
        port: typeof address === 'object' && address ? address.port : port,
        close: () =>
          new Promise<void>((done) => {
            server.closeAllConnections();
            server.close(() => done());
          }),
      });
    });
  });
}
