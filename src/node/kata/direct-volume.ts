import { randomBytes } from 'node:crypto';
import { link, mkdir, open, readdir, readFile, rename, rm, stat } from 'node:fs/promises';
import { join } from 'node:path';
import { z } from 'zod';
import { run as runCommand, type Runner } from '../host/command.js';

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
  return {
    'volume-type': DIRECT_VOLUME_TYPE,
    device: v.device,
    fstype: v.fsType,
    metadata,
    options: [v.readonly ? 'ro' : 'rw'],
  };
}

export class KataVolumeError extends Error {
  constructor(
    message: string,
    /** The target already hands another device to a VM: the caller's input is in the way, not a bug. */
    readonly conflict = false,
  ) {
    super(message);
    this.name = 'KataVolumeError';
  }
}

const errnoOf = (e: unknown) => (e as NodeJS.ErrnoException).code;

/**
 * Write the direct-volume file for a target path, atomically: a reader (the Kata runtime) sees the
 * old file or the new one, never half. The temporary file lives in the root, not in the volume's
 * directory: the runtime takes any other file there for a sandbox id. A file already there that hands
 * another device to a VM is never replaced (KataVolumeError with `conflict`): a new one is linked into
 * place, which fails where one appeared meanwhile, and only a file naming this same device is renamed over.
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
    if (errnoOf(e) === 'ENAMETOOLONG')
      throw new KataVolumeError(
        `target path ${targetPath} is too long for a Kata direct-volume directory name (${encodeVolumePath(targetPath).length} characters encoded, 255 allowed)`,
      );
    throw new KataVolumeError(
      `cannot create Kata direct-volume directory ${dir}: ${errnoOf(e) ?? (e as Error).message}`,
    );
  }
  const file = join(dir, MOUNT_INFO_FILE);
  const tmp = join(root, `${TMP_PREFIX}${randomBytes(6).toString('hex')}.tmp`);
  const theirs = (s: DirectVolumeState | undefined) => s && s.info.device !== v.device;
  const refuse = (s: DirectVolumeState) =>
    new KataVolumeError(
      `${file} already hands ${s.info.device} to a VM (another volume is published at ${targetPath})`,
      true,
    );
  const before = await readDirectVolume(root, targetPath);
  if (theirs(before)) throw refuse(before!);
  try {
    const fh = await open(tmp, 'wx', 0o600);
    try {
      await fh.writeFile(JSON.stringify(mountInfoFor(v)));
      await fh.sync();
    } finally {
      await fh.close();
    }
    if (before) await rename(tmp, file);
    else await link(tmp, file);
  } catch (e) {
    if (errnoOf(e) !== 'EEXIST')
      throw new KataVolumeError(`cannot write ${file}: ${errnoOf(e) ?? (e as Error).message}`);
    const now = await readDirectVolume(root, targetPath); // another publish linked one first
    if (theirs(now)) throw refuse(now!);
    await rename(tmp, file);
  } finally {
    await rm(tmp, { force: true });
  }
  return file;
}

/** Names of the temporary files writeDirectVolume leaves in the root when killed; swept at start. */
export const TMP_PREFIX = `.${MOUNT_INFO_FILE}.`;

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
  if (!r.success)
    throw new KataVolumeError(
      `${join(dir, MOUNT_INFO_FILE)} is not Kata mount info (${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')})`,
    );
  const sandboxIds = (await readdir(dir)).filter((n) => n !== MOUNT_INFO_FILE);
  return { dir, info: r.data, sandboxIds };
}

/**
 * Remove a target path's direct-volume directory and all in it (as `kata-runtime direct-volume remove`),
 * if it hands `device` to the VM; absent is fine. One handing another device is another volume's: left.
 * Returns whether it was removed (or absent).
 */
export async function removeDirectVolume(root: string, targetPath: string, device: string): Promise<boolean> {
  const state = await readDirectVolume(root, targetPath).catch(() => undefined);
  if (state && state.info.device !== device) return false;
  await rm(directVolumeDir(root, targetPath), { recursive: true, force: true });
  return true;
}

// ---- kata-ctl / kata-runtime direct-volume stats | resize ------------------------------------

/**
 * The guest's filesystem usage as the Kata agent reports it: kata-ctl and kata-runtime print the agent's
 * VolumeStatsResponse JSON ({"usage":[{"available","total","used","unit"}],"volume_condition"}),
 * unit as the enum number (1 BYTES, 2 INODES) or its name.
 */
const unitSchema = z.union([
  z.literal(1),
  z.literal(2),
  z.literal('BYTES'),
  z.literal('INODES'),
  z.literal(0),
  z.literal('UNKNOWN'),
]);
const guestStatsSchema = z.object({
  usage: z
    .array(
      z.object({
        available: z.coerce.number().default(0),
        total: z.coerce.number().default(0),
        used: z.coerce.number().default(0),
        unit: unitSchema.default(0),
      }),
    )
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
    throw new KataVolumeError(`direct-volume stats printed something that is not JSON: ${stdout.trim().slice(0, 120)}`);
  }
  const r = guestStatsSchema.safeParse(json);
  if (!r.success)
    throw new KataVolumeError(
      `direct-volume stats printed unexpected JSON (${r.error.issues.map((i) => i.path.join('.')).join(', ')})`,
    );
  const pick = (units: unknown[]) => {
    const u = r.data.usage.find((x) => units.includes(x.unit));
    return u && { total: u.total, used: u.used, available: u.available };
  };
  const c = r.data.volume_condition;
  return {
    bytes: pick([1, 'BYTES']),
    inodes: pick([2, 'INODES']),
    abnormal: c?.abnormal ? c.message || 'abnormal' : undefined,
  };
}

/**
 * Kata's direct-volume tools. Kata 4 runs runtime-rs by default, reached with `kata-ctl direct-volume
 * stats|resize <volume-path> [<size>]` (positional, as kata-ctl's args.rs defines them); the Go runtime's
 * `kata-runtime direct-volume stats|resize --volume-path <path> [--size <bytes>]` is deprecated but still
 * shipped, and the only way into a sandbox that runtime started. Either reaches the running sandbox
 * through its shim, which it finds from the sandbox-id file the runtime wrote beside mountInfo.json.
 */
export type DirectVolumeToolKind = 'kata-ctl' | 'kata-runtime';

export interface DirectVolumeTool {
  kind: DirectVolumeToolKind;
  path: string;
}

/** Which tool to try first: runtime-rs's (Kata 4's default), then the Go runtime's. */
export const DIRECT_VOLUME_TOOLS: readonly DirectVolumeToolKind[] = ['kata-ctl', 'kata-runtime'];
/** Where kata-deploy installs them on the host (mounted into the node plugin, see docs/configure.md). */
export const KATA_BIN_DIRS = ['/opt/kata/bin', '/opt/kata/runtime-rs/bin'];

/** The direct-volume tools found, in the order to try them. */
export async function findDirectVolumeTools(
  find: (cmd: string) => Promise<string | undefined>,
): Promise<DirectVolumeTool[]> {
  const found = await Promise.all(DIRECT_VOLUME_TOOLS.map(async (kind) => ({ kind, path: await find(kind) })));
  return found.filter((t): t is DirectVolumeTool => !!t.path);
}

/** Which tools passthrough volumes' stats and resize use, for the start-up log and doctor. */
export function describeDirectVolumeTools(tools: DirectVolumeTool[]): string {
  if (!tools.length)
    return "neither kata-ctl nor kata-runtime found: passthrough volume stats and resize fall back to the device size (mount kata-deploy's /opt/kata into the node plugin, docs/configure.md)";
  const [first, ...rest] = tools;
  const why =
    first!.kind === 'kata-ctl'
      ? 'runtime-rs, Kata 4'
      : 'the Go runtime; deprecated in Kata 4, runtime-rs sandboxes need kata-ctl';
  return `${first!.kind} at ${first!.path} (${why})${rest.map((t) => `, then ${t.kind} at ${t.path}`).join('')}`;
}

/** One tool's command lines for stats and resize. */
export class DirectVolumeCli {
  constructor(
    readonly tool: DirectVolumeTool,
    private readonly run: Runner = runCommand,
  ) {}

  statsArgs(targetPath: string): string[] {
    return this.tool.kind === 'kata-ctl'
      ? ['direct-volume', 'stats', targetPath]
      : ['direct-volume', 'stats', '--volume-path', targetPath];
  }

  resizeArgs(targetPath: string, sizeBytes: number): string[] {
    return this.tool.kind === 'kata-ctl'
      ? ['direct-volume', 'resize', targetPath, String(sizeBytes)]
      : ['direct-volume', 'resize', '--volume-path', targetPath, '--size', String(sizeBytes)];
  }

  async stats(targetPath: string, signal?: AbortSignal): Promise<GuestVolumeStats> {
    const { stdout } = await this.run(this.tool.path, this.statsArgs(targetPath), { signal, timeoutMs: 15_000 });
    return parseGuestStats(stdout);
  }

  async resize(targetPath: string, sizeBytes: number, signal?: AbortSignal): Promise<void> {
    if (!Number.isSafeInteger(sizeBytes) || sizeBytes <= 0)
      throw new KataVolumeError(`cannot resize to ${sizeBytes} bytes`);
    await this.run(this.tool.path, this.resizeArgs(targetPath, sizeBytes), { signal, timeoutMs: 60_000 });
  }
}
