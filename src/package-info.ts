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
export const VERSION: string = (JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { version: string }).version;
