import type { FsType } from '../../vocabulary.js';
import type { Runner } from './command.js';
import {
  applyMountGroupInChild,
  bindMount,
  type DeviceContent,
  filesystemUsage,
  type FilesystemUsage,
  formatDevice,
  growFilesystem,
  growUnmountedExt,
  mountDevice,
  type MountEntry,
  probeDevice,
  readMounts,
  remountReadOnly,
  unmount,
} from './mount-commands.js';

/**
 * The seam between the node's volume logic and the host's filesystems: the mount table, mounts and
 * binds, mkfs, the probe, usage, growing, the fsGroup walk. The host's implementation
 * runs the real tools; a test of the logic passes a small in-memory one.
 */
export interface Mounter {
  mounts(): Promise<MountEntry[]>;
  mountDevice(device: string, at: string, fsType: string, options: string[], signal?: AbortSignal): Promise<void>;
  bind(source: string, at: string): Promise<void>;
  remountReadOnly(mountpoint: string): Promise<void>;
  unmount(target: string, signal?: AbortSignal): Promise<void>;
  format(device: string, fsType: FsType, signal?: AbortSignal, overwrite?: boolean): Promise<void>;
  probe(device: string, signal?: AbortSignal): Promise<DeviceContent>;
  usage(path: string, signal?: AbortSignal): Promise<FilesystemUsage>;
  grow(fsType: string, device: string, mountpoint: string, signal?: AbortSignal): Promise<void>;
  growUnmounted(device: string, signal?: AbortSignal): Promise<void>;
  applyMountGroup(root: string, gid: number, signal?: AbortSignal): Promise<'applied' | 'unchanged'>;
}

export function hostMounter(run: Runner): Mounter {
  return {
    mounts: readMounts,
    mountDevice: (device, at, fsType, options, signal) => mountDevice(run, device, at, fsType, options, signal),
    bind: (source, at) => bindMount(run, source, at),
    remountReadOnly: (mountpoint) => remountReadOnly(run, mountpoint),
    unmount: (target, signal) => unmount(run, target, signal),
    format: (device, fsType, signal, overwrite) => formatDevice(run, device, fsType, signal, overwrite),
    probe: (device, signal) => probeDevice(run, device, signal),
    usage: (path, signal) => filesystemUsage(run, path, signal),
    grow: (fsType, device, mountpoint, signal) => growFilesystem(run, fsType, device, mountpoint, signal),
    growUnmounted: (device, signal) => growUnmountedExt(run, device, signal),
    applyMountGroup: (root, gid, signal) => applyMountGroupInChild(run, root, gid, signal),
  };
}
