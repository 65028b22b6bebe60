import { createRequire } from 'node:module';
import type * as NodeHttp from 'node:http';
import type { Server } from 'node:http';
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';

// require, not import: an ES import of node:http evaluates every export of it, and one of its lazy
// getters loads Node's own bundled undici (~13 MiB of RSS in every node plugin) that no one here uses
const { createServer } = createRequire(import.meta.url)('node:http') as typeof NodeHttp;

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

  // OpenStack API calls, named as cloud-provider-openstack's cinder-csi-plugin names them (so its
  // dashboards carry over), with the service as a label too; no ids or tenant names as labels.
  readonly openstackDuration = new Histogram({
    name: 'openstack_api_request_duration_seconds',
    help: 'Latency of an OpenStack API call (retries included), by service and kind of request',
    labelNames: ['service', 'request'] as const,
    buckets: [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly openstackRequests = new Counter({
    name: 'openstack_api_requests_total',
    help: 'OpenStack API calls, by service and kind of request',
    labelNames: ['service', 'request'] as const,
    registers: [this.registry],
  });
  readonly openstackErrors = new Counter({
    name: 'openstack_api_request_errors_total',
    help: 'OpenStack API calls that failed (an unexpected status or no answer), by service and kind of request',
    labelNames: ['service', 'request'] as const,
    registers: [this.registry],
  });
  // The node's RBD mappings
  readonly mapperDuration = new Histogram({
    name: 'stackube_csi_mapper_operation_duration_seconds',
    help: 'Time to map (rbd-fuse + loop, rbd-nbd, krbd) or unmap an RBD image, by mapper, operation and outcome',
    labelNames: ['mapper', 'operation', 'outcome'] as const,
    buckets: [0.01, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60],
    registers: [this.registry],
  });
  readonly mapperRestarts = new Counter({
    name: 'stackube_csi_mapper_daemon_restarts_total',
    help: 'Mappings made anew because the one staged broke (its rbd-fuse or rbd-nbd daemon gone, its device detached) or never finished',
    labelNames: ['mapper'] as const,
    registers: [this.registry],
  });
  readonly fencedClients = new Gauge({
    name: 'stackube_csi_fenced_clients',
    help: 'Ceph client instances of lost nodes this controller has blocklisted and not yet unfenced (since it started)',
    registers: [this.registry],
  });
  private countMappings?: () => Promise<Record<string, number>>;
  readonly mappings: Gauge<'mapper'> = new Gauge({
    name: 'stackube_csi_mappings',
    help: 'RBD images mapped on this node now, by mapper (from the stage records)',
    labelNames: ['mapper'] as const,
    registers: [this.registry],
    collect: async () => {
      if (!this.countMappings) return;
      const counts = await this.countMappings();
      this.mappings.reset();
      for (const [mapper, n] of Object.entries(counts)) this.mappings.set({ mapper }, n);
    },
  });

  /** The OpenStack layer's ApiObserver. */
  readonly openstackCall = (service: string, request: string, seconds: number, failed: boolean): void => {
    this.openstackRequests.inc({ service, request });
    this.openstackDuration.observe({ service, request }, seconds);
    if (failed) this.openstackErrors.inc({ service, request });
  };

  /** The node layer's NodeMetrics. */
  readonly node = {
    mapperOperation: (mapper: string, operation: 'map' | 'unmap', seconds: number, failed: boolean) =>
      this.mapperDuration.observe({ mapper, operation, outcome: failed ? 'error' : 'ok' }, seconds),
    mapperRestart: (mapper: string) => this.mapperRestarts.inc({ mapper }),
  };

  /** Count the mappings at every scrape with `count` (mapper kind → mappings). */
  countMappingsWith(count: () => Promise<Record<string, number>>): void {
    this.countMappings = count;
  }

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
