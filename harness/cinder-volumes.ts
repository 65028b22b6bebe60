import { randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { publishContextFromConnection } from '../src/csi/volume-context.js';
import { CinderSession } from '../src/openstack/cinder-session.js';
import { parseCredential, pickCredentialKeys } from '../src/openstack/credentials.js';
import { HttpClient } from '../src/openstack/http.js';
import { Keystone } from '../src/openstack/keystone.js';
import { CEPH_KEYRING, localSecret } from './local-stack.js';

/** The key of client.cinder from the local keyring (for tests that pass it as a node-stage secret). */
export function cephKey(): string {
  const m = /key\s*=\s*(\S+)/.exec(readFileSync(CEPH_KEYRING, 'utf8'));
  if (!m) throw new Error(`no key in ${CEPH_KEYRING}`);
  return m[1]!;
}

export interface AttachedVolume {
  volumeId: string;
  attachmentId: string;
  /** What ControllerPublishVolume would hand the node. */
  publishContext: Record<string, string>;
}

/**
 * Real Cinder volumes for node tests, made the way ControllerPublishVolume will make them (volume,
 * attachment with a host connector, os-complete) but without depending on the controller. Every
 * volume made is remembered and removed by cleanup(); names carry a random suffix so tests sharing
 * the stack never touch each other's volumes.
 */
export class TestVolumes {
  private readonly made = new Map<string, string[]>();
  private readonly snapshots: string[] = [];
  /** Volumes made from a snapshot: removed before it (RBD keeps a clone's parent snapshot busy). */
  private readonly clones = new Set<string>();
  private count = 0;
  private constructor(
    readonly cinder: CinderSession,
    private readonly http: HttpClient,
    private readonly prefix: string,
  ) {}

  static open(prefix: string, tenant = 'tenant-a'): TestVolumes {
    const credential = parseCredential(pickCredentialKeys(localSecret(tenant)), `secrets/${tenant}.yaml`);
    const http = new HttpClient({ attempts: 3 });
    return new TestVolumes(
      new CinderSession(new Keystone(http), http, credential),
      http,
      `${prefix}-${randomBytes(3).toString('hex')}`,
    );
  }

  /** A new volume (from a snapshot when given), waited until available. */
  async create(sizeGb = 1, name = `${this.prefix}-${this.count++}`, snapshotId?: string): Promise<string> {
    const r = await this.cinder.call<{ volume: { id: string } }>('POST', '/volumes', {
      body: { volume: { size: sizeGb, name, ...(snapshotId ? { snapshot_id: snapshotId } : {}) } },
      expect: [202],
    });
    const id = r.body.volume.id;
    this.made.set(id, []);
    if (snapshotId) this.clones.add(id);
    await this.waitStatus(id, ['available']);
    return id;
  }

  /** A snapshot of a volume, waited until available; removed by cleanup() before the volumes. */
  async snapshot(volumeId: string, name = `${this.prefix}-${this.count++}`): Promise<string> {
    const r = await this.cinder.call<{ snapshot: { id: string } }>('POST', '/snapshots', {
      body: { snapshot: { volume_id: volumeId, name } },
      expect: [202],
    });
    const id = r.body.snapshot.id;
    this.snapshots.push(id);
    await this.waitStatus(id, ['available'], 'snapshots');
    return id;
  }

  /** Attach to a node (Cinder attachments API, as the controller does) and return the publish_context. */
  async attach(volumeId: string, nodeId: string, mode: 'rw' | 'ro' = 'rw'): Promise<AttachedVolume> {
    const connector = {
      host: nodeId,
      platform: 'x86_64',
      os_type: 'linux',
      multipath: false,
      initiator: `iqn.test:${nodeId}`,
      ip: '127.0.0.1',
    };
    const r = await this.cinder.call<{ attachment: { id: string; connection_info: unknown } }>('POST', '/attachments', {
      body: { attachment: { volume_uuid: volumeId, connector, mode } },
      expect: [200, 202],
    });
    const attachmentId = r.body.attachment.id;
    this.made.get(volumeId)?.push(attachmentId);
    await this.cinder.call('POST', `/attachments/${attachmentId}/action`, {
      body: { 'os-complete': null },
      expect: [200, 202, 204],
    });
    // the attachments API returns connection_info flat; publishContextFromConnection reads the nested form
    const ci = r.body.attachment.connection_info as Record<string, unknown>;
    const nested = 'data' in ci ? ci : { driver_volume_type: ci.driver_volume_type, data: ci };
    return {
      volumeId,
      attachmentId,
      publishContext: publishContextFromConnection(nested, attachmentId, mode, volumeId),
    };
  }

  async createAttached(nodeId: string, sizeGb = 1): Promise<AttachedVolume> {
    return this.attach(await this.create(sizeGb), nodeId);
  }

  /** Grow a volume through Cinder (os-extend; in-use needs microversion 3.42), waited until it shows the size. */
  async extend(volumeId: string, newSizeGb: number): Promise<void> {
    await this.cinder.call('POST', `/volumes/${volumeId}/action`, {
      body: { 'os-extend': { new_size: newSizeGb } },
      expect: [202],
    });
    const until = Date.now() + 60_000;
    for (;;) {
      const v = (await this.cinder.call<{ volume: { size: number; status: string } }>('GET', `/volumes/${volumeId}`))
        .body.volume;
      if (v.size >= newSizeGb && !v.status.includes('extending')) return;
      if (v.status.startsWith('error') || Date.now() > until)
        throw new Error(`volume ${volumeId} did not grow to ${newSizeGb} GiB (status ${v.status}, size ${v.size})`);
      await sleep(200);
    }
  }

  private async waitStatus(id: string, want: string[], kind: 'volumes' | 'snapshots' = 'volumes'): Promise<void> {
    const until = Date.now() + 60_000;
    for (;;) {
      const body = (await this.cinder.call<Record<string, { status: string }>>('GET', `/${kind}/${id}`)).body;
      const status = Object.values(body)[0]!.status;
      if (want.includes(status)) return;
      if (status.startsWith('error') || Date.now() > until)
        throw new Error(`${kind.slice(0, -1)} ${id} is ${status}, not ${want.join('/')}`);
      await sleep(100);
    }
  }

  /** Delete the attachments and the volume; one already gone is fine. */
  async remove(volumeId: string): Promise<void> {
    for (const a of this.made.get(volumeId) ?? [])
      await this.cinder.call('DELETE', `/attachments/${a}`, { expect: [200, 202, 204, 404] });
    await this.waitStatus(volumeId, ['available']).catch(() => undefined);
    await this.cinder.call('DELETE', `/volumes/${volumeId}`, { expect: [202, 204, 404] });
    this.made.delete(volumeId);
  }

  /**
   * A volume this instance did not make (found by name): its attachments as Cinder lists them, then it, waited until
   * gone.
   */
  async removeFound(volumeId: string): Promise<void> {
    const attachments = (
      await this.cinder.call<{ attachments: { id: string }[] }>('GET', `/attachments?volume_id=${volumeId}`)
    ).body.attachments;
    for (const a of attachments)
      await this.cinder.call('DELETE', `/attachments/${a.id}`, { expect: [200, 202, 204, 404] });
    await this.waitStatus(volumeId, ['available', 'error']).catch(() => undefined);
    await this.cinder.call('DELETE', `/volumes/${volumeId}`, { expect: [202, 204, 404] });
    const until = Date.now() + 60_000;
    while ((await this.cinder.call('GET', `/volumes/${volumeId}`, { expect: [200, 404] })).status !== 404) {
      if (Date.now() > until) throw new Error(`volume ${volumeId} is still there a minute after its deletion`);
      await sleep(200);
    }
  }

  async removeSnapshot(id: string): Promise<void> {
    await this.cinder.call('DELETE', `/snapshots/${id}`, { expect: [202, 204, 404] });
    const until = Date.now() + 60_000;
    while ((await this.cinder.call('GET', `/snapshots/${id}`, { expect: [200, 404] })).status !== 404) {
      if (Date.now() > until) throw new Error(`snapshot ${id} is still there a minute after its deletion`);
      await sleep(200);
    }
  }

  /** Remove every snapshot and volume this instance made (clones first), then close the HTTP pool. */
  async cleanup(): Promise<void> {
    const errors: string[] = [];
    for (const id of [...this.clones].filter((c) => this.made.has(c)))
      await this.remove(id).catch((e: Error) => errors.push(`${id}: ${e.message}`));
    this.clones.clear();
    for (const id of this.snapshots.splice(0))
      await this.removeSnapshot(id).catch((e: Error) => errors.push(`snapshot ${id}: ${e.message}`));
    for (const id of [...this.made.keys()])
      await this.remove(id).catch((e: Error) => errors.push(`${id}: ${e.message}`));
    await this.http.close();
    if (errors.length) throw new Error(`could not remove test volumes: ${errors.join('; ')}`);
  }
}
