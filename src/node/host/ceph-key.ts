import { randomBytes } from 'node:crypto';
import { mkdir, open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { NodeError } from '../errors.js';

export interface KeyringOptions {
  /** Where transient keyrings are written (a 0700 dir under the state dir). */
  tmpDir: string;
  /** --ceph-keyring: used when the node-stage secret carries no key. */
  keyringFile?: string;
}

/**
 * Run `fn` with a keyring file for `client.<user>`: a 0600 file written from the node-stage
 * secret's key and removed as soon as `fn` is done (the mapper has read it by then), else the
 * configured keyring. The key is never put on a command line or in a log.
 */
export async function withKeyring<T>(
  o: KeyringOptions,
  user: string,
  key: string | undefined,
  fn: (keyringFile: string) => Promise<T>,
): Promise<T> {
  if (!key) {
    if (!o.keyringFile)
      throw new NodeError(
        'invalid-argument',
        `no Ceph key for client.${user}: put it in the node-stage secret as userKey (StorageClass csi.storage.k8s.io/node-stage-secret-name) or start the plugin with --ceph-keyring`,
      );
    return fn(o.keyringFile);
  }
  await mkdir(o.tmpDir, { recursive: true, mode: 0o700 });
  const file = join(o.tmpDir, `${randomBytes(8).toString('hex')}.keyring`);
  const fh = await open(file, 'wx', 0o600);
  try {
    await fh.writeFile(`[client.${user}]\n\tkey = ${key}\n`);
  } finally {
    await fh.close();
  }
  try {
    return await fn(file);
  } finally {
    await rm(file, { force: true });
  }
}
