import { execFileSync } from 'node:child_process';
import { chownSync, copyFileSync, existsSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { VERSION } from '../../src/package-info.js';
import { CEPH_CONF, CLOUD_CONF, LOCAL } from '../../harness/local-stack.js';
import { loadManifests, type Manifest } from './manifests.js';

/**
 * The driver's image run with podman the way deploy/kubernetes runs it: every setting that matters to
 * the node plugin (privileged, host network, memory limit, each volume mount with its propagation, the
 * environment) is read from node.yaml and controller.yaml, and only host paths are moved under a test's
 * own directory (the same path inside and outside, as the manifests mount kubelet's and the state dir).
 * A manifest setting this harness cannot carry over fails it: the test proves the manifests too.
 */
export const IMAGE = process.env.STACKUBE_IMAGE ?? `localhost/stackube-csi:${VERSION}`;
const PODMAN = ['--runtime', 'runc', '--cgroup-manager=cgroupfs'];

export const podman = (...args: string[]) => execa('podman', [...PODMAN, ...args], { reject: false, all: true });

/** Raising a limit above the host's is refused here, so containers get the host's own file limit. */
export function ulimits(): string[] {
  const soft = execFileSync('sh', ['-c', 'ulimit -n']).toString().trim();
  const hard = execFileSync('sh', ['-c', 'ulimit -Hn']).toString().trim();
  return ['--ulimit', `nofile=${soft}:${hard}`, '--ulimit', 'nproc=1000:1000'];
}

interface Container {
  name: string;
  env?: { name: string; value?: string; valueFrom?: unknown }[];
  args?: string[];
  securityContext?: Record<string, unknown>;
  resources?: { limits?: { memory?: string } };
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
}

function podSpec(file: string, kind: string): { spec: Record<string, any>; driver: Container } {
  const doc = loadManifests([`deploy/kubernetes/${file}`])
    .map((m) => m.doc)
    .find((d: Manifest) => d.kind === kind)!;
  const spec = doc.spec.template.spec;
  return { spec, driver: spec.containers.find((c: Container) => c.name === 'stackube-csi') };
}

/** Kubernetes quantities podman understands: 2Gi → 2g, 512Mi → 512m. */
const memory = (q: string) => q.replace(/Gi$/, 'g').replace(/Mi$/, 'm');

/** Make a host directory a shared mount point, as Bidirectional propagation needs (kubelet's dir is one). */
export function shareMount(dir: string): void {
  mkdirSync(dir, { recursive: true });
  execFileSync('mount', ['--bind', dir, dir]);
  execFileSync('mount', ['--make-rshared', dir]);
}

export interface NodeContainerDirs {
  kubeletRoot: string;
  stateDir: string;
  kataRoot: string;
  /** The pod's emptyDir volumes live here, one directory each. */
  podDir: string;
}

/**
 * `podman run` arguments for each container of the node pod that runs this image (the plugin and its
 * mapper host), from node.yaml with host paths under the test's dirs. The pod's one PID namespace
 * (shareProcessNamespace) is the mapper container's, which the plugin container joins; a restart of the
 * plugin's container leaves the mapper's alone, as in the pod.
 */
export function nodePodRunArgs(
  prefix: string,
  nodeId: string,
  d: NodeContainerDirs,
  metricsPort: number,
): { name: string; args: string[] }[] {
  const { spec } = podSpec('node.yaml', 'DaemonSet');
  if (!spec.hostNetwork) throw new Error('node.yaml: the node plugin is expected on the host network');
  if (spec.shareProcessNamespace !== true)
    throw new Error('node.yaml: the node pod is expected to share one PID namespace');
  const ours = (spec.containers as (Container & { image: string })[]).filter((c) => c.image === 'stackube-csi');
  // the mapper host first: the plugin joins its PID namespace and waits for its socket
  ours.sort((a, b) => (a.name === 'mapper' ? -1 : b.name === 'mapper' ? 1 : 0));
  const first = `${prefix}-${ours[0]!.name}`;
  return ours.map((c, i) => ({
    name: `${prefix}-${c.name}`,
    args: containerArgs(spec, c, `${prefix}-${c.name}`, nodeId, d, metricsPort, i ? first : undefined),
  }));
}

function containerArgs(
  spec: Record<string, any>,
  c: Container,
  name: string,
  nodeId: string,
  d: NodeContainerDirs,
  metricsPort: number,
  pidOf?: string,
): string[] {
  if (c.securityContext?.privileged !== true) throw new Error(`node.yaml: ${c.name} is expected privileged`);
  // host paths of the manifest → the test's (kubelet's and the state dir are mounted at the same path inside)
  const move: Record<string, string> = {
    '/var/lib/kubelet': d.kubeletRoot,
    '/var/lib/stackube-csi': d.stateDir,
    '/run/kata-containers/shared/direct-volumes': d.kataRoot,
  };
  const relocate = (p: string) => {
    const prefix = Object.keys(move).find((k) => p === k || p.startsWith(`${k}/`));
    return prefix ? move[prefix] + p.slice(prefix.length) : p;
  };
  const args = [
    'run',
    '-d',
    '--name',
    name,
    '--privileged',
    '--network',
    'host',
    ...ulimits(),
    ...(pidOf ? ['--pid', `container:${pidOf}`] : []),
  ];
  if (c.securityContext?.runAsUser !== undefined) args.push('--user', String(c.securityContext.runAsUser));
  const limit = c.resources?.limits?.memory;
  if (limit) args.push('--memory', memory(limit));
  for (const m of c.volumeMounts ?? []) {
    const vol = spec.volumes.find((v: { name: string }) => v.name === m.name);
    let source: string;
    if (vol?.hostPath) source = relocate(vol.hostPath.path);
    else if (vol?.emptyDir) source = join(d.podDir, vol.name);
    else if (vol?.secret?.secretName === 'stackube-csi-ceph-keyring') source = join(LOCAL, 'ceph');
    else
      throw new Error(
        `node.yaml: volume ${m.name} is neither a hostPath, an emptyDir nor the Ceph keyring Secret; the harness cannot carry it over`,
      );
    if (vol.hostPath?.type === 'DirectoryOrCreate' || vol.emptyDir) mkdirSync(source, { recursive: true });
    // a read-only host directory this machine lacks (/lib/modules: no kernel modules here) cannot be given
    if (vol.hostPath?.type === 'Directory' && m.readOnly && !existsSync(source)) continue;
    const opts = [m.readOnly ? 'ro' : 'rw', ...(m.mountPropagation === 'Bidirectional' ? ['rshared'] : [])];
    if (m.mountPropagation === 'Bidirectional' && relocate(m.mountPath) !== source)
      throw new Error(`node.yaml: ${m.name} propagates mounts but is mounted at ${m.mountPath}, not at its host path`);
    args.push('-v', `${source}:${relocate(m.mountPath)}:${opts.join(',')}`);
  }
  for (const e of c.env ?? []) {
    const ref = (e.valueFrom as { resourceFieldRef?: { containerName?: string; resource: string } } | undefined)
      ?.resourceFieldRef;
    if (e.name === 'NODE_ID') args.push('-e', `NODE_ID=${nodeId}`);
    else if (e.name === 'METRICS_ADDRESS') args.push('-e', `METRICS_ADDRESS=127.0.0.1:${metricsPort}`);
    else if (e.value !== undefined) args.push('-e', `${e.name}=${relocate(e.value)}`);
    else if (ref?.resource === 'limits.memory') {
      const other = spec.containers.find((x: Container) => x.name === ref.containerName) as Container;
      args.push('-e', `${e.name}=${mebibytes(other.resources!.limits!.memory!)}`);
    } else
      throw new Error(
        `node.yaml: env ${e.name} comes from ${JSON.stringify(e.valueFrom)}, which the harness cannot fill`,
      );
  }
  // deploy/local's Ceph conf (monitors also come from publish_context), for the fuse mapper here
  args.push('-v', `${CEPH_CONF}:${CEPH_CONF}:ro`, '-e', `CEPH_CONF=${CEPH_CONF}`);
  return [...args, IMAGE, ...(c.args ?? [])];
}

/** 2Gi → 2048, 512Mi → 512 (what a resourceFieldRef with divisor 1Mi gives). */
const mebibytes = (q: string) => (q.endsWith('Gi') ? Number(q.slice(0, -2)) * 1024 : Number(q.replace(/Mi$/, '')));

/**
 * `podman run` arguments for the controller, from controller.yaml: its user, read-only root, dropped
 * capabilities, memory limit, environment and mounts. Host network instead of the pod network: the
 * local Keystone and Cinder listen on the host's loopback.
 */
export function controllerRunArgs(name: string, dir: string, metricsPort: number): string[] {
  const { spec, driver } = podSpec('controller.yaml', 'Deployment');
  const user = `${spec.securityContext.runAsUser}:${spec.securityContext.runAsGroup}`;
  const socketDir = join(dir, 'controller-csi');
  const configDir = join(dir, 'controller-config');
  for (const d of [socketDir, configDir]) {
    mkdirSync(d, { recursive: true });
    chownSync(d, spec.securityContext.runAsUser, spec.securityContext.runAsGroup);
  }
  // the cloud-config Secret, as kubelet projects it for fsGroup: readable by the pod's group
  copyFileSync(CLOUD_CONF, join(configDir, 'cloud.conf'));
  chownSync(join(configDir, 'cloud.conf'), 0, spec.securityContext.fsGroup);
  execFileSync('chmod', ['0640', join(configDir, 'cloud.conf')]);
  const args = ['run', '-d', '--name', name, '--network', 'host', '--user', user, ...ulimits()];
  if (driver.securityContext?.readOnlyRootFilesystem) args.push('--read-only');
  for (const c of (driver.securityContext?.capabilities as { drop?: string[] })?.drop ?? []) args.push('--cap-drop', c);
  if (driver.securityContext?.allowPrivilegeEscalation === false) args.push('--security-opt', 'no-new-privileges');
  const limit = driver.resources?.limits?.memory;
  if (limit) args.push('--memory', memory(limit));
  const sources: Record<string, string> = { 'socket-dir': socketDir, 'cloud-config': configDir };
  for (const m of driver.volumeMounts ?? []) {
    if (!sources[m.name]) throw new Error(`controller.yaml: volume ${m.name} is unknown to the harness`);
    args.push('-v', `${sources[m.name]}:${m.mountPath}:${m.readOnly ? 'ro' : 'rw'}`);
  }
  for (const e of driver.env ?? []) {
    if (e.name === 'METRICS_ADDRESS') args.push('-e', `METRICS_ADDRESS=127.0.0.1:${metricsPort}`);
    else if (e.value !== undefined) args.push('-e', `${e.name}=${e.value}`);
  }
  return [...args, IMAGE, ...(driver.args ?? [])];
}

/** Whether the image exists locally (npm run setup builds it). */
export async function imageBuilt(): Promise<boolean> {
  return existsSync('/usr/bin/podman') && (await podman('image', 'exists', IMAGE)).exitCode === 0;
}

/** The container's memory in use, as its cgroup counts it (rbd-fuse daemons included). */
export async function containerMemoryBytes(name: string): Promise<number> {
  const r = await podman('stats', '--no-stream', '--format', '{{.MemUsage}}', name);
  const used = /^([\d.]+)([kMG]?B)/.exec(r.stdout.trim());
  if (!used) throw new Error(`podman stats ${name}: ${r.all}`);
  const unit = { B: 1, kB: 1e3, MB: 1e6, GB: 1e9 }[used[2] as 'B'] ?? 1;
  return Math.round(Number(used[1]) * unit);
}
