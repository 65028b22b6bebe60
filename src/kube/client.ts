import { readFile } from 'node:fs/promises';
import type * as Undici from 'undici';
import type { Agent } from 'undici';

type UndiciModule = typeof Undici;
import { z } from 'zod';
import type { KubeConnection } from './config.js';
import { exportsOf } from '../lazy-import.js';

/** What went wrong talking to the API server, in terms a caller can decide on. */
export type KubeErrorKind = 'not-found' | 'unauthorized' | 'forbidden' | 'unavailable' | 'timeout' | 'invalid-response';

export class KubeError extends Error {
  constructor(
    readonly kind: KubeErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'KubeError';
  }
  /** Worth asking again soon: the API server was slow, unreachable or overloaded. */
  get transient(): boolean {
    return this.kind === 'unavailable' || this.kind === 'timeout';
  }
}

/** The parts of a Pod this driver reads. */
const podSchema = z.object({
  metadata: z.object({ name: z.string(), namespace: z.string(), uid: z.string() }),
  spec: z.object({ runtimeClassName: z.string().nullish(), nodeName: z.string().nullish() }),
});
export type Pod = z.infer<typeof podSchema>;

/** The parts of a node.k8s.io/v1 RuntimeClass this driver reads. */
const runtimeClassSchema = z.object({ metadata: z.object({ name: z.string() }), handler: z.string() });
export type RuntimeClass = z.infer<typeof runtimeClassSchema>;

/** The parts of a storage.k8s.io/v1 CSINode this driver reads: what kubelet registered per driver. */
const csiNodeSchema = z.object({
  metadata: z.object({ name: z.string() }),
  spec: z.object({
    drivers: z
      .array(
        z.object({
          name: z.string(),
          nodeID: z.string(),
          allocatable: z.object({ count: z.number().int().nullish() }).nullish(),
        }),
      )
      .nullish(),
  }),
});
export type CsiNode = z.infer<typeof csiNodeSchema>;

/** The parts of a v1 Node this driver reads: its taints (out-of-service means its volumes may move). */
const nodeSchema = z.object({
  metadata: z.object({ name: z.string() }),
  spec: z.object({ taints: z.array(z.object({ key: z.string(), effect: z.string().nullish() })).nullish() }).nullish(),
});
export type KubeNode = z.infer<typeof nodeSchema>;

/** The parts of storage.k8s.io/v1 VolumeAttachments this driver reads. */
const volumeAttachmentListSchema = z.object({
  items: z.array(
    z.object({
      spec: z.object({ attacher: z.string(), nodeName: z.string() }),
      status: z.object({ attached: z.boolean() }).nullish(),
    }),
  ),
});
export type VolumeAttachmentList = z.infer<typeof volumeAttachmentListSchema>;

/** A Kubernetes `Status` body, which carries the API server's own message on errors. */
const statusSchema = z.object({
  kind: z.literal('Status'),
  message: z.string().optional(),
  reason: z.string().optional(),
});

const DNS_LABELISH = /^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/;
/** How long a token file read stays fresh; kubelet rotates projected tokens well before they expire. */
const TOKEN_REREAD_MS = 60_000;

export interface KubeClientOptions {
  /** Per-request limit (headers and body); a node RPC must not hang on a slow API server. */
  timeoutMs?: number;
}

/**
 * A minimal Kubernetes API client: GET of a Pod and of a RuntimeClass (the node plugin), of a CSINode
 * and the list of VolumeAttachments (the controller), nothing else (their RBAC allows no more). The bearer token goes
 * only into the Authorization header: never
 * into a message, a log line or an error.
 */
export class KubeClient {
  /** undici loads on the first request: most nodes never ask the API (filesystem-only classes). */
  private undici?: Promise<{ agent: Agent; lib: UndiciModule }>;
  private readonly timeoutMs: number;
  private token?: { value: string; readAt: number };

  constructor(
    private readonly conn: KubeConnection,
    opts: KubeClientOptions = {},
  ) {
    this.timeoutMs = opts.timeoutMs ?? 5000;
  }

  /** Where this client points, for messages (no credentials). */
  get describe(): string {
    return `${this.conn.server} (${this.conn.source})`;
  }

  async getPod(namespace: string, name: string, signal?: AbortSignal): Promise<Pod> {
    checkName('namespace', namespace);
    checkName('pod name', name);
    return this.get(`/api/v1/namespaces/${namespace}/pods/${name}`, podSchema, `pod ${namespace}/${name}`, signal);
  }

  async getRuntimeClass(name: string, signal?: AbortSignal): Promise<RuntimeClass> {
    checkName('RuntimeClass name', name);
    return this.get(`/apis/node.k8s.io/v1/runtimeclasses/${name}`, runtimeClassSchema, `RuntimeClass ${name}`, signal);
  }

  async getCsiNode(name: string, signal?: AbortSignal): Promise<CsiNode> {
    checkName('node name', name);
    return this.get(`/apis/storage.k8s.io/v1/csinodes/${name}`, csiNodeSchema, `CSINode ${name}`, signal);
  }

  async getNode(name: string, signal?: AbortSignal): Promise<KubeNode> {
    checkName('node name', name);
    return this.get(`/api/v1/nodes/${name}`, nodeSchema, `Node ${name}`, signal);
  }

  async listVolumeAttachments(signal?: AbortSignal): Promise<VolumeAttachmentList> {
    return this.get(
      '/apis/storage.k8s.io/v1/volumeattachments',
      volumeAttachmentListSchema,
      'VolumeAttachments',
      signal,
    );
  }

  async close(): Promise<void> {
    if (this.undici) await (await this.undici).agent.close();
  }

  private client(): Promise<{ agent: Agent; lib: UndiciModule }> {
    const conn = this.conn;
    this.undici ??= import('undici')
      .then((ns) => exportsOf(ns, 'Agent'))
      .then((lib) => ({
        lib,
        agent: new lib.Agent({
          connections: 4,
          keepAliveTimeout: 30_000,
          connect: {
            timeout: this.timeoutMs,
            rejectUnauthorized: !conn.insecureSkipTlsVerify,
            ...(conn.ca ? { ca: conn.ca } : {}),
            ...(conn.clientCert ? { cert: conn.clientCert, key: conn.clientKey } : {}),
            ...(conn.tlsServerName ? { servername: conn.tlsServerName } : {}),
          },
        }),
      }));
    return this.undici;
  }

  private async bearer(): Promise<string | undefined> {
    if (this.conn.token) return this.conn.token;
    if (!this.conn.tokenFile) return undefined;
    if (!this.token || Date.now() - this.token.readAt > TOKEN_REREAD_MS) {
      let value: string;
      try {
        value = (await readFile(this.conn.tokenFile, 'utf8')).trim();
      } catch (e) {
        throw new KubeError(
          'unauthorized',
          `cannot read the API token file ${this.conn.tokenFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        );
      }
      this.token = { value, readAt: Date.now() };
    }
    return this.token.value;
  }

  private async get<T>(path: string, schema: z.ZodType<T>, what: string, signal?: AbortSignal): Promise<T> {
    const token = await this.bearer();
    const limit = AbortSignal.timeout(this.timeoutMs);
    let status: number;
    let text: string;
    const { agent, lib } = await this.client();
    try {
      const res = await lib.request(`${this.conn.server}${path}`, {
        method: 'GET',
        dispatcher: agent,
        headers: { accept: 'application/json', ...(token ? { authorization: `Bearer ${token}` } : {}) },
        signal: signal ? AbortSignal.any([signal, limit]) : limit,
        headersTimeout: this.timeoutMs,
        bodyTimeout: this.timeoutMs,
      });
      status = res.statusCode;
      text = await res.body.text();
    } catch (e) {
      if (signal?.aborted)
        throw new KubeError(
          'timeout',
          `reading ${what} from the Kubernetes API was cancelled: ${(signal.reason as Error)?.message ?? 'caller gave up'}`,
        );
      const timedOut =
        limit.aborted ||
        e instanceof lib.errors.HeadersTimeoutError ||
        e instanceof lib.errors.BodyTimeoutError ||
        e instanceof lib.errors.ConnectTimeoutError;
      if (timedOut)
        throw new KubeError(
          'timeout',
          `the Kubernetes API at ${this.conn.server} did not answer within ${this.timeoutMs} ms (reading ${what})`,
        );
      const err = e as { code?: string; cause?: { code?: string; message?: string }; message: string };
      throw new KubeError(
        'unavailable',
        `the Kubernetes API at ${this.conn.server} is unreachable (reading ${what}): ${err.cause?.code ?? err.code ?? err.cause?.message ?? err.message}`,
      );
    }
    if (status === 200) {
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch {
        throw new KubeError(
          'invalid-response',
          `the Kubernetes API at ${this.conn.server} answered ${what} with something that is not JSON`,
          status,
        );
      }
      const r = schema.safeParse(json);
      if (!r.success)
        throw new KubeError(
          'invalid-response',
          `the Kubernetes API answered ${what} without ${r.error.issues.map((i) => i.path.join('.')).join(', ')}`,
          status,
        );
      return r.data;
    }
    throw new KubeError(
      kindOf(status),
      `reading ${what} from the Kubernetes API at ${this.conn.server} failed: ${apiMessage(text) ?? `HTTP ${status}`} (HTTP ${status})`,
      status,
    );
  }
}

function checkName(what: string, v: string): void {
  if (!DNS_LABELISH.test(v))
    throw new KubeError('not-found', `${what} "${v.slice(0, 80)}" is not a valid Kubernetes name`);
}

function kindOf(status: number): KubeErrorKind {
  if (status === 404) return 'not-found';
  if (status === 401) return 'unauthorized';
  if (status === 403) return 'forbidden';
  if (status === 429 || status >= 500) return 'unavailable';
  return 'invalid-response';
}

function apiMessage(text: string): string | undefined {
  try {
    const r = statusSchema.safeParse(JSON.parse(text));
    return r.success ? r.data.message : undefined;
  } catch {
    return text.trim().slice(0, 200) || undefined;
  }
}
