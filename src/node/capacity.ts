import { readFile } from 'node:fs/promises';
import type { MapperKind } from './host.js';

/**
 * How many volumes this node can really hold. krbd mappings live in the kernel; rbd-fuse and rbd-nbd
 * mappings are each a daemon in the plugin's own cgroup, measured at 35–38 MiB apiece for rbd-fuse
 * (rbd-nbd is taken to cost the same; it is not measurable on these machines). So the limit is what
 * the memory limit leaves after the plugin itself, divided by that, capped by --max-volumes-per-node.
 */
export const MAPPING_MIB: Record<MapperKind, number> = { krbd: 0, nbd: 38, fuse: 38 };
/** The plugin's own share (Node, gRPC, the stage records) with room to spare. */
export const PLUGIN_RESERVE_MIB = 160;

/** The memory limit of this process's cgroup (v2, then v1), or the host's memory when there is none. */
export async function memoryLimitMiB(read: (p: string) => Promise<string> = (p) => readFile(p, 'utf8')): Promise<number> {
  const tries = ['/sys/fs/cgroup/memory.max', '/sys/fs/cgroup/memory/memory.limit_in_bytes'];
  const host = await read('/proc/meminfo')
    .then((t) => Number(/^MemTotal:\s+(\d+) kB/m.exec(t)?.[1] ?? NaN) / 1024)
    .catch(() => NaN);
  for (const p of tries) {
    const v = (await read(p).catch(() => '')).trim();
    if (!v || v === 'max') continue;
    const mib = Number(v) / (1024 * 1024);
    // cgroup v1 says "no limit" with a huge number
    if (Number.isFinite(mib) && (!Number.isFinite(host) || mib < host)) return Math.floor(mib);
  }
  return Number.isFinite(host) ? Math.floor(host) : Number.POSITIVE_INFINITY;
}

/** max_volumes_per_node for a mapper under a memory limit, at most `cap`; never below 1. */
export function volumeLimit(mapper: MapperKind, memoryMiB: number, cap: number): { limit: number; why: string } {
  const per = MAPPING_MIB[mapper];
  if (!per) return { limit: cap, why: `${mapper} mappings live in the kernel: --max-volumes-per-node (${cap})` };
  const fits = Math.max(1, Math.floor((memoryMiB - PLUGIN_RESERVE_MIB) / per));
  if (fits >= cap) return { limit: cap, why: `--max-volumes-per-node (${cap}); ${fits} ${mapper} mappings of ~${per} MiB would fit in ${memoryMiB} MiB` };
  return { limit: fits, why: `${fits} ${mapper} mappings of ~${per} MiB fit in the ${memoryMiB} MiB memory limit (${PLUGIN_RESERVE_MIB} MiB kept for the plugin); --max-volumes-per-node is ${cap}` };
}
