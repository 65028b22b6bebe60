import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';
import { PACKAGE_ROOT } from '../src/package-info.js';
import { trimTrailingSlashes } from '../src/text.js';

/** Where deploy/local writes the stack's files (the design's STACKUBE_LOCAL). */
export const LOCAL = trimTrailingSlashes(process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube') || '/';

/** deploy/local/layout.env: the stack's layout, shared with its bash and Python. */
function layout(): Record<string, string> {
  const out: Record<string, string> = {};
  for (const line of readFileSync(join(PACKAGE_ROOT, 'deploy/local/layout.env'), 'utf8').split('\n')) {
    const at = line.indexOf('=');
    const key = line.slice(0, at);
    if (at > 0 && /^[A-Z_]+$/.test(key)) out[key] = line.slice(at + 1).replaceAll('${BASE}', LOCAL);
  }
  return out;
}

export const STACK = layout();
export const CLOUD_CONF = STACK.CLOUD_CONF!;
export const CEPH_CONF = STACK.CEPH_CONF!;
export const CEPH_KEYRING = STACK.CEPH_KEYRING!;
/** The controller's read-only Ceph identity (SnapshotMetadata); CEPH_CONF names its keyring. */
export const CEPH_CONTROLLER_ID = STACK.CEPH_CONTROLLER_ID!;
export const CEPH_FENCING_ID = STACK.CEPH_FENCING_ID!;

/** A flat secret map deploy/local wrote (secrets/<name>.yaml), as a Kubernetes Secret's stringData. */
export function localSecret(name: string): Record<string, string> {
  return parse(readFileSync(join(STACK.SECRETS!, `${name}.yaml`), 'utf8')) as Record<string, string>;
}

/** A scratch directory under the stack's base dir, so `deploy/local/down` cleans whatever a failed test left. */
export function scratchDir(prefix: string): string {
  mkdirSync(STACK.SCRATCH!, { recursive: true });
  return mkdtempSync(join(STACK.SCRATCH!, `${prefix}-`));
}
