import { createHash, randomBytes } from 'node:crypto';
import { mkdir, open, readdir, readFile, rename, rm } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { z } from 'zod';
import { ATTACH_MODES } from '../../vocabulary.js';
import { NodeError } from '../errors.js';
import { failpoint } from '../../failpoints.js';
import { mappingSchema } from '../mappers/mapper.js';

const targetSchema = z.object({
  /**
   * mount: bound from the staging mount; block: the device bound onto a file; passthrough: handed to a VM (Kata
   * direct-volume file).
   */
  kind: z.enum(['mount', 'block', 'passthrough']),
  readonly: z.boolean(),
  /** A read-only block publish: the read-only loop device over the volume's device that is bound there. */
  device: z.string().optional(),
  /** Fingerprint of the publish arguments (all but secrets and the target): same again → OK, else ALREADY_EXISTS. */
  args: z.string(),
  /**
   * The target resolved (symlinks of the kubelet root followed): what the mount table shows. Absent: the same as the
   * key.
   */
  real: z.string().optional(),
});
export type PublishTarget = z.infer<typeof targetSchema>;

/**
 * What the node knows about one staged volume, kept as <stateDir>/volumes/<key>.json. Everything
 * NodeUnstageVolume and a restarted plugin need to find, check and undo the stage is here.
 */
export const stageRecordSchema = z.object({
  version: z.literal(1),
  volumeId: z.string(),
  /** As kubelet gave it. */
  stagingPath: z.string(),
  /** Resolved (symlinks of the kubelet root followed): what the mount table shows. Absent: the same as stagingPath. */
  stagingReal: z.string().optional(),
  /** Fingerprint of the stage arguments (capability, context): same again → OK, else ALREADY_EXISTS. */
  stageArgs: z.string(),
  image: z.object({
    pool: z.string(),
    image: z.string(),
    monitors: z.array(z.string()),
    user: z.string(),
    cluster: z.string(),
  }),
  mapper: z.enum(['krbd', 'nbd', 'fuse']),
  /**
   * mapping: being mapped (a crash here leaves something to find by volume key);
   * mapped: the block device is ready, nothing mounted (block volumes; a filesystem volume whose
   * host mount waits for a filesystem-mode publish, because its device goes to VMs);
   * mounted: the filesystem is mounted at stagingPath.
   */
  phase: z.enum(['mapping', 'mapped', 'mounted']),
  /** volume_context attachMode: passthrough volumes are never mounted at stage; auto ones may be released for a VM. */
  attachMode: z.enum(ATTACH_MODES).default('auto'),
  /** The capability's mount flags, for a host mount made later than the stage. */
  mountFlags: z.array(z.string()).default([]),
  mapping: mappingSchema.optional(),
  /** The Ceph client instances the mapping is (recorded for the controller's fencing too). */
  clients: z.array(z.string()).default([]),
  accessType: z.enum(['mount', 'block']),
  accessMode: z.string(),
  readonly: z.boolean(),
  fsType: z.string().optional(),
  mountOptions: z.array(z.string()).default([]),
  /** The plugin made the filesystem (the device was blank). */
  formatted: z.boolean().default(false),
  targets: z.record(z.string(), targetSchema).default({}),
  updatedAt: z.string(),
});
export type StageRecord = z.infer<typeof stageRecordSchema>;

function parseRecord(text: string): { success: true; data: StageRecord } | { success: false; error: string } {
  let json: unknown;
  try {
    json = JSON.parse(text);
  } catch (e) {
    return { success: false, error: `not JSON: ${(e as Error).message}` };
  }
  const r = stageRecordSchema.safeParse(json);
  return r.success
    ? { success: true, data: r.data }
    : { success: false, error: r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ') };
}

/** A file-name-safe, stable name for a volume: the id itself when it is tame (Cinder UUIDs are), else a hash. */
export function volumeKey(volumeId: string): string {
  return /^[A-Za-z0-9][A-Za-z0-9_.-]{0,100}$/.test(volumeId)
    ? volumeId
    : `h-${createHash('sha256').update(volumeId).digest('hex').slice(0, 40)}`;
}

/**
 * Write a file whole or not at all, on disk before this returns: temp file, fsync, rename, fsync of the
 * dir. A kill before the rename leaves `<final>.<random>.tmp`, which the start-up sweep removes.
 */
export async function writeDurably(final: string, text: string): Promise<void> {
  const dir = dirname(final);
  await mkdir(dir, { recursive: true, mode: 0o700 });
  const tmp = `${final}.${randomBytes(4).toString('hex')}.tmp`;
  const fh = await open(tmp, 'wx', 0o600);
  try {
    await fh.writeFile(text);
    await fh.sync();
  } finally {
    await fh.close();
  }
  await failpoint('state:written');
  await rename(tmp, final);
  const d = await open(dir, 'r');
  try {
    await d.sync();
  } finally {
    await d.close();
  }
}

/** What an interrupted writeDurably leaves: the sweep removes these. */
export const isInterruptedWrite = (name: string) => name.endsWith('.tmp');

/** Stage records on disk: written atomically (temp file, fsync, rename), read fresh by every RPC. */
export class StageRecords {
  readonly dir: string;
  constructor(stateDir: string) {
    this.dir = join(stateDir, 'volumes');
  }

  private file(volumeId: string): string {
    return join(this.dir, `${volumeKey(volumeId)}.json`);
  }

  async read(volumeId: string): Promise<StageRecord | undefined> {
    const file = this.file(volumeId);
    let text: string;
    try {
      text = await readFile(file, 'utf8');
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code === 'ENOENT') return undefined;
      throw e;
    }
    const parsed = parseRecord(text);
    if (!parsed.success || parsed.data.volumeId !== volumeId)
      throw new NodeError(
        'internal',
        `stage record ${file} is damaged (${parsed.success ? 'it names another volume' : parsed.error}); inspect it, undo the stage by hand and remove it`,
      );
    return parsed.data;
  }

  async write(record: StageRecord): Promise<StageRecord> {
    const withTime = { ...record, updatedAt: new Date().toISOString() };
    await writeDurably(this.file(record.volumeId), `${JSON.stringify(withTime, null, 2)}\n`);
    return withTime;
  }

  async remove(volumeId: string): Promise<void> {
    await rm(this.file(volumeId), { force: true });
  }

  /** How many stages this node holds or is making (their records, unread: NodeGetInfo asks at every call). */
  async count(): Promise<number> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.json')).length;
  }

  /** Every record (for the start-up report); damaged ones are reported by name, not thrown. */
  async list(): Promise<{ records: StageRecord[]; damaged: string[] }> {
    const names = await readdir(this.dir).catch(() => [] as string[]);
    const records: StageRecord[] = [];
    const damaged: string[] = [];
    for (const n of names.filter((n) => n.endsWith('.json'))) {
      const parsed = parseRecord(await readFile(join(this.dir, n), 'utf8').catch(() => ''));
      if (parsed.success) records.push(parsed.data);
      else damaged.push(n);
    }
    return { records, damaged };
  }
}
