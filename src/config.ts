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
import { CLIENT_ID, POOL_NAME } from './ceph/names.js';
import { type Cloud, type Connection, connectionOf, normalizeAuthUrl } from './openstack/secret-credential.js';

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
  endpoint: {
    flag: 'endpoint',
    env: 'CSI_ENDPOINT',
    type: 'string',
    help: 'unix:///csi/csi.sock (default) or tcp://host:port',
  },
  nodeId: { flag: 'node-id', env: 'NODE_ID', type: 'string', help: 'this node: the Kubernetes node name (node mode)' },
  kubeletRoot: {
    flag: 'kubelet-root',
    env: 'KUBELET_ROOT',
    type: 'string',
    help: 'kubelet root dir; node paths must lie under it (default /var/lib/kubelet)',
  },
  config: { flag: 'config', env: 'CSI_CONFIG', type: 'string', help: 'cloud.conf (INI, [Global]) or clouds.yaml' },
  cloud: {
    flag: 'cloud',
    alias: 'cloud-name',
    env: 'OS_CLOUD',
    type: 'string',
    help: 'the default cloud: a clouds.yaml entry or a cloud.conf [Global "name"] section (--cloud-name)',
  },
  allowedAuthUrls: {
    flag: 'allowed-auth-urls',
    env: 'ALLOWED_AUTH_URLS',
    type: 'string',
    help: "comma-separated Keystone URLs a tenant Secret's auth-url may name (default: the configured clouds')",
  },
  allowTenantTlsInsecure: {
    flag: 'allow-tenant-tls-insecure',
    env: 'ALLOW_TENANT_TLS_INSECURE',
    type: 'boolean',
    help: 'let a tenant Secret set tls-insecure = true',
  },
  metricsAddress: {
    flag: 'metrics-address',
    env: 'METRICS_ADDRESS',
    type: 'string',
    help: 'host:port for /metrics and /healthz (off when unset)',
  },
  rbdMapper: { flag: 'rbd-mapper', env: 'RBD_MAPPER', type: 'string', help: 'auto | krbd | nbd | fuse (default auto)' },
  kataDirectVolumeRoot: {
    flag: 'kata-direct-volume-root',
    env: 'KATA_DIRECT_VOLUME_ROOT',
    type: 'string',
    help: "Kata's direct-assigned volume dir",
  },
  hypervisorRuntimeHandlers: {
    flag: 'hypervisor-runtime-handlers',
    env: 'HYPERVISOR_RUNTIME_HANDLERS',
    type: 'string',
    help: 'comma-separated RuntimeClass handler globs that mean a VM pod (default kata*)',
  },
  allowDefaultCredential: {
    flag: 'allow-default-credential',
    env: 'ALLOW_DEFAULT_CREDENTIAL',
    type: 'boolean',
    help: "let a controller RPC that carries no secrets act with the configured (operator's) credential; off by default: every call needs its tenant's Secret",
  },
  requireTenantCredentials: {
    flag: 'require-tenant-credentials',
    env: 'REQUIRE_TENANT_CREDENTIALS',
    type: 'boolean',
    help: 'deprecated: tenant credentials are required unless --allow-default-credential',
  },
  maxVolumesPerNode: {
    flag: 'max-volumes-per-node',
    env: 'MAX_VOLUMES_PER_NODE',
    type: 'string',
    help: 'NodeGetInfo max_volumes_per_node (default 128)',
  },
  zone: {
    flag: 'zone',
    env: 'NODE_ZONE',
    type: 'string',
    help: 'availability zone of this node, for topology (default nova)',
  },
  clusterId: {
    flag: 'cluster-id',
    env: 'CLUSTER_ID',
    type: 'string',
    help: 'tag on every volume; ListVolumes shows only this cluster (default kubernetes)',
  },
  cephKeyring: {
    flag: 'ceph-keyring',
    env: 'CEPH_KEYRING',
    type: 'string',
    help: 'keyring file for mapping RBD images when the node-stage secret has no key',
  },
  cephConf: {
    flag: 'ceph-conf',
    env: 'CEPH_CONF',
    type: 'string',
    help: 'optional ceph.conf for the node (monitors come from Cinder)',
  },
  controllerCephConf: {
    flag: 'controller-ceph-conf',
    env: 'CONTROLLER_CEPH_CONF',
    type: 'string',
    help: "ceph.conf of the controller's own read-only Ceph identity; set, the SnapshotMetadata service (changed block tracking) is served",
  },
  controllerCephId: {
    flag: 'controller-ceph-id',
    env: 'CONTROLLER_CEPH_ID',
    type: 'string',
    help: "the controller's Ceph client id, without client. (default stackube-controller)",
  },
  controllerCephKeyring: {
    flag: 'controller-ceph-keyring',
    env: 'CONTROLLER_CEPH_KEYRING',
    type: 'string',
    help: "keyring of the controller's Ceph identity, where its ceph.conf does not name one",
  },
  fencingCephId: {
    flag: 'fencing-ceph-id',
    env: 'FENCING_CEPH_ID',
    type: 'string',
    help: 'Ceph client id (without client.) that may blocklist and break image locks; set, volumes of a lost node are fenced before they are released (docs/failover.md)',
  },
  fencingCephKeyring: {
    flag: 'fencing-ceph-keyring',
    env: 'FENCING_CEPH_KEYRING',
    type: 'string',
    help: 'keyring of the fencing identity, where --controller-ceph-conf does not name one',
  },
  fenceExpirySeconds: {
    flag: 'fence-expiry-seconds',
    env: 'FENCE_EXPIRY_SECONDS',
    type: 'string',
    help: 'how long a blocklist entry of a fenced node lasts unless lifted first (default 604800, a week)',
  },
  rbdPools: {
    flag: 'rbd-pools',
    env: 'RBD_POOLS',
    type: 'string',
    help: "comma-separated pools Cinder's RBD backends keep volumes in (default volumes)",
  },
  stateDir: {
    flag: 'state-dir',
    env: 'CSI_STATE_DIR',
    type: 'string',
    help: 'where the node keeps stage records and rbd-fuse mounts (default /var/lib/stackube-csi)',
  },
  mapperHost: {
    flag: 'mapper-host',
    env: 'MAPPER_HOST_SOCKET',
    type: 'string',
    help: "socket of the node pod's mapper host: rbd-fuse/rbd-nbd daemons live there, surviving plugin restarts",
  },
  mapperMemoryLimit: {
    flag: 'mapper-memory-limit',
    env: 'MAPPER_MEMORY_LIMIT',
    type: 'string',
    help: "memory limit (MiB) of where the mapper daemons run; default: this process's cgroup limit",
  },
  logLevel: {
    flag: 'log-level',
    env: 'LOG_LEVEL',
    type: 'string',
    help: 'trace | debug | info | warn | error (default info)',
  },
} as const satisfies Record<string, OptionSpec>;
export type OptionName = keyof typeof SERVE_OPTIONS;
export type RawOptions = Partial<Record<OptionName, string | boolean>>;

const absPath = (what: string) => z.string().refine(isAbsolute, `${what} must be an absolute path`);
/** A comma-separated list of at least one `item`, blanks and spaces around the commas dropped. */
const commaList = (item: z.ZodType<string, string>, what: string) =>
  z
    .string()
    .transform((s) =>
      s
        .split(',')
        .map((x) => x.trim())
        .filter(Boolean),
    )
    .pipe(z.array(item).min(1, `needs at least one ${what}`));
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
    metricsAddress: z
      .string()
      .regex(/^[^\s:]*:\d{1,5}$/, 'must be host:port, e.g. 0.0.0.0:9808')
      .optional(),
    rbdMapper: z.enum(['auto', 'krbd', 'nbd', 'fuse'], { message: 'must be auto, krbd, nbd or fuse' }).default('auto'),
    kataDirectVolumeRoot: absPath('kata direct volume root').default('/run/kata-containers/shared/direct-volumes'),
    hypervisorRuntimeHandlers: commaList(
      z.string().regex(/^[A-Za-z0-9*._-]+$/, 'handler globs may hold letters, digits, . _ - and *'),
      'handler',
    ).default(['kata*']),
    allowDefaultCredential: boolish.default(false),
    requireTenantCredentials: boolish.optional(),
    allowedAuthUrls: commaList(
      z.string().refine((u) => normalizeAuthUrl(u) !== undefined, 'each must be an http(s) URL of Keystone'),
      'URL',
    ).optional(),
    allowTenantTlsInsecure: boolish.default(false),
    maxVolumesPerNode: z.coerce
      .number({ message: 'must be a whole number' })
      .int('must be a whole number')
      .min(0)
      .max(4096)
      .default(128),
    zone: z.string().trim().min(1).max(63).default('nova'),
    clusterId: z
      .string()
      .trim()
      .regex(/^[A-Za-z0-9._-]{1,63}$/, 'must be 1-63 letters, digits, . _ -')
      .default('kubernetes'),
    cephKeyring: absPath('ceph keyring').optional(),
    cephConf: absPath('ceph conf').optional(),
    controllerCephConf: absPath('controller ceph conf').optional(),
    controllerCephId: z
      .string()
      .regex(CLIENT_ID, 'must be a Ceph client id without client., e.g. stackube-controller')
      .default('stackube-controller'),
    controllerCephKeyring: absPath('controller ceph keyring').optional(),
    fencingCephId: z
      .string()
      .regex(CLIENT_ID, 'must be a Ceph client id without client., e.g. stackube-fencing')
      .optional(),
    fencingCephKeyring: absPath('fencing ceph keyring').optional(),
    fenceExpirySeconds: z.coerce
      .number({ message: 'must be a whole number of seconds' })
      .int('must be a whole number of seconds')
      .min(600, 'must be at least 600: a lost node must stay fenced until it is back and clean')
      .max(10 * 365 * 86400)
      .default(7 * 86400),
    rbdPools: commaList(
      z.string().regex(POOL_NAME, 'each must be a Ceph pool name (letters, digits, . _ -)'),
      'pool',
    ).default(['volumes']),
    stateDir: absPath('state dir').default('/var/lib/stackube-csi'),
    mapperHost: absPath('mapper host socket').optional(),
    mapperMemoryLimit: z.coerce
      .number({ message: 'must be a whole number of MiB' })
      .int('must be a whole number of MiB')
      .min(64)
      .optional(),
    logLevel: z.enum(['trace', 'debug', 'info', 'warn', 'error', 'fatal', 'silent']).default('info'),
  })
  .superRefine((c, ctx) => {
    if (c.fencingCephId && !c.controllerCephConf)
      ctx.addIssue({
        code: 'custom',
        path: ['fencingCephId'],
        message: 'needs --controller-ceph-conf (the ceph.conf naming the monitors)',
      });
    if (c.mode !== 'controller' && !c.nodeId)
      ctx.addIssue({
        code: 'custom',
        path: ['nodeId'],
        message: `is required in ${c.mode} mode: the Kubernetes node name`,
      });
    if (c.requireTenantCredentials === false || (c.requireTenantCredentials && c.allowDefaultCredential))
      ctx.addIssue({
        code: 'custom',
        path: ['requireTenantCredentials'],
        message:
          'is deprecated: tenant credentials are required by default; --allow-default-credential (ALLOW_DEFAULT_CREDENTIAL) lets calls without secrets use the configured credential',
      });
  });

export type DriverOptions = z.infer<typeof configSchema>;
export interface Config extends DriverOptions {
  /** The default cloud's operator credential; undefined when none is configured (node-only, or tenant secrets only). */
  credential?: Credential;
  /** Where the default cloud's Keystone is (controller modes): what a tenant Secret naming no auth-url uses. */
  connection?: Connection;
  /** The default cloud's name in the config file ('' for cloud.conf's [Global]). */
  defaultCloudName: string;
  /**
   * The other clouds of the config file by name, each a connection with or without the operator's
   * credential there. A StorageClass parameter `cloud: <name>` puts a volume in one; a Secret never chooses.
   */
  clouds: Map<string, Cloud>;
  /** Where settings came from, for messages. */
  sources: string[];
}

/** Cloud names become part of volume and snapshot ids (`<cloud>:<id>`), so they are kept tame. */
export const CLOUD_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,62}$/;

/** Keys that say who a credential is: a cloud with none of them is only a connection. */
const IDENTITY_KEYS = new Set([
  'username',
  'user-id',
  'password',
  'application-credential-id',
  'application-credential-name',
  'application-credential-secret',
]);

/** The connection of a configured cloud that holds no credential (tenant Secrets only), or the problem with it. */
function connectionOfKeys(keys: CredentialMap): Connection | string {
  const iface = keys.interface?.trim() || 'public';
  if (!keys['auth-url']) return 'auth-url: is required: it is where tenant secrets authenticate';
  if (normalizeAuthUrl(keys['auth-url']) === undefined)
    return 'auth-url: must be an http(s) URL of Keystone, e.g. https://keystone.example:5000/v3';
  if (iface !== 'public' && iface !== 'internal' && iface !== 'admin')
    return 'interface: must be public, internal or admin';
  return {
    authUrl: keys['auth-url'],
    region: keys.region,
    interface: iface,
    caFile: keys['ca-file'],
    tlsInsecure: ['true', '1', 'yes'].includes(keys['tls-insecure']?.trim().toLowerCase() ?? ''),
  };
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
  let connection: Connection | undefined;
  const mode = parsed.success ? parsed.data.mode : undefined;
  const allowDefault = parsed.success ? parsed.data.allowDefaultCredential : false;
  const hasIdentity = Object.keys(credentialBase).some((k) => IDENTITY_KEYS.has(k));
  if (mode !== 'node') {
    if (!Object.keys(credentialBase).length)
      problems.push(
        allowDefault
          ? 'no cloud credential: give --config with a cloud.conf or clouds.yaml, or OS_* variables (--allow-default-credential acts with it)'
          : 'no cloud: give --config with a cloud.conf or clouds.yaml (at least auth-url: where tenant secrets authenticate), or OS_AUTH_URL',
      );
    else if (hasIdentity || allowDefault) {
      try {
        credential = parseCredential(
          credentialBase,
          `cloud credential (from ${sources.join(', ') || 'nowhere: give --config or OS_* variables'})`,
        );
        connection = connectionOf(credential);
      } catch (e) {
        if (e instanceof CredentialError) problems.push(e.message);
        else throw e;
      }
    } else {
      const c = connectionOfKeys(credentialBase);
      if (typeof c === 'string') problems.push(c);
      else connection = c;
    }
  } else if (hasIdentity) {
    // node mode reads no credential, but a broken one in a shared config is still worth saying
    try {
      credential = parseCredential(credentialBase, `cloud credential (from ${sources.join(', ')})`);
    } catch (e) {
      if (e instanceof CredentialError) problems.push(e.message);
      else throw e;
    }
  }

  const clouds = new Map<string, Cloud>();
  for (const [name, keys] of fileClouds) {
    if (!name || name === defaultCloud) continue; // the default is above; [Global] is reached by naming no cloud
    const where = `cloud "${name}" of ${configPath}`;
    if (!CLOUD_NAME.test(name)) {
      problems.push(
        `${where}: a cloud name may hold only letters, digits, . _ - (at most 63): it becomes part of volume ids`,
      );
      continue;
    }
    if (!Object.keys(keys).some((k) => IDENTITY_KEYS.has(k))) {
      const c = connectionOfKeys(keys);
      if (typeof c === 'string') problems.push(`${where}: ${c}`);
      else clouds.set(name, { connection: c });
      continue;
    }
    try {
      const cred = parseCredential(keys, where);
      clouds.set(name, { connection: connectionOf(cred), credential: cred });
    } catch (e) {
      if (e instanceof CredentialError) problems.push(e.message);
      else throw e;
    }
  }

  if (problems.length) throw new ConfigError(problems);
  return { ...parsed.data!, credential, connection, defaultCloudName: defaultCloud, clouds, sources };
}
