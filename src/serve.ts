import { rm } from 'node:fs/promises';
import type { Server as HttpServer } from 'node:http';
import type { Config } from './config.js';
import { identityService } from './csi/identity.js';
import { nodeService } from './csi/node.js';
import { combinedReadiness, controllerReadiness, nodeReadiness, type ReadinessCheck } from './csi/readiness.js';
import { rememberSecret, type Logger } from './log.js';
import type { KubeClient } from './kube/client.js';
import type { NodeCapacity } from './node/host/volume-limit.js';
import type { NodeVolumes } from './node/volumes/node-volumes.js';
import { parseEndpoint } from './server/endpoint.js';
import { OperationLocks, operationKey } from './server/locks.js';
import { Metrics, serveMetrics } from './server/metrics.js';
import { CsiServer, type ServiceImpls } from './server/server.js';

/** Observers for benchmarks and tests: every HTTP request the driver sends to OpenStack. */
export interface DriverHooks {
  onHttpRequest?: (method: string, url: string) => void;
  /** Every rbd command the controller runs (its arguments after the identity's). */
  onCephCommand?: (args: string[]) => void;
  /** Where the node finds the Kubernetes API (KUBECONFIG or the in-cluster variables); default process.env. */
  kubeEnv?: NodeJS.ProcessEnv;
  /** Every host command the node runs, with how long it took (the stage benchmark's breakdown). */
  onNodeCommand?: (cmd: string, args: string[], ms: number) => void;
}

export interface RunningDriver {
  server: CsiServer;
  stop: (graceMs?: number) => Promise<void>;
}

/** Build everything `serve` runs from a validated config, and start serving. */
export async function startDriver(config: Config, log: Logger, hooks: DriverHooks = {}): Promise<RunningDriver> {
  rememberSecret(
    config.credential?.auth.kind === 'password' ? config.credential.auth.password : config.credential?.auth.secret,
  );
  const metrics = new Metrics();
  const locks = new OperationLocks();
  const server = new CsiServer({ log, metrics, locks });

  const checks: ReadinessCheck[] = [];
  const services: ServiceImpls = {};
  const closers: (() => Promise<void>)[] = [];
  const kubeEnv = hooks.kubeEnv ?? process.env;
  let node: { nodeId: string; maxVolumes: () => Promise<number> } | undefined;
  let nodeVolumes: NodeVolumes | undefined;
  if (config.mode !== 'controller') {
    checks.push(nodeReadiness(config));
    const { volumes, capacity } = await startNodeVolumes(config, log, kubeEnv, closers, metrics, hooks.onNodeCommand);
    nodeVolumes = volumes;
    const maxVolumes = async () => (await capacity.current()).limit;
    node = { nodeId: config.nodeId!, maxVolumes };
    services.Node = nodeService({
      nodeId: config.nodeId!,
      zone: config.zone,
      maxVolumesPerNode: maxVolumes,
      kubeletRoots: volumes.kubeletRoots,
      volumes,
    });
  }
  if (config.mode !== 'node') {
    // loaded only where the controller runs: a node plugin never speaks HTTP to OpenStack
    const [
      { Connections },
      { CinderSession },
      { controllerService },
      { groupControllerService },
      { Tenants },
      { secretPolicy },
      { KnownNodes },
    ] = await Promise.all([
      import('./openstack/connections.js'),
      import('./openstack/cinder-session.js'),
      import('./csi/controller.js'),
      import('./csi/group-controller.js'),
      import('./csi/controller/tenants.js'),
      import('./openstack/secret-credential.js'),
      import('./csi/controller/nodes.js'),
    ]);
    for (const c of config.clouds.values())
      if (c.credential)
        rememberSecret(c.credential.auth.kind === 'password' ? c.credential.auth.password : c.credential.auth.secret);
    const connections = new Connections({ onRequest: hooks.onHttpRequest, observe: metrics.openstackCall }, log);
    closers.push(() => connections.close());
    const connection = config.connection!;
    const own = connections.for(config.credential ?? connection);
    const cinder = config.credential ? new CinderSession(own.keystone, own.http, config.credential, log) : undefined;
    checks.push(controllerReadiness(cinder, own.keystone, connection.authUrl));
    const clouds = {
      default: { connection, credential: config.credential },
      defaultName: config.defaultCloudName,
      named: config.clouds,
    };
    const policy = secretPolicy({
      clouds: [clouds.default, ...clouds.named.values()],
      allowedAuthUrls: config.allowedAuthUrls,
      allowTlsInsecure: config.allowTenantTlsInsecure,
    });
    log.info(
      {
        allowedAuthUrls: policy.allowedAuthUrls,
        clouds: [...config.clouds.keys()],
        allowTenantTlsInsecure: policy.allowTlsInsecure,
        allowDefaultCredential: config.allowDefaultCredential,
      },
      config.allowDefaultCredential
        ? "tenant secrets; calls without secrets act with the driver's own credential (--allow-default-credential)"
        : 'tenant secrets; calls without secrets are refused',
    );
    if (config.requireTenantCredentials)
      log.warn(
        '--require-tenant-credentials (REQUIRE_TENANT_CREDENTIALS) is deprecated: tenant credentials are required by default now',
      );
    const tenants = new Tenants({
      connections,
      clouds,
      policy,
      allowDefaultCredential: config.allowDefaultCredential,
      log,
    });
    // which nodes exist: the Kubernetes API's CSINodes in a cluster, the node beside us in --mode all
    const k = await kubeClient(kubeEnv, closers);
    const kube = 'unavailable' in k ? undefined : k;
    log.info(
      { kubernetesApi: kube ? kube.describe : 'none', ownNode: node?.nodeId },
      kube
        ? 'nodes: CSINode registrations'
        : node
          ? 'nodes: only the one served here'
          : 'nodes: not verifiable without the Kubernetes API; any well-formed node id is taken',
    );
    const nodes = new KnownNodes({ kube, own: node, defaultLimit: config.maxVolumesPerNode });
    const fencing = config.fencingCephId ? await nodeFencing(config, kube, log, metrics, hooks) : undefined;
    services.Controller = controllerService({ tenants, nodes, clusterId: config.clusterId, fencing });
    services.GroupController = groupControllerService({ tenants, clusterId: config.clusterId });
    if (config.controllerCephConf) {
      const [{ RbdReader }, { snapshotMetadataService }] = await Promise.all([
        import('./ceph/rbd.js'),
        import('./csi/snapshot-metadata.js'),
      ]);
      const identity = {
        conf: config.controllerCephConf,
        id: config.controllerCephId,
        keyring: config.controllerCephKeyring,
        pools: config.rbdPools,
      };
      services.SnapshotMetadata = snapshotMetadataService({
        tenants,
        rbd: new RbdReader(identity, hooks.onCephCommand),
      });
      log.info(
        { cephId: identity.id, cephConf: identity.conf, pools: identity.pools },
        'changed block tracking: SnapshotMetadata reads RBD snapshots as this Ceph identity',
      );
    }
  }
  services.Identity = identityService({
    mode: config.mode,
    snapshotMetadata: !!services.SnapshotMetadata,
    readiness: combinedReadiness(checks, log),
  });

  await server.start(config.endpoint, services);
  // serving first: RPCs of a fenced volume check for themselves meanwhile, and hundreds of stages need not wait
  const fencedDropped = nodeVolumes
    ?.dropFenced((volumeId, fn) => locks.with([operationKey('Node', volumeId)], 'teardown of a fenced stage', fn))
    .then(
      (fenced) =>
        fenced.length && log.warn({ volumes: fenced }, 'tore down stages fenced while this node was taken for lost'),
      (e: Error) => log.warn({ error: e.message }, 'could not look for fenced stages after start'),
    );
  let metricsServer: HttpServer | undefined;
  if (config.metricsAddress) {
    metricsServer = await serveMetrics(config.metricsAddress, metrics, () => server.serving);
    log.info({ address: config.metricsAddress }, 'metrics at /metrics, health at /healthz');
  }

  return {
    server,
    stop: async (graceMs) => {
      await server.shutdown(graceMs);
      await fencedDropped;
      metricsServer?.close();
      await Promise.all(closers.map((c) => c()));
      const ep = parseEndpoint(config.endpoint);
      if (ep.kind === 'unix') await rm(ep.path, { force: true });
    },
  };
}

/** Fencing of lost nodes, as the operator's fencing identity (--fencing-ceph-id). */
export async function nodeFencing(
  config: Config,
  kube: KubeClient | undefined,
  log: Logger,
  metrics?: Metrics,
  hooks: DriverHooks = {},
) {
  const [{ CephFencer }, { NodeFencing }] = await Promise.all([
    import('./ceph/fencing.js'),
    import('./csi/controller/fencing.js'),
  ]);
  const identity = {
    conf: config.controllerCephConf!,
    id: config.fencingCephId!,
    keyring: config.fencingCephKeyring,
    pools: config.rbdPools,
  };
  log.info(
    { cephId: identity.id, pools: identity.pools, expirySeconds: config.fenceExpirySeconds, kubernetesApi: !!kube },
    'fencing: volumes of a lost node are released only once its Ceph clients are blocklisted',
  );
  return new NodeFencing({
    ceph: new CephFencer(identity, config.fenceExpirySeconds, (tool, args) => hooks.onCephCommand?.([tool, ...args])),
    kube,
    log,
    onFenced: (n) => metrics?.fencedClients.inc(n),
  });
}

/**
 * The Kubernetes API client, when a KUBECONFIG or the in-cluster config names one; else why there is
 * none. A broken KUBECONFIG or service account fails the start.
 */
async function kubeClient(
  env: NodeJS.ProcessEnv,
  closers: (() => Promise<void>)[],
): Promise<KubeClient | { unavailable: string }> {
  const [{ loadKubeConnection }, { KubeClient }] = await Promise.all([
    import('./kube/config.js'),
    import('./kube/client.js'),
  ]);
  const k = await loadKubeConnection(env);
  if (!('connection' in k)) return k;
  const kube = new KubeClient(k.connection);
  closers.push(() => kube.close());
  return kube;
}

/** The mapper host beside the plugin (it may still be starting: up to 30 s), or a start that fails saying so. */
async function connectMapperHost(socket: string, log: Logger) {
  const { MapperHostClient } = await import('./node/mappers/mapper-host.js');
  const client = new MapperHostClient(socket);
  for (let i = 0; ; i++) {
    try {
      await client.ping();
      log.info({ mapperHost: socket }, 'mapper daemons start in the mapper host');
      return client;
    } catch (e) {
      if (i >= 60) throw new Error(`--mapper-host ${socket}: ${(e as Error).message}`);
      await new Promise((r) => setTimeout(r, 500));
    }
  }
}

/**
 * The node's volume domain. Volumes staged before a restart stay staged (their mapper daemons
 * outlived the old plugin); only what no stage record knows is swept, and what the records say is logged.
 */
async function startNodeVolumes(
  config: Config,
  log: Logger,
  env: NodeJS.ProcessEnv,
  closers: (() => Promise<void>)[],
  metrics: Metrics,
  onCommand?: DriverHooks['onNodeCommand'],
): Promise<{ volumes: NodeVolumes; capacity: NodeCapacity }> {
  // loaded only where the node runs, as the OpenStack modules only where the controller does
  const [
    { run: hostRun },
    { createMappers },
    { NodeVolumes },
    { RuntimeDetector },
    { PassthroughPublisher, hostDirectVolumeTools },
    { KubeletRoot },
    { memoryReading, NodeCapacity },
    { FormatIntents },
    { CephClients },
    { CephSession },
    { BlankCheck },
  ] = await Promise.all([
    import('./node/host/command.js'),
    import('./node/mappers/index.js'),
    import('./node/volumes/node-volumes.js'),
    import('./node/kata/runtime.js'),
    import('./node/kata/passthrough.js'),
    import('./node/host/kubelet-paths.js'),
    import('./node/host/volume-limit.js'),
    import('./node/ceph/format-intents.js'),
    import('./node/fencing/ceph-clients.js'),
    import('./node/ceph/session.js'),
    import('./node/ceph/blank-check.js'),
  ]);
  const { describeDirectVolumeTools } = await import('./node/kata/direct-volume.js');
  const run: typeof hostRun = onCommand
    ? async (cmd, args, o) => {
        const started = performance.now();
        try {
          return await hostRun(cmd, args, o);
        } finally {
          onCommand(cmd, args, performance.now() - started);
        }
      }
    : hostRun;
  // the Kubernetes API tells a VM pod from a runc pod (attachMode auto); none at all means auto volumes are mounted on
  // the host
  const kube = await kubeClient(env, closers);
  log.info(
    {
      kubernetesApi: 'unavailable' in kube ? `none: ${kube.unavailable}` : kube.describe,
      hypervisorRuntimeHandlers: config.hypervisorRuntimeHandlers,
    },
    'runtime detection',
  );
  const runtime = new RuntimeDetector({ hypervisorHandlers: config.hypervisorRuntimeHandlers, kube, log });
  const passthrough = new PassthroughPublisher({ root: config.kataDirectVolumeRoot, log, run });
  log.info(
    { kataDirectVolume: describeDirectVolumeTools(await hostDirectVolumeTools()) },
    'passthrough volumes: stats and resize in the VM',
  );
  const mapperHost = config.mapperHost ? await connectMapperHost(config.mapperHost, log) : undefined;
  const mappers = await createMappers(config.rbdMapper, {
    run,
    stateDir: config.stateDir,
    cephConf: config.cephConf,
    mapperHost,
  });
  log.info({ mapper: mappers.active.kind, why: mappers.reason, stateDir: config.stateDir }, 'rbd mapper');
  const paths = await KubeletRoot.open(config.kubeletRoot);
  if (paths.real !== paths.root)
    log.info(
      { kubeletRoot: paths.root, resolved: paths.real },
      'the kubelet root is a symlink: paths are compared in their resolved form',
    );
  const session = new CephSession({
    cephConf: config.cephConf,
    onCall: onCommand && ((op, ms) => onCommand('ceph-session', [op], ms)),
  });
  closers.push(async () => session.end());
  const volumes = new NodeVolumes({
    run,
    mappers,
    stateDir: config.stateDir,
    cephKeyring: config.cephKeyring,
    log,
    runtime,
    passthrough,
    paths,
    intents: new FormatIntents({ session, nodeId: config.nodeId! }),
    blankCheck: new BlankCheck(session),
    clients: new CephClients({ session, nodeId: config.nodeId! }),
    metrics: metrics.node,
  });
  metrics.countMappingsWith(async () => {
    const counts: Record<string, number> = {};
    for (const r of (await volumes.records.list()).records)
      if (r.mapping) counts[r.mapper] = (counts[r.mapper] ?? 0) + 1;
    return counts;
  });
  const swept = await volumes.sweep();
  if (swept.length) log.warn({ removed: swept }, 'removed what a crash left behind that no stage record knows');
  const { records, damaged } = await volumes.records.list();
  if (records.length || damaged.length)
    log.info(
      {
        staged: records.map((r) => ({
          volumeId: r.volumeId,
          phase: r.phase,
          device: r.mapping?.device,
          targets: Object.keys(r.targets).length,
        })),
        damaged,
      },
      'volumes staged before this start',
    );
  const capacity = new NodeCapacity({
    mapper: mappers.active.kind,
    memory: mapperHost ? () => mapperHost.memory() : () => memoryReading(),
    limitMiB: config.mapperMemoryLimit,
    // a stage under way counts too: its mapping is about to take its memory
    mapped: () => volumes.records.count(),
    cap: config.maxVolumesPerNode,
  });
  const { limit, why } = await capacity.current();
  log.info(
    { maxVolumesPerNode: limit, why },
    'volume limit of this node now (NodeGetInfo measures it again at every call)',
  );
  return { volumes, capacity };
}
