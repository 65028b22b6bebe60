import { createServer, type Server } from 'node:http';
import { Counter, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

/** Prometheus metrics of the gRPC server: per-method counts by code and a latency histogram. */
export class Metrics {
  readonly registry = new Registry();
  readonly operations = new Counter({
    name: 'csi_operations_total',
    help: 'CSI RPCs served, by method and gRPC status code',
    labelNames: ['method', 'code'] as const,
    registers: [this.registry],
  });
  readonly latency = new Histogram({
    name: 'csi_operation_duration_seconds',
    help: 'CSI RPC latency, by method and gRPC status code',
    labelNames: ['method', 'code'] as const,
    buckets: [0.001, 0.005, 0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60, 120],
    registers: [this.registry],
  });
  readonly aborted = new Counter({
    name: 'csi_operations_aborted_total',
    help: 'RPCs answered ABORTED because another operation held the volume',
    labelNames: ['method'] as const,
    registers: [this.registry],
  });

  constructor(withProcessMetrics = true) {
    if (withProcessMetrics) collectDefaultMetrics({ register: this.registry, prefix: 'stackube_csi_' });
  }

  observe(method: string, code: string, seconds: number): void {
    this.operations.inc({ method, code });
    this.latency.observe({ method, code }, seconds);
  }
}

/**
 * Serve /metrics and /healthz on host:port. /healthz answers 200 while the gRPC server serves and
 * 503 once it is shutting down, so a kubelet probe sees the drain.
 */
export async function serveMetrics(address: string, metrics: Metrics, healthy: () => boolean): Promise<Server> {
  const idx = address.lastIndexOf(':');
  const host = address.slice(0, idx) || '0.0.0.0';
  const port = Number(address.slice(idx + 1));
  const server = createServer((req, res) => {
    const path = (req.url ?? '/').split('?')[0];
    if (path === '/metrics') {
      metrics.registry
        .metrics()
        .then((body) => {
          res.writeHead(200, { 'content-type': metrics.registry.contentType });
          res.end(body);
        })
        .catch((e: Error) => {
          res.writeHead(500).end(e.message);
        });
    } else if (path === '/healthz') {
      const ok = healthy();
      res.writeHead(ok ? 200 : 503, { 'content-type': 'text/plain' }).end(ok ? 'ok\n' : 'shutting down\n');
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' }).end('not found: try /metrics or /healthz\n');
    }
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve());
  });
  return server;
}
