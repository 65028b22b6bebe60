import { readFile } from 'node:fs/promises';
import type { MapperKind } from './capabilities.js';

/**
 * How many volumes this node can hold, now. krbd mappings live in the kernel; rbd-fuse and rbd-nbd
 * mappings are each a daemon in the mapper's cgroup (the node pod's mapper container, or the plugin's
 * own without one), measured at 35–38 MiB apiece for rbd-fuse (rbd-nbd is taken to cost the same; it is
 * not measurable on these machines). So what the node can hold is what it holds plus what the memory
 * still free in that cgroup fits, capped by --max-volumes-per-node. Kubelet asks again every
 * nodeAllocatableUpdatePeriodSeconds (CSIDriver), so the scheduler follows the memory really left.
 */
export const MAPPING_MIB: Record<MapperKind, number> = { krbd: 0, nbd: 38, fuse: 38 };
/** Kept free in the cgroup beyond the mappings (the next mapping's start-up, page cache that lingers). */
export const HEADROOM_MIB = 64;

/** A cgroup's memory: its limit, what it uses (the working set, as kubelet counts it), what is still free. */
export interface MemoryReading {
  limitMiB: number;
  usedMiB: number;
  /** min(limit − used, the host's MemAvailable). */
  availableMiB: number;
}

type Read = (path: string) => Promise<string>;
const readText: Read = (p) => readFile(p, 'utf8');
const MiB = 1024 * 1024;

/** A memory.stat field (v2 `inactive_file`, v1 `total_inactive_file`), 0 when absent. */
const statField = (stat: string, key: string) => Number(new RegExp(`^${key} (\\d+)$`, 'm').exec(stat)?.[1] ?? 0);

/**
 * This process's memory cgroup (v2, then v1): its directory from /proc/self/cgroup under the
 * hierarchy's mount, or the mount itself (a container with a cgroup namespace, or one that has its
 * own cgroup mounted there); the host's memory when no cgroup limits it.
 */
export async function memoryReading(read: Read = readText): Promise<MemoryReading> {
  const meminfo = await read('/proc/meminfo').catch(() => '');
  const kB = (key: string) => Number(new RegExp(`^${key}:\\s+(\\d+) kB`, 'm').exec(meminfo)?.[1] ?? NaN) / 1024;
  const hostTotal = kB('MemTotal');
  const hostAvailable = kB('MemAvailable');
  const self = await read('/proc/self/cgroup').catch(() => '');
  const v2 = /^0::(\S*)$/m.exec(self)?.[1] ?? '/';
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(\S*)$/m.exec(self)?.[1] ?? '/';
  const layouts = [
    ...[`/sys/fs/cgroup${v2}`, '/sys/fs/cgroup', `/sys/fs/cgroup/unified${v2}`].map((dir) => ({
      dir,
      limit: 'memory.max',
      usage: 'memory.current',
      inactive: 'inactive_file',
    })),
    ...[`/sys/fs/cgroup/memory${v1}`, '/sys/fs/cgroup/memory'].map((dir) => ({
      dir,
      limit: 'memory.limit_in_bytes',
      usage: 'memory.usage_in_bytes',
      inactive: 'total_inactive_file',
    })),
  ];
  for (const l of layouts) {
    const usage = Number((await read(`${l.dir.replace(/\/$/, '')}/${l.usage}`).catch(() => '')).trim() || NaN);
    if (!Number.isFinite(usage)) continue;
    const rawLimit = (await read(`${l.dir.replace(/\/$/, '')}/${l.limit}`).catch(() => 'max')).trim();
    const stat = await read(`${l.dir.replace(/\/$/, '')}/memory.stat`).catch(() => '');
    const usedMiB = Math.max(0, usage - statField(stat, l.inactive)) / MiB;
    // "max" (v2) or a huge number (v1) is no limit: the host's memory is
    const limit = rawLimit === 'max' ? Infinity : Number(rawLimit) / MiB;
    const limitMiB = Number.isFinite(limit) && (!Number.isFinite(hostTotal) || limit < hostTotal) ? limit : hostTotal;
    return reading(limitMiB, usedMiB, hostAvailable);
  }
  return reading(hostTotal, hostTotal - hostAvailable, hostAvailable);
}

function reading(limitMiB: number, usedMiB: number, hostAvailableMiB: number): MemoryReading {
  const free = limitMiB - usedMiB;
  const availableMiB = Number.isFinite(hostAvailableMiB) ? Math.min(free, hostAvailableMiB) : free;
  return {
    limitMiB: Math.floor(limitMiB),
    usedMiB: Math.round(usedMiB),
    availableMiB: Math.max(0, Math.floor(availableMiB)),
  };
}

/** A reading with the limit set by hand (--mapper-memory-limit): what is free follows from it. */
export function withLimit(r: MemoryReading, limitMiB: number | undefined): MemoryReading {
  if (limitMiB === undefined) return r;
  return { limitMiB, usedMiB: r.usedMiB, availableMiB: Math.max(0, Math.min(r.availableMiB, limitMiB - r.usedMiB)) };
}

/** max_volumes_per_node now: the mappings held plus those the free memory fits, at most `cap`, at least 1. */
export function volumeLimit(
  mapper: MapperKind,
  memory: MemoryReading,
  mapped: number,
  cap: number,
): { limit: number; why: string } {
  const per = MAPPING_MIB[mapper];
  if (!per) return { limit: cap, why: `${mapper} mappings live in the kernel: --max-volumes-per-node (${cap})` };
  const room = Math.max(0, Math.floor((memory.availableMiB - HEADROOM_MIB) / per));
  const fits = Math.max(1, mapped + room);
  const held = `${mapped} mapped, room for ${room} more ${mapper} mappings of ~${per} MiB in ${memory.availableMiB} MiB free of the ${memory.limitMiB} MiB memory limit (${HEADROOM_MIB} MiB kept)`;
  if (fits >= cap) return { limit: cap, why: `--max-volumes-per-node (${cap}); ${held}` };
  return { limit: fits, why: `${held}; --max-volumes-per-node is ${cap}` };
}

export interface NodeCapacityOptions {
  mapper: MapperKind;
  /** The memory of the mappers' cgroup (read there: the mapper host's, or this process's). */
  memory: () => Promise<MemoryReading>;
  /** --mapper-memory-limit, when set. */
  limitMiB?: number;
  /** How many images are mapped now (the stage records). */
  mapped: () => Promise<number>;
  /** --max-volumes-per-node. */
  cap: number;
}

/** NodeGetInfo's max_volumes_per_node, measured at each call; the last good answer while a reading fails. */
export class NodeCapacity {
  private last?: { limit: number; why: string };
  constructor(private readonly o: NodeCapacityOptions) {}

  async current(): Promise<{ limit: number; why: string }> {
    try {
      const [memory, mapped] = await Promise.all([this.o.memory(), this.o.mapped()]);
      this.last = volumeLimit(this.o.mapper, withLimit(memory, this.o.limitMiB), mapped, this.o.cap);
    } catch (e) {
      if (!this.last) throw e;
    }
    return this.last;
  }
}
