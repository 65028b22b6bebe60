import { mkdirSync, mkdtempSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parse } from 'yaml';

/** Where deploy/local writes the stack's files (the design's STACKUBE_LOCAL). */
export const LOCAL = process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube';
export const CLOUD_CONF = join(LOCAL, 'cloud.conf');
export const CEPH_CONF = join(LOCAL, 'ceph', 'ceph.conf');
export const CEPH_KEYRING = join(LOCAL, 'ceph', 'keyring');

/** A flat secret map deploy/local wrote (secrets/<name>.yaml), as a Kubernetes Secret's stringData. */
export function localSecret(name: string): Record<string, string> {
  return parse(readFileSync(join(LOCAL, 'secrets', `${name}.yaml`), 'utf8')) as Record<string, string>;
}

/** A scratch directory under the stack's base dir, so `deploy/local/down` cleans whatever a failed test left. */
export function scratchDir(prefix: string): string {
  const base = join(LOCAL, 'test-scratch');
  mkdirSync(base, { recursive: true });
  return mkdtempSync(join(base, `${prefix}-`));
}
