import { readFile } from 'node:fs/promises';
import { delimiter, dirname, isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { trimTrailingSlashes } from '../text.js';
import { parseYaml } from '../yaml.js';

/** Where a pod's service account credentials are mounted (the same path client-go reads). */
export const SERVICE_ACCOUNT_DIR = '/var/run/secrets/kubernetes.io/serviceaccount';

/** How to reach and authenticate to one Kubernetes API server. Holds secrets: never log it. */
export interface KubeConnection {
  /** https://host:port, no trailing slash. */
  server: string;
  /** PEM of the CA(s) to trust; undefined: the system's. */
  ca?: string;
  insecureSkipTlsVerify: boolean;
  tlsServerName?: string;
  /** A fixed bearer token. */
  token?: string;
  /** A file holding the bearer token, re-read as it rotates (projected service account tokens do). */
  tokenFile?: string;
  /** Client certificate and key, PEM. */
  clientCert?: string;
  clientKey?: string;
  /** Where this came from, for messages: "in-cluster service account", "kubeconfig /x (context y)". */
  source: string;
}

export class KubeConfigError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KubeConfigError';
  }
}

/** kubeconfig's lists of named entries: `[{ name, <key>: {...} }]`. */
const named = <K extends string, T extends z.ZodType>(key: K, inner: T) =>
  z.array(z.object({ name: z.string() }).extend({ [key]: inner } as Record<K, T>)).nullish();

const kubeconfigSchema = z.object({
  'current-context': z.string().nullish(),
  contexts: named('context', z.object({ cluster: z.string(), user: z.string().nullish() })),
  clusters: named(
    'cluster',
    z.object({
      server: z.string().regex(/^https?:\/\/[^/\s]+/, 'must be a URL such as https://host:6443'),
      'certificate-authority': z.string().nullish(),
      'certificate-authority-data': z.string().nullish(),
      'insecure-skip-tls-verify': z.boolean().nullish(),
      'tls-server-name': z.string().nullish(),
    }),
  ),
  users: named(
    'user',
    z
      .object({
        token: z.string().nullish(),
        tokenFile: z.string().nullish(),
        'client-certificate': z.string().nullish(),
        'client-certificate-data': z.string().nullish(),
        'client-key': z.string().nullish(),
        'client-key-data': z.string().nullish(),
        username: z.string().nullish(),
        exec: z.unknown().optional(),
        'auth-provider': z.unknown().optional(),
      })
      .nullish(),
  ),
});
type Kubeconfig = z.infer<typeof kubeconfigSchema>;

/**
 * The Kubernetes API connection this process should use, or why there is none. KUBECONFIG (as
 * kubectl reads it: one or more files, the first to define a name wins) takes precedence over the
 * in-cluster service account, so an operator can point a node plugin elsewhere on purpose.
 */
export async function loadKubeConnection(
  env: NodeJS.ProcessEnv = process.env,
  serviceAccountDir = SERVICE_ACCOUNT_DIR,
): Promise<{ connection: KubeConnection } | { unavailable: string }> {
  if (env.KUBECONFIG) return { connection: await fromKubeconfig(env.KUBECONFIG.split(delimiter).filter(Boolean)) };
  if (env.KUBERNETES_SERVICE_HOST && env.KUBERNETES_SERVICE_PORT)
    return { connection: await inCluster(env, serviceAccountDir) };
  return {
    unavailable:
      'neither KUBECONFIG nor the in-cluster variables (KUBERNETES_SERVICE_HOST, KUBERNETES_SERVICE_PORT) are set',
  };
}

async function readText(path: string, what: string): Promise<string> {
  try {
    return await readFile(path, 'utf8');
  } catch (e) {
    throw new KubeConfigError(
      `cannot read ${what} ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
    );
  }
}

async function inCluster(env: NodeJS.ProcessEnv, dir: string): Promise<KubeConnection> {
  const host = env.KUBERNETES_SERVICE_HOST!;
  const tokenFile = `${dir}/token`;
  await readText(tokenFile, 'the service account token'); // fail now, not on the first publish
  return {
    server: `https://${host.includes(':') ? `[${host}]` : host}:${env.KUBERNETES_SERVICE_PORT}`,
    ca: await readText(`${dir}/ca.crt`, 'the service account CA'),
    insecureSkipTlsVerify: false,
    tokenFile,
    source: 'in-cluster service account',
  };
}

const decode = (b64: string) => Buffer.from(b64, 'base64').toString('utf8');

/** Merge kubeconfig files as kubectl does: the first file to set current-context or define a name wins. */
function merge(docs: Kubeconfig[]): Kubeconfig {
  const firstByName = <T extends { name: string }>(lists: (T[] | null | undefined)[]) => {
    const seen = new Map<string, T>();
    for (const l of lists) for (const item of l ?? []) if (!seen.has(item.name)) seen.set(item.name, item);
    return [...seen.values()];
  };
  return {
    'current-context': docs.find((d) => d['current-context'])?.['current-context'],
    contexts: firstByName(docs.map((d) => d.contexts)),
    clusters: firstByName(docs.map((d) => d.clusters)),
    users: firstByName(docs.map((d) => d.users)),
  };
}

async function fromKubeconfig(paths: string[]): Promise<KubeConnection> {
  const docs: { path: string; doc: Kubeconfig }[] = [];
  for (const path of paths) {
    let raw: unknown;
    try {
      raw = await parseYaml(await readText(path, 'kubeconfig'));
    } catch (e) {
      if (e instanceof KubeConfigError) throw e;
      throw new KubeConfigError(`kubeconfig ${path} is not YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    const r = kubeconfigSchema.safeParse(raw ?? {});
    if (!r.success)
      throw new KubeConfigError(
        `kubeconfig ${path}: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`,
      );
    docs.push({ path, doc: r.data });
  }
  const cfg = merge(docs.map((d) => d.doc));
  const shown = paths.join(delimiter);
  const contextName = cfg['current-context'];
  if (!contextName) throw new KubeConfigError(`kubeconfig ${shown} has no current-context`);
  const context = cfg.contexts?.find((c) => c.name === contextName)?.context;
  if (!context)
    throw new KubeConfigError(`kubeconfig ${shown}: current-context "${contextName}" is not among its contexts`);
  const cluster = cfg.clusters?.find((c) => c.name === context.cluster)?.cluster;
  if (!cluster)
    throw new KubeConfigError(
      `kubeconfig ${shown}: context "${contextName}" names cluster "${context.cluster}", which is not defined`,
    );
  const user = context.user ? cfg.users?.find((u) => u.name === context.user)?.user : undefined;
  if (context.user && user === undefined)
    throw new KubeConfigError(
      `kubeconfig ${shown}: context "${contextName}" names user "${context.user}", which is not defined`,
    );
  if (user?.exec || user?.['auth-provider'] || user?.username)
    throw new KubeConfigError(
      `kubeconfig ${shown}: user "${context.user}" uses ${user.exec ? 'an exec plugin' : user['auth-provider'] ? 'an auth-provider' : 'basic auth'}, which this driver does not support; give it a token, tokenFile or client certificate`,
    );

  // Relative file references are relative to the kubeconfig that holds them (kubectl's rule); with
  // several files we cannot tell which one that was, so take the first file's directory.
  const base = dirname(resolve(paths[0]!));
  const file = (p: string) => (isAbsolute(p) ? p : resolve(base, p));
  const pem = async (data: string | null | undefined, path: string | null | undefined, what: string) =>
    data ? decode(data) : path ? readText(file(path), what) : undefined;

  const clientCert = await pem(user?.['client-certificate-data'], user?.['client-certificate'], 'client certificate');
  const clientKey = await pem(user?.['client-key-data'], user?.['client-key'], 'client key');
  if (!!clientCert !== !!clientKey)
    throw new KubeConfigError(
      `kubeconfig ${shown}: user "${context.user}" has a client ${clientCert ? 'certificate without a key' : 'key without a certificate'}`,
    );
  return {
    server: trimTrailingSlashes(cluster.server),
    ca: await pem(cluster['certificate-authority-data'], cluster['certificate-authority'], 'certificate authority'),
    insecureSkipTlsVerify: cluster['insecure-skip-tls-verify'] ?? false,
    tlsServerName: cluster['tls-server-name'] ?? undefined,
    token: user?.token ?? undefined,
    tokenFile: user?.tokenFile ? file(user.tokenFile) : undefined,
    clientCert,
    clientKey,
    source: `kubeconfig ${shown} (context ${contextName})`,
  };
}
