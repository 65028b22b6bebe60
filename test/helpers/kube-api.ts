import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:https';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TLSSocket } from 'node:tls';
import { execa } from 'execa';
import { stringify } from 'yaml';

/** PEM files of a throw-away CA, an API server certificate for 127.0.0.1 and a client certificate. */
export interface TestPki {
  dir: string;
  caCert: string;
  serverCert: string;
  serverKey: string;
  clientCert: string;
  clientKey: string;
}

async function openssl(dir: string, args: string[]): Promise<void> {
  await execa('openssl', args, { cwd: dir });
}

/** Make the certificates with the openssl CLI (EC P-256, one day). */
export async function makePki(): Promise<TestPki> {
  const dir = mkdtempSync(join(tmpdir(), 'kube-pki-'));
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes'];
  await openssl(dir, [
    'req',
    '-x509',
    ...ec,
    '-keyout',
    'ca.key',
    '-out',
    'ca.crt',
    '-days',
    '1',
    '-subj',
    '/CN=stand-in-kubernetes-ca',
  ]);
  const leaf = async (name: string, subj: string, ext: string) => {
    await openssl(dir, ['req', ...ec, '-keyout', `${name}.key`, '-out', `${name}.csr`, '-subj', subj]);
    writeFileSync(join(dir, `${name}.ext`), ext);
    await openssl(dir, [
      'x509',
      '-req',
      '-in',
      `${name}.csr`,
      '-CA',
      'ca.crt',
      '-CAkey',
      'ca.key',
      '-CAcreateserial',
      '-out',
      `${name}.crt`,
      '-days',
      '1',
      '-extfile',
      `${name}.ext`,
    ]);
  };
  await leaf(
    'server',
    '/CN=kube-apiserver',
    'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n',
  );
  await leaf('client', '/O=system:nodes/CN=system:node:test', 'extendedKeyUsage=clientAuth\n');
  return {
    dir,
    caCert: join(dir, 'ca.crt'),
    serverCert: join(dir, 'server.crt'),
    serverKey: join(dir, 'server.key'),
    clientCert: join(dir, 'client.crt'),
    clientKey: join(dir, 'client.key'),
  };
}

export interface StandInOptions {
  /** The bearer token the server accepts (a client certificate from the test CA is accepted too). */
  token: string;
  /** Answer every request after this long (to exercise client timeouts). */
  delayMs?: number;
}

/**
 * A local stand-in for the Kubernetes API server: HTTPS with a test CA, bearer token or client
 * certificate authentication, GET of Pods and RuntimeClasses from in-memory maps, Status bodies on
 * errors as the real server sends them. It records each request (path and whether it was
 * authenticated, never the token) so tests can check caching and what was asked.
 */
export class KubeApiStandIn {
  readonly pods = new Map<string, object>();
  readonly runtimeClasses = new Map<string, object>();
  /** Nodes by name (their taints are what the controller's fencing reads). */
  readonly nodes = new Map<string, object>();
  /** CSINodes by name: the node plugins kubelet registered. */
  readonly csiNodes = new Map<string, object>();
  /** Paths answered 403, as an API server without the RBAC rule would. */
  readonly forbidden = new Set<string>();
  readonly requests: { path: string; auth: 'token' | 'cert' | 'none' | 'bad-token' }[] = [];
  delayMs: number;
  private server?: Server;
  private readonly pending = new Set<NodeJS.Timeout>();
  url = '';

  constructor(
    readonly pki: TestPki,
    private readonly opts: StandInOptions,
  ) {
    this.delayMs = opts.delayMs ?? 0;
  }

  addPod(namespace: string, name: string, runtimeClassName?: string, uid = `uid-${namespace}-${name}`): void {
    this.pods.set(`${namespace}/${name}`, {
      apiVersion: 'v1',
      kind: 'Pod',
      metadata: { name, namespace, uid, resourceVersion: '1' },
      spec: {
        nodeName: 'node-1',
        containers: [{ name: 'app', image: 'busybox' }],
        ...(runtimeClassName ? { runtimeClassName } : {}),
      },
      status: { phase: 'Pending' },
    });
  }

  /** A Node, and a CSINode registering this driver's plugin on it. */
  addNode(name: string, taints: { key: string; effect: string }[] = []): void {
    this.nodes.set(name, { apiVersion: 'v1', kind: 'Node', metadata: { name }, spec: { taints } });
    this.csiNodes.set(name, {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'CSINode',
      metadata: { name },
      spec: { drivers: [{ name: 'cinder.csi.stackube.io', nodeID: name, allocatable: { count: 64 } }] },
    });
  }

  addRuntimeClass(name: string, handler: string): void {
    this.runtimeClasses.set(name, { apiVersion: 'node.k8s.io/v1', kind: 'RuntimeClass', metadata: { name }, handler });
  }

  async start(): Promise<this> {
    const server = createServer(
      {
        cert: readFileSync(this.pki.serverCert),
        key: readFileSync(this.pki.serverKey),
        ca: readFileSync(this.pki.caCert),
        requestCert: true,
        rejectUnauthorized: false, // token clients have no certificate; checked per request
      },
      (req, res) => {
        const path = (req.url ?? '').split('?')[0]!;
        const header = req.headers.authorization;
        const auth = (req.socket as TLSSocket).authorized
          ? 'cert'
          : !header
            ? 'none'
            : header === `Bearer ${this.opts.token}`
              ? 'token'
              : 'bad-token';
        this.requests.push({ path, auth });
        const send = (code: number, body: object) => {
          const t = setTimeout(() => {
            this.pending.delete(t);
            res.writeHead(code, { 'content-type': 'application/json' });
            res.end(JSON.stringify(body));
          }, this.delayMs);
          this.pending.add(t);
        };
        const status = (code: number, reason: string, message: string) =>
          send(code, { kind: 'Status', apiVersion: 'v1', status: 'Failure', message, reason, code });
        if (auth === 'none' || auth === 'bad-token') return status(401, 'Unauthorized', 'Unauthorized');
        if (this.forbidden.has(path))
          return status(
            403,
            'Forbidden',
            `forbidden: User "system:serviceaccount:stackube-csi:stackube-csi-node" cannot get resource at ${path}`,
          );
        if (req.method !== 'GET') return status(405, 'MethodNotAllowed', 'the stand-in serves GET only');
        let m = /^\/api\/v1\/namespaces\/([^/]+)\/pods\/([^/]+)$/.exec(path);
        if (m) {
          const pod = this.pods.get(`${m[1]}/${m[2]}`);
          return pod ? send(200, pod) : status(404, 'NotFound', `pods "${m[2]}" not found`);
        }
        m = /^\/apis\/node\.k8s\.io\/v1\/runtimeclasses\/([^/]+)$/.exec(path);
        if (m) {
          const rc = this.runtimeClasses.get(m[1]!);
          return rc ? send(200, rc) : status(404, 'NotFound', `runtimeclasses.node.k8s.io "${m[1]}" not found`);
        }
        m = /^\/api\/v1\/nodes\/([^/]+)$/.exec(path);
        if (m) {
          const node = this.nodes.get(m[1]!);
          return node ? send(200, node) : status(404, 'NotFound', `nodes "${m[1]}" not found`);
        }
        m = /^\/apis\/storage\.k8s\.io\/v1\/csinodes\/([^/]+)$/.exec(path);
        if (m) {
          const node = this.csiNodes.get(m[1]!);
          return node ? send(200, node) : status(404, 'NotFound', `csinodes.storage.k8s.io "${m[1]}" not found`);
        }
        if (path === '/apis/storage.k8s.io/v1/volumeattachments')
          return send(200, { apiVersion: 'storage.k8s.io/v1', kind: 'VolumeAttachmentList', items: [] });
        return status(404, 'NotFound', 'the server could not find the requested resource');
      },
    );
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    this.server = server;
    this.url = `https://127.0.0.1:${(server.address() as AddressInfo).port}`;
    return this;
  }

  get port(): number {
    return Number(new URL(this.url).port);
  }

  requestsTo(path: string): number {
    return this.requests.filter((r) => r.path === path).length;
  }

  /** A kubeconfig file for this server. */
  writeKubeconfig(
    dir: string,
    o: { auth: 'token' | 'tokenFile' | 'cert' | 'none'; caInline?: boolean; insecure?: boolean; token?: string } = {
      auth: 'token',
    },
  ): string {
    const user: Record<string, string> = {};
    const token = o.token ?? this.opts.token;
    if (o.auth === 'token') user.token = token;
    if (o.auth === 'tokenFile') {
      writeFileSync(join(dir, 'token'), `${token}\n`);
      user.tokenFile = 'token'; // relative: resolved against the kubeconfig's directory
    }
    if (o.auth === 'cert') {
      user['client-certificate-data'] = readFileSync(this.pki.clientCert).toString('base64');
      user['client-key'] = this.pki.clientKey;
    }
    const cluster: Record<string, unknown> = { server: this.url };
    if (o.insecure) cluster['insecure-skip-tls-verify'] = true;
    else if (o.caInline) cluster['certificate-authority-data'] = readFileSync(this.pki.caCert).toString('base64');
    else cluster['certificate-authority'] = this.pki.caCert;
    const file = join(dir, 'kubeconfig');
    writeFileSync(
      file,
      stringify({
        apiVersion: 'v1',
        kind: 'Config',
        'current-context': 'stand-in',
        contexts: [{ name: 'stand-in', context: { cluster: 'local', user: 'node' } }],
        clusters: [{ name: 'local', cluster }],
        users: [{ name: 'node', user }],
      }),
    );
    return file;
  }

  /** A service account directory (token, ca.crt) and the environment an in-cluster pod would see. */
  writeServiceAccount(dir: string): { dir: string; env: NodeJS.ProcessEnv } {
    writeFileSync(join(dir, 'token'), this.opts.token);
    writeFileSync(join(dir, 'ca.crt'), readFileSync(this.pki.caCert));
    return { dir, env: { KUBERNETES_SERVICE_HOST: '127.0.0.1', KUBERNETES_SERVICE_PORT: String(this.port) } };
  }

  async stop(): Promise<void> {
    for (const t of this.pending) clearTimeout(t);
    this.server?.closeAllConnections();
    await new Promise((r) => this.server?.close(r));
  }
}

/** Start a stand-in with a fresh PKI; `cleanup` stops it and removes its files. */
export async function startKubeApi(
  opts: StandInOptions,
): Promise<{ api: KubeApiStandIn; workDir: string; cleanup: () => Promise<void> }> {
  const pki = await makePki();
  const api = await new KubeApiStandIn(pki, opts).start();
  const workDir = mkdtempSync(join(tmpdir(), 'kube-standin-'));
  return {
    api,
    workDir,
    cleanup: async () => {
      await api.stop();
      rmSync(pki.dir, { recursive: true, force: true });
      rmSync(workDir, { recursive: true, force: true });
    },
  };
}
