import { randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { run as runCommand, type Runner } from './command.js';

/**
 * Kata Containers' direct-assigned volumes. The CSI driver tells the Kata runtime "the volume
 * published at <target_path> is really block device X: attach it to the VM and mount it there" by
 * writing <root>/<encoded target_path>/mountInfo.json. When the runtime creates a container whose
 * bind-mount source has such a file, it hot-plugs the device instead of sharing the directory, and
 * records the sandbox id as an empty file beside mountInfo.json.
 *
 * Format as kata-containers/kata-containers src/runtime/pkg/direct-volume/utils.go defines it (used
 * by `kata-runtime direct-volume add` and by the runtime's container.go createBlockDevices):
 * - directory name: Go's base64.URLEncoding of the path, i.e. the URL-safe alphabet (- _) WITH `=`
 *   padding. Node's 'base64url' drops the padding, so it would name a different directory;
 * - mountInfo.json: {"volume-type","device","fstype","metadata","options"}, dir 0700, file 0600;
 * - metadata keys the runtime understands: fsGroup, fsGroupChangePolicy (others are ignored with a
 *   warning); options are guest mount options: "rw"/"ro", never "bind" (the agent would pass
 *   MS_BIND to mount(2) on a block device, which fails).
 */
export const MOUNT_INFO_FILE = 'mountInfo.json';
export const DIRECT_VOLUME_TYPE = 'directvol';
export const FS_GROUP_KEY = 'fsGroup';
export const FS_GROUP_CHANGE_POLICY_KEY = 'fsGroupChangePolicy';

export const mountInfoSchema = z.object({
  'volume-type': z.string(),
  device: z.string().startsWith('/', 'must be an absolute device path'),
  fstype: z.string(),
  metadata: z.record(z.string(), z.string()).nullish(),
  options: z.array(z.string()).nullish(),
});
export type MountInfo = z.infer<typeof mountInfoSchema>;

/** What the node hands to Kata for one publish. */
export interface DirectVolume {
  device: string;
  fsType: string;
  readonly: boolean;
  /** The pod's fsGroup, applied by the Kata agent inside the VM. */
  fsGroup?: number;
  fsGroupChangePolicy?: 'Always' | 'OnRootMismatch';
}

/** Go's base64.URLEncoding: URL-safe alphabet, padded. */
export function encodeVolumePath(targetPath: string): string {
  return Buffer.from(targetPath, 'utf8').toString('base64').replace(/\+/g, '-').replace(/\//g, '_');
}

export function directVolumeDir(root: string, targetPath: string): string {
  return join(root, encodeVolumePath(targetPath));
}

export function mountInfoFor(v: DirectVolume): MountInfo {
  const metadata: Record<string, string> = {};
  if (v.fsGroup !== undefined) {
    metadata[FS_GROUP_KEY] = String(v.fsGroup);
    if (v.fsGroupChangePolicy) metadata[FS_GROUP_CHANGE_POLICY_KEY] = v.fsGroupChangePolicy;
  }
  return { 'volume-type': DIRECT_VOLUME_TYPE, device: v.device, fstype: v.fsType, metadata, options: [v.readonly ? 'ro' : 'rw'] };
}

export class KataVolumeError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'KataVolumeError';
  }
}

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException).code;

/**
 * Write the direct-volume file for a target path, atomically: a reader (the Kata runtime) sees the
 * old file or the new one, never half. The temporary file lives in the root, not in the volume's
 * directory: the runtime takes any other file there for a sandbox id.
 */
export async function writeDirectVolume(root: string, targetPath: string, v: DirectVolume): Promise<string> {
  const dir = directVolumeDir(root, targetPath);
  try {
    await mkdir(root, { recursive: true, mode: 0o700 });
    await mkdir(dir, { mode: 0o700 }).catch((e) => {
      if (errnoOf(e) !== 'EEXIST') throw e;
    });
    if (!(await stat(dir)).isDirectory()) throw new KataVolumeError(`${dir} should be a directory; remove it`);
  } catch (e) {
    if (e instanceof KataVolumeError) throw e;
    if (errnoOf(e) === 'ENAMETOOLONG') throw new KataVolumeError(`target path ${targetPath} is too long for a Kata direct-volume directory name (${encodeVolumePath(targetPath).length} characters encoded, 255 allowed)`);
    throw new KataVolumeError(`cannot create Kata direct-volume directory ${dir}: ${errnoOf(e) ?? (e as Error).message}`);
  }
  const file = join(dir, MOUNT_INFO_FILE);
  const tmp = join(root, `.${MOUNT_INFO_FILE}.${randomBytes(6).toString('hex')}.tmp`);
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(JSON.stringify(mountInfoFor(v)));
      await fh.sync();
    } finally {
      await fh.close();
    }
    await rename(tmp, file);
  } catch (e) {
    await rm(tmp, { force: true });
    throw new KataVolumeError(`cannot write ${file}: ${errnoOf(e) ?? (e as Error).message}`);
  }
  return file;
}

/** What is at a target path's direct-volume directory: the mount info and the sandboxes using it. */
export interface DirectVolumeState {
  dir: string;
  info: MountInfo;
  /** Sandbox ids the Kata runtime recorded: a VM has (or had) this device attached. */
  sandboxIds: string[];
}

/** The direct volume published at a target path, or undefined when there is none. */
export async function readDirectVolume(root: string, targetPath: string): Promise<DirectVolumeState | undefined> {
  const dir = directVolumeDir(root, targetPath);
  let text: string;
  try {
    text = await readFile(join(dir, MOUNT_INFO_FILE), 'utf8');
  } catch (e) {
    if (errnoOf(e) === 'ENOENT' || errnoOf(e) === 'ENOTDIR') return undefined;
    throw new KataVolumeError(`cannot read ${join(dir, MOUNT_INFO_FILE)}: ${errnoOf(e) ?? (e as Error).message}`);
  }
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch {
    throw new KataVolumeError(`${join(dir, MOUNT_INFO_FILE)} is not JSON; remove ${dir}`);
  }
  const r = mountInfoSchema.safeParse(json);
  if (!r.success) throw new KataVolumeError(`${join(dir, MOUNT_INFO_FILE)} is not Kata mount info (${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`);
  const sandboxIds = (await readdir(dir)).filter((n) => n !== MOUNT_INFO_FILE);
  return { dir, info: r.data, sandboxIds };
}

/** Remove a target path's direct-volume directory and all in it (as `kata-runtime direct-volume remove`); absent is fine. */
export async function removeDirectVolume(root: string, targetPath: string): Promise<void> {
  await rm(directVolumeDir(root, targetPath), { recursive: true, force: true });
}

// ---- kata-runtime direct-volume stats | resize ------------------------------------------------

/**
 * The guest's filesystem usage as the Kata agent reports it: kata-runtime prints the agent's
 * VolumeStatsResponse JSON ({"usage":[{"available","total","used","unit"}],"volume_condition"}),
 * unit as the enum number (1 BYTES, 2 INODES) or its name.
 */
const unitSchema = z.union([z.literal(1), z.literal(2), z.literal('BYTES'), z.literal('INODES'), z.literal(0), z.literal('UNKNOWN')]);
const guestStatsSchema = z.object({
  usage: z
    .array(z.object({ available: z.coerce.number().default(0), total: z.coerce.number().default(0), used: z.coerce.number().default(0), unit: unitSchema.default(0) }))
    .default([]),
  volume_condition: z.object({ abnormal: z.boolean().default(false), message: z.string().default('') }).nullish(),
});

export interface Usage {
  total: number;
  used: number;
  available: number;
}
export interface GuestVolumeStats {
  bytes?: Usage;
  inodes?: Usage;
  abnormal?: string;
}

export function parseGuestStats(stdout: string): GuestVolumeStats {
  let json: unknown;
  try {
    json = JSON.parse(stdout);
  } catch {
    throw new KataVolumeError(`kata-runtime direct-volume stats printed something that is not JSON: ${stdout.trim().slice(0, 120)}`);
  }
  const r = guestStatsSchema.safeParse(json);
  if (!r.success) throw new KataVolumeError(`kata-runtime direct-volume stats printed unexpected JSON (${r.error.issues.map((i) => i.path.join('.')).join(', ')})`);
  const pick = (units: unknown[]) => {
    const u = r.data.usage.find((x) => units.includes(x.unit));
    return u && { total: u.total, used: u.used, available: u.available };
  };
  const c = r.data.volume_condition;
  return { bytes: pick([1, 'BYTES']), inodes: pick([2, 'INODES']), abnormal: c?.abnormal ? c.message || 'abnormal' : undefined };
}

/**
 * `kata-runtime direct-volume stats|resize --volume-path <target>` (flags as kata-runtime's
 * kata-volume.go defines them). Both reach the running sandbox through its shim, which the runtime
 * found from the sandbox-id file it wrote beside mountInfo.json.
 */
export class KataRuntimeCli {
  constructor(
    readonly path: string,
    private readonly run: Runner = runCommand,
  ) {}

  async stats(targetPath: string, signal?: AbortSignal): Promise<GuestVolumeStats> {
    const { stdout } = await this.run(this.path, ['direct-volume', 'stats', '--volume-path', targetPath], { signal, timeoutMs: 15_000 });
    return parseGuestStats(stdout);
  }

  async resize(targetPath: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0) throw new KataVolumeError(`cannot resize to ${sizeBytes} bytes`);
    await this.run(this.path, ['direct-volume', 'resize', '--volume-path', targetPath, '--size', String(sizeBytes)], { signal, timeoutMs: 60_000 });
  }
}
