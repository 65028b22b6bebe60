import { randomBytes } from 'node:crypto';
import { setTimeout as sleep } from 'node:timers/promises';
import { loadConfig } from '../src/config.js';
import { Cinder } from '../src/openstack/cinder.js';
import { CinderSession } from '../src/openstack/cinder-session.js';
import { parseCredential } from '../src/openstack/credentials.js';
import { HttpClient } from '../src/openstack/http.js';
import { Keystone } from '../src/openstack/keystone.js';
import { CLOUD_CONF, localSecret } from './local-stack.js';

/** A name prefix unique to one test file's run: everything it creates starts with it, cleanup removes only that. */
export const uniquePrefix = (area: string) => `${area}-${randomBytes(3).toString('hex')}-`;

export interface DirectCinder {
  cinder: Cinder;
  http: HttpClient;
  close(): Promise<void>;
}

/**
 * Cinder as deploy/local's cloud.conf tenant (tenant-a), straight through the OpenStack layer: to check and clean up.
 */
export async function directCinder(onRequest?: (method: string, url: string) => void): Promise<DirectCinder> {
  const config = await loadConfig({ config: CLOUD_CONF, mode: 'controller' }, {});
  const http = new HttpClient({ onRequest });
  const cinder = new Cinder(new CinderSession(new Keystone(http), http, config.credential!));
  return { cinder, http, close: () => http.close() };
}

/**
 * Remove every attachment, snapshot and volume whose name starts with `prefix` (and the attachments
 * of those volumes), retrying for dependencies (a snapshot with clones, a volume with snapshots).
 * Returns what could not be removed, so a test can fail loudly instead of leaking silently.
 */
export async function removeByPrefix(cinder: Cinder, prefix: string, timeoutMs = 60_000): Promise<string[]> {
  const until = Date.now() + timeoutMs;
  for (;;) {
    const volumes = (await cinder.listVolumes({})).filter((v) => v.name?.startsWith(prefix));
    const snapshots = (await cinder.listSnapshots({})).filter((s) => s.name?.startsWith(prefix));
    // group snapshots named with the prefix, groups with it anywhere in their name (the driver's name theirs after the
    // cluster id)
    const groupSnapshots = (await cinder.listGroupSnapshots()).filter((g) => g.name?.startsWith(prefix));
    const groups = (await cinder.listGroups()).filter((g) => g.name?.includes(prefix));
    const left = [
      ...volumes.map((v) => `volume ${v.name} ${v.id} (${v.status})`),
      ...snapshots.map((s) => `snapshot ${s.name} ${s.id} (${s.status})`),
      ...groupSnapshots.map((g) => `group snapshot ${g.name} ${g.id} (${g.status})`),
      ...groups.map((g) => `group ${g.name} ${g.id} (${g.status})`),
    ];
    if (!left.length || Date.now() > until) return left;
    for (const g of groupSnapshots)
      if (g.status !== 'deleting') await cinder.deleteGroupSnapshot(g.id).catch(() => undefined);
    for (const g of groups) {
      const inside = (await cinder.groupVolumes(g.id)).map((v) => v.id);
      if (inside.length) await cinder.updateGroupVolumes(g.id, { remove: inside }).catch(() => undefined);
      else if (!groupSnapshots.length && g.status !== 'deleting') await cinder.deleteGroup(g.id).catch(() => undefined);
    }
    for (const v of volumes)
      for (const a of await cinder.volumeAttachments(v.id)) await cinder.deleteAttachment(a.id).catch(() => undefined);
    for (const s of snapshots)
      if (s.status !== 'deleting' && !s.group_snapshot_id) await cinder.deleteSnapshot(s.id).catch(() => undefined);
    for (const v of volumes) if (v.status !== 'deleting') await cinder.deleteVolume(v.id).catch(() => undefined);
    await sleep(300);
  }
}

/**
 * Cinder as the credential of a deploy/local secrets file: `tenant-b` to look at (and clean up) another
 * tenant's volumes, `admin` for what a tenant cannot do (making the volume types some tests need).
 */
export async function secretCinder(name: string): Promise<DirectCinder> {
  const http = new HttpClient();
  const credential = parseCredential(localSecret(name), `${name}.yaml`);
  const cinder = new Cinder(new CinderSession(new Keystone(http), http, credential));
  return { cinder, http, close: () => http.close() };
}

export const adminCinder = () => secretCinder('admin');

/** Create a public volume type on deploy/local's ceph backend; returns its id. */
export async function createVolumeType(
  admin: Cinder,
  name: string,
  extraSpecs: Record<string, string> = {},
): Promise<string> {
  const r = await admin.session.call<{ volume_type: { id: string } }>('POST', '/types', {
    body: {
      volume_type: {
        name,
        'os-volume-type-access:is_public': true,
        extra_specs: { volume_backend_name: 'ceph', ...extraSpecs },
      },
    },
    expect: [200],
  });
  return r.body.volume_type.id;
}

export async function deleteVolumeType(admin: Cinder, id: string): Promise<void> {
  await admin.session.call('DELETE', `/types/${id}`, { expect: [202, 404] });
}
