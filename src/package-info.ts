import { existsSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** The folder holding package.json and proto/, whether running from src/ (tests) or dist/src/ (built). */
export const PACKAGE_ROOT = (() => {
  let dir = dirname(fileURLToPath(import.meta.url));
  while (!existsSync(join(dir, 'package.json')) || !existsSync(join(dir, 'proto'))) {
    const up = dirname(dir);
    if (up === dir) throw new Error('cannot find the stackube-csi package root (package.json beside proto/)');
    dir = up;
  }
  return dir;
})();

export const DRIVER_NAME = 'cinder.csi.stackube.io';
export const TOPOLOGY_ZONE_KEY = 'topology.cinder.csi.stackube.io/zone';
const manifest = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as {
  version: string;
  stackube: { nodeFlags: string[] };
};
export const VERSION: string = manifest.version;
/**
 * The V8 flags the driver runs with (the image's launcher, npm start, the benchmarks), measured in
 * bench/server-basics.ts: a 1 MiB young generation (Node 24 lets it grow to 128 MiB under a stream of
 * small RPCs, and never gives it back), size over speed in the compilers, no concurrent compiler and GC
 * threads (their malloc arenas keep what they once used).
 */
export const NODE_FLAGS: readonly string[] = manifest.stackube.nodeFlags;
