import { isAbsolute } from 'node:path';
import { z } from 'zod';
import { credentialFromEnv, readCloudFile } from './cloud-files.js';
import {
  CredentialError,
  type Credential,
  type CredentialMap,
  mergeCredentialMaps,
  parseCredential,
} from './openstack/credentials.js';
import { type Connection, connectionOf, normalizeAuthUrl } from './openstack/secret-credential.js';

/** One option of `serve`: its flag, its environment twin and how to read it. */
interface OptionSpec {
  flag: string;
  /** Another spelling of the flag (a peer's name for it, so their deployments carry over). */
  alias?: string;
  env?: string;
  type: 'string' | 'boolean';
  help: string;
}

/** Every option `serve` reads. Flags win over their environment twins. */
export const SERVE_OPTIONS = {
  mode: { flag: 'mode', env: 'CSI_MODE', type: 'string', help: 'controller | node | all (default all)' },
  endpoint: { flag: 'endpoint', env: 'CSI_ENDPOINT', type: 'string', help: 'unix:///csi/csi.sock (default) or tcp://host:port' },
  nodeId: { flag: 'node-id', env: 'NODE_ID', type: 'string', help: 'this node: the Kubernetes node name (node mode)' },
  kubeletRoot: { flag: 'kubelet-root', env: 'KUBELET_ROOT', type: 'string', help: 'kubelet root dir; node paths must lie under it (default /var/lib/kubelet)' },
  config: { flag: 'config', env: 'CSI_CONFIG', type: 'string', help: 'cloud.conf (INI, [Global]) or clouds.yaml' },
  cloud: { flag: 'cloud', alias: 'cloud-name', env: 'OS_CLOUD', type: 'string', help: 'the default cloud: a clouds.yaml entry or a cloud.conf [Global "name"] section (--cloud-name)' },
  allowedAuthUrls: { flag: 'allowed-auth-urls', env: 'ALLOWED_AUTH_URLS', type: 'string', help: "comma-separated Keystone URLs a tenant Secret's auth-url may name (default: the configured clouds')" },
  allowTenantTlsInsecure: { flag: 'allow-tenant-tls-insecure', env: 'ALLOW_TENANT_TLS_INSECURE', type: 'boolean', help: 'let a tenant Secret set tls-insecure = true' },
  metricsAddress: { flag: 'metrics-address', env: 'METRICS_ADDRESS', type: 'string', help: 'host:port for /metrics and /healthz (off when unset)' },
  rbdMapper: { flag: 'rbd-mapper', env: 'RBD_MAPPER', type: 'string', help: 'auto | krbd | nbd | fuse (default auto)' },
  kataDirectVolumeRoot: { flag: 'kata-direct-volume-root', env: 'KATA_DIRECT_VOLUME_ROOT', type: 'string', help: "Kata's direct-assigned volume dir" },
  hypervisorRuntimeHandlers: { flag: 'hypervisor-runtime-handlers', env: 'HYPERVISOR_RUNTIME_HANDLERS', type: 'string', help: 'comma-separated RuntimeClass handler globs that mean a VM pod (default kata*)' },
  requireTenantCredentials: { flag: 'require-tenant-credentials', env: 'REQUIRE_TENANT_CREDENTIALS', type: 'boolean', help: 'refuse controller RPCs without a per-request secret' },
  maxVolumesPerNode: { flag: 'max-volumes-per-node', env: 'MAX_VOLUMES_PER_NODE', type: 'string', help: 'NodeGetInfo max_volumes_per_node (default 128)' },
  zone: { flag: 'zone', env: 'NODE_ZONE', type: 'string', help: 'availability zone of this node, for topology (default nova)' },
  clusterId: { flag: 'cluster-id', env: 'CLUSTER_ID', type: 'string', help: 'tag on every volume; ListVolumes shows only this cluster (default kubernetes)' },
  cephKeyring: { flag: 'ceph-keyring', env: 'CEPH_KEYRING', type: 'string', help: 'keyring file for mapping RBD images when the node-stage secret has no key' },
  cephConf: { flag: 'ceph-conf', env: 'CEPH_CONF', type: 'string', help: 'optional ceph.conf for the node (monitors come from Cinder)' },
  stateDir: { flag: 'state-dir', env: 'CSI_STATE_DIR', type: 'string', help: 'where the node keeps stage records and rbd-fuse mounts (default /var/lib/stackube-csi)' },
  mapperHost: { flag: 'mapper-host', env: 'MAPPER_HOST_SOCKET', type: 'string', help: "socket of the node pod's mapper host: rbd-fuse/rbd-nbd daemons live there, surviving plugin restarts" },
  mapperMemoryLimit: { flag: 'mapper-memory-limit', env: 'MAPPER_MEMORY_LIMIT', type: 'string', help: "memory limit (MiB) of where the mapper daemons run; default: this process's cgroup limit" },
  logLevel: { flag: 'log-level', env: 'LOG_LEVEL', type: 'string', help: 'trace | debug | info | warn | error (default info)' },
} as const satisfies Record<string, OptionSpec>;
export type OptionName = keyof typeof SERVE_OPTIONS;
export type RawOptions = Partial<Record<OptionName, string | boolean>>;

const absPath = (what: string) => z.string().refine(isAbsolute, `${what} must be an absolute path`);
const boolish = z.union([
  z.boolean(),
  z.enum(['true', 'false', '1', '0', 'yes', 'no', '']).transform((v) => ['true', '1', 'yes'].includes(v)),
]);

export const configSchema = z
  .object({
    mode: z.enum(['controller', 'node', 'all'], { message: 'must be controller, node or all' }).default('all'),
    endpoint: z
      .string()
      .regex(/^(unix:\/\/\/.+|tcp:\/\/[^/]+:\d+)$/, 'must be unix:///absolute/path.sock or tcp://host:port')
      .default('unix:///csi/csi.sock'),
    nodeId: z.string().trim().min(1).max(128).optional(),
    kubeletRoot: absPath('kubelet root').default('/var/lib/kubelet'),
    metricsAddress: z.string().regex(/^[^\s:]*:\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:9808').optional(),
    rbdMapper: z.enum(['auto', 'krbd', 'nbd', 'fuse'], { message: 'must be auto, krbd, nbd or fuse' }).default('auto'),
    kataDirectVolumeRoot: absPath('kata direct volume root').default('/run/kata-containers/shared/direct-volumes'),
    hypervisorRuntimeHandlers: z
      .string()
      .transform((s) => s.split(',').map((h) => h.trim()).filter(Boolean))
      .pipe(z.array(z.string().regex(/^[A-Za-z0-9*._-]+$/, 'handler globs may hold letters, digits, . _ - and *')).min(1, 'needs at least one handler'))
      .default(['kata*']),
    requireTenantCredentials: boolish.default(false),
    allowedAuthUrls: z
      .string()
      .transform((s) => s.split(',').map((u) => u.trim()).filter(Boolean))
      .pipe(z.array(z.string().refine((u) => normalizeAuthUrl(u) !== undefined, 'each must be an http(s) URL of Keystone')).min(1, 'needs at least one URL'))
      .optional(),
    allowTenantTlsInsecure: boolish.default(false),
    maxVolumesPerNode: z.coerce.number({ message: 'must be a whole number' }).int('must be a whole number').min(0).max(4096).default(128),
    zone: z.string().trim().min(1).max(63).default('nova'),
    clusterId: z.string().trim().regex(/^[A-Za-z0-9._-]{1,63}$/, 'must be 1-63 letters, digits, . _ -').default('kubernetes'),
    cephKeyring: absPath('ceph keyring').optional(),
    cephConf: absPath('ceph conf').optional(),
    stateDir: absPath('state dir').default('/var/lib/stackube-csi'),
    mapperHost: absPath('mapper host socket').optional(),
    mapperMemoryLimit: z.coerce.number({ message: 'must be a whole number of MiB' }).int('must be a whole number of MiB').min(64).optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  })
  .superRefine((c, ctx) => {
    if (c.mode !== 'controller' && !c.nodeId)
      ctx.addIssue({ code: 'custom', path: ['nodeId'], message: `is required in ${c.mode} mode: the Kubernetes node name` });
  });

export type DriverOptions = z.infer<typeof configSchema>;
export interface Config extends DriverOptions {
  /** The default tenant's credential; undefined when none is configured (node-only, or tenant secrets only). */
  credential?: Credential;
  /** Where the default cloud's Keystone is (controller modes): what a tenant Secret may inherit. */
  connection?: Connection;
  /** The named clouds of the config file, each a whole credential: a tenant Secret `cloud: <name>` selects one. */
  clouds: Map<string, Credential>;
  /** Where settings came from, for messages. */
  sources: string[];
}

export class ConfigError extends Error {
  constructor(readonly problems: string[]) {
    super(`invalid configuration:\n${problems.map((p) => `  ${p}`).join('\n')}`);
    this.name = 'ConfigError';
  }
}

function describeOption(name: OptionName): string {
  const o: OptionSpec = SERVE_OPTIONS[name];
  return o.env ? `--${o.flag} (${o.env})` : `--${o.flag}`;
}

/** Environment twins of the options; an empty variable counts as unset. */
export function optionsFromEnv(env: NodeJS.ProcessEnv): RawOptions {
  const out: RawOptions = {};
  for (const [name, spec] of Object.entries(SERVE_OPTIONS) as [OptionName, OptionSpec][]) {
    const v = spec.env ? env[spec.env] : undefined;
    if (v !== undefined && v !== '') out[name] = v;
  }
  return out;
}

/**
 * Build the configuration. Sources, later wins: the config file (cloud.conf or clouds.yaml),
 * the environment (OS_* credentials and the options' twins), then flags.
 */
export async function loadConfig(flags: RawOptions, env: NodeJS.ProcessEnv = process.env): Promise<Config> {
  const raw: RawOptions = { ...optionsFromEnv(env), ...flags };
  const problems: string[] = [];
  const sources: string[] = [];

  let fileClouds = new Map<string, CredentialMap>();
  let defaultCloud = '';
  const configPath = typeof raw.config === 'string' ? raw.config : undefined;
  if (configPath) {
    try {
      const file = await readCloudFile(configPath, typeof raw.cloud === 'string' ? raw.cloud : undefined);
      fileClouds = file.clouds;
      defaultCloud = file.defaultCloud;
      // cloud-provider-openstack's [BlockStorage] node-volume-attach-limit, when no flag/env says otherwise
      const limit = file.blockStorage['node-volume-attach-limit'];
      if (limit !== undefined && raw.maxVolumesPerNode === undefined) raw.maxVolumesPerNode = limit;
      sources.push(configPath);
    } catch (e) {
      problems.push(`--config (CSI_CONFIG): ${(e as Error).message}`);
    }
  }
  const envCredential = credentialFromEnv(env);
  if (Object.keys(envCredential).length) sources.push('environment (OS_*)');
  // the operator's own sources for the default cloud: the file's, then OS_* on top
  const credentialBase = mergeCredentialMaps(fileClouds.get(defaultCloud), envCredential);

  const parsed = configSchema.safeParse(raw);
  if (!parsed.success)
    for (const issue of parsed.error.issues) {
      const name = issue.path[0] as OptionName;
      const given = raw[name];
      const shown = typeof given === 'string' ? ` (got "${given.slice(0, 60)}")` : '';
      problems.push(`${describeOption(name)}: ${issue.message}${shown}`);
    }

  let credential: Credential | undefined;
  const hasAnyCredential = Object.keys(credentialBase).some((k) => k !== 'auth-url' && k !== 'region');
  const mode = parsed.success ? parsed.data.mode : undefined;
  const requireTenant = parsed.success ? parsed.data.requireTenantCredentials : false;
  const needsCredential = mode !== 'node' && !requireTenant;
  if (!Object.keys(credentialBase).length && needsCredential) {
    problems.push(
      'no cloud credential: give --config with a cloud.conf or clouds.yaml, or OS_* variables (or --require-tenant-credentials to use only per-request secrets)',
    );
  } else if (hasAnyCredential || needsCredential) {
    try {
      credential = parseCredential(credentialBase, `cloud credential (from ${sources.join(', ') || 'nowhere: give --config or OS_* variables'})`);
    } catch (e) {
      if (e instanceof CredentialError) problems.push(e.message);
      else throw e;
    }
  } else if (mode !== 'node' && !credentialBase['auth-url']) {
    problems.push('auth-url: is required (in --config or OS_AUTH_URL) even with --require-tenant-credentials: it is where tenant secrets authenticate');
  }

  const clouds = new Map<string, Credential>();
  for (const [name, keys] of fileClouds) {
    if (!name) continue; // [Global]: the default, chosen by sending no credential
    if (name === defaultCloud) {
      if (credential) clouds.set(name, credential);
      continue;
    }
    try {
      clouds.set(name, parseCredential(keys, `cloud "${name}" of ${configPath}`));
    } catch (e) {
      if (e instanceof CredentialError) problems.push(e.message);
      else throw e;
    }
  }
  let connection: Connection | undefined;
  if (credential) connection = connectionOf(credential);
  else if (mode !== 'node' && credentialBase['auth-url']) {
    // tenant Secrets only: the configured keys are a connection, with no credential to check them with
    const iface = credentialBase.interface?.trim() || 'public';
    if (normalizeAuthUrl(credentialBase['auth-url']) === undefined) problems.push('auth-url: must be an http(s) URL of Keystone, e.g. https://keystone.example:5000/v3');
    else if (iface !== 'public' && iface !== 'internal' && iface !== 'admin') problems.push('interface: must be public, internal or admin');
    else
      connection = {
        authUrl: credentialBase['auth-url'],
        region: credentialBase.region,
        interface: iface,
        caFile: credentialBase['ca-file'],
        tlsInsecure: ['true', '1', 'yes'].includes(credentialBase['tls-insecure']?.trim().toLowerCase() ?? ''),
      };
  }

  if (problems.length) throw new ConfigError(problems);
  return { ...parsed.data!, credential, connection, clouds, sources };
}
