import { mkdirSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { loadConfig, type RawOptions } from '../src/config.js';
import { createLogger } from '../src/log.js';
import { type DriverHooks, startDriver, type RunningDriver } from '../src/serve.js';
import { CEPH_CONF, CEPH_KEYRING, scratchDir } from './local-stack.js';
import { csiClient, type CsiClient } from '../src/client/csi-client.js';

export interface NodeDriver {
  csi: CsiClient;
  driver: RunningDriver;
  /** Every log line the driver wrote (JSON), to check what it says and never says. */
  logs: string[];
  stop(): Promise<void>;
}

export interface NodeDirs {
  base: string;
  kubeletRoot: string;
  stateDir: string;
  socket: string;
}

/**
 * A test's own dirs under the stack's scratch dir: kubelet root, state dir, socket. With
 * `symlinkedRoot` the kubelet root is a symlink to another directory (as /var/lib/kubelet → a disk).
 */
export function nodeDirs(prefix: string, o: { symlinkedRoot?: boolean } = {}): NodeDirs {
  const base = scratchDir(prefix);
  const kubeletRoot = join(base, 'kubelet');
  const stateDir = join(base, 'state');
  if (o.symlinkedRoot) {
    mkdirSync(join(base, 'kubelet-disk'), { recursive: true });
    symlinkSync(join(base, 'kubelet-disk'), kubeletRoot);
  } else mkdirSync(kubeletRoot, { recursive: true });
  return { base, kubeletRoot, stateDir, socket: join(base, 'csi.sock') };
}

/** The node plugin in this process on a unix socket, with the fuse mapper and the local stack's Ceph conf. */
/**
 * `hooks.kubeEnv`: where the plugin finds the Kubernetes API (KUBECONFIG); none by default, whatever this process
 * has.
 */
export async function startNodeDriver(
  dirs: NodeDirs,
  options: RawOptions = {},
  hooks: DriverHooks = {},
): Promise<NodeDriver> {
  const config = await loadConfig(
    {
      mode: 'node',
      nodeId: 'node-test',
      endpoint: `unix://${dirs.socket}`,
      kubeletRoot: dirs.kubeletRoot,
      stateDir: dirs.stateDir,
      rbdMapper: 'fuse',
      cephConf: CEPH_CONF,
      cephKeyring: CEPH_KEYRING,
      logLevel: 'debug',
      ...options,
    },
    {},
  );
  const logs: string[] = [];
  const log = createLogger(config.logLevel, { write: (line: string) => void logs.push(line) });
  const driver = await startDriver(config, log, { kubeEnv: {}, ...hooks });
  const csi = csiClient(`unix://${dirs.socket}`);
  return {
    csi,
    driver,
    logs,
    stop: async () => {
      csi.close();
      await driver.stop(1000);
    },
  };
}

interface VolumeRef {
  volumeId: string;
  publishContext: Record<string, string>;
}

/** The node RPCs with the arguments a CO fills in from the volume, so tests say only what varies. */
export function nodeOps(csi: CsiClient) {
  const n = csi.Node as Required<CsiClient['Node']>;
  return {
    stage: (v: VolumeRef, staging: string, capability: object, extra: object = {}) =>
      n.NodeStageVolume({
        volume_id: v.volumeId,
        publish_context: v.publishContext,
        staging_target_path: staging,
        volume_capability: capability,
        ...extra,
      }),
    publish: (
      v: VolumeRef,
      staging: string,
      target: string,
      capability: object,
      readonly = false,
      extra: object = {},
    ) =>
      n.NodePublishVolume({
        volume_id: v.volumeId,
        publish_context: v.publishContext,
        staging_target_path: staging,
        target_path: target,
        volume_capability: capability,
        readonly,
        ...extra,
      }),
    unpublish: (v: VolumeRef, target: string) => n.NodeUnpublishVolume({ volume_id: v.volumeId, target_path: target }),
    unstage: (v: VolumeRef, staging: string) =>
      n.NodeUnstageVolume({ volume_id: v.volumeId, staging_target_path: staging }),
    stats: (v: VolumeRef, path: string, staging?: string) =>
      n.NodeGetVolumeStats({ volume_id: v.volumeId, volume_path: path, staging_target_path: staging ?? '' }),
    expand: (v: VolumeRef, path: string, requiredBytes: number, capability?: object) =>
      n.NodeExpandVolume({
        volume_id: v.volumeId,
        volume_path: path,
        capacity_range: { required_bytes: requiredBytes },
        ...(capability ? { volume_capability: capability } : {}),
      }),
  };
}
