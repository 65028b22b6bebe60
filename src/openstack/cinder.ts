import type { CallOptions, CinderSession } from './cinder-session.js';
import { OpenStackError } from './errors.js';

/** An attachment as GET /volumes shows it: only completed ("attached") ones, host_name hidden from tenants. */
export interface VolumeAttachmentSummary {
  attachment_id: string;
  server_id: string | null;
  /** The connector's `mountpoint`; this driver records the node id there (tenants can read it back). */
  device: string | null;
}

export interface CinderVolume {
  id: string;
  name: string | null;
  status: string;
  /** GiB */
  size: number;
  availability_zone: string | null;
  /** The type's name; its id comes too from microversion 3.63. */
  volume_type: string | null;
  volume_type_id?: string;
  multiattach: boolean;
  metadata: Record<string, string>;
  attachments: VolumeAttachmentSummary[];
  snapshot_id: string | null;
  source_volid: string | null;
  created_at: string;
  /** The generic volume group it is in (3.13+). */
  group_id?: string | null;
}

export interface CinderSnapshot {
  id: string;
  name: string | null;
  status: string;
  /** GiB */
  size: number;
  volume_id: string;
  created_at: string;
  metadata: Record<string, string>;
  /** Set on the member snapshots of a group snapshot (3.14+): they are deleted only with it. */
  group_snapshot_id?: string | null;
}

/** A generic volume group (3.13+): volumes of the listed types that can be snapshotted together. */
export interface CinderGroup {
  id: string;
  name: string | null;
  description: string | null;
  /** creating | available | updating | deleting | error | error_deleting */
  status: string;
  /** The group type's id. */
  group_type: string;
  /** Volume type ids. */
  volume_types: string[];
}

/** A group snapshot (3.14+): one member snapshot per volume the group held when it was cut. */
export interface CinderGroupSnapshot {
  id: string;
  name: string | null;
  description: string | null;
  /** creating | available | deleting | error | error_deleting */
  status: string;
  group_id: string;
  group_type_id: string;
  created_at: string;
}

export interface CinderAttachment {
  id: string;
  /** reserved | attaching | attached | detached | error_attaching | error_detaching */
  status: string;
  volume_id: string;
  instance: string | null;
  attach_mode?: 'rw' | 'ro' | 'null';
  connection_info?: Record<string, unknown> | null;
}

/** The host connector Cinder builds connection info for. Never carries instance_uuid (see design.md). */
export interface Connector {
  host: string;
  platform: string;
  os_type: string;
  multipath: boolean;
  initiator: string;
  /** Cinder stores it as the attachment's mountpoint and shows it to tenants as `device`. */
  mountpoint: string;
}

export interface QuotaUsage {
  limit: number;
  in_use: number;
  reserved: number;
}

export interface NewVolume {
  name: string;
  size: number;
  volume_type?: string;
  availability_zone?: string;
  snapshot_id?: string;
  source_volid?: string;
  metadata: Record<string, string>;
}

export interface ListQuery {
  /** Server-side metadata filter (all pairs must match). */
  metadata?: Record<string, string>;
  limit?: number;
  /** Id of the last item of the previous page. */
  marker?: string;
  /** Server-side status filter ("in-use": the volumes with a completed attachment). */
  status?: string;
}

const enc = encodeURIComponent;

/** Cinder's timestamps are UTC, usually written without a zone ("2026-11-25T16:36:09.186964"). */
export function cinderTime(t: string): number {
  return Date.parse(/(Z|[+-]\d\d:?\d\d)$/.test(t) ? t : `${t}Z`);
}

function query(params: Record<string, string | number | undefined>): string {
  const parts = Object.entries(params)
    .filter(([, v]) => v !== undefined && v !== '')
    .map(([k, v]) => `${k}=${enc(String(v))}`);
  return parts.length ? `?${parts.join('&')}` : '';
}

/** Cinder's list filters take metadata as a dict literal. */
const metadataFilter = (m?: Record<string, string>) => (m && Object.keys(m).length ? JSON.stringify(m) : undefined);

/**
 * The Cinder block-storage v3 operations the controller uses, typed, one method per API call,
 * on top of one credential's {@link CinderSession}. No policy here: callers decide what a
 * status or an error means.
 */
export class Cinder {
  constructor(readonly session: CinderSession) {}

  /** One API call; `request` names its kind for the metrics (openstack_api_requests_total{request}). */
  private call<T>(request: string, method: string, path: string, o: CallOptions): Promise<T> {
    return this.session.call<T>(method, path, { ...o, request }).then((r) => r.body);
  }

  /** A call whose 404 means "already gone / not there" rather than an error. */
  private async orAbsent<T>(p: Promise<T>): Promise<T | undefined> {
    try {
      return await p;
    } catch (e) {
      if (e instanceof OpenStackError && e.kind === 'not-found') return undefined;
      throw e;
    }
  }

  // --- volumes ---------------------------------------------------------------------

  async getVolume(id: string, signal?: AbortSignal): Promise<CinderVolume> {
    return (
      await this.call<{ volume: CinderVolume }>('volume_get', 'GET', `/volumes/${enc(id)}`, { expect: [200], signal })
    ).volume;
  }

  findVolume(id: string, signal?: AbortSignal): Promise<CinderVolume | undefined> {
    return this.orAbsent(this.getVolume(id, signal));
  }

  async volumesNamed(name: string, signal?: AbortSignal): Promise<CinderVolume[]> {
    return (
      await this.call<{ volumes: CinderVolume[] }>('volume_list', 'GET', `/volumes/detail${query({ name })}`, {
        expect: [200],
        signal,
      })
    ).volumes;
  }

  /** One page, oldest first, so volumes created while a caller pages through land on later pages. */
  async listVolumes(q: ListQuery, signal?: AbortSignal): Promise<CinderVolume[]> {
    const path = `/volumes/detail${query({ metadata: metadataFilter(q.metadata), status: q.status, limit: q.limit, marker: q.marker, sort: 'created_at:asc,id:asc' })}`;
    return (await this.call<{ volumes: CinderVolume[] }>('volume_list', 'GET', path, { expect: [200], signal }))
      .volumes;
  }

  async createVolume(v: NewVolume, signal?: AbortSignal): Promise<CinderVolume> {
    return (
      await this.call<{ volume: CinderVolume }>('volume_create', 'POST', '/volumes', {
        body: { volume: v },
        expect: [202],
        signal,
      })
    ).volume;
  }

  /** false when the volume was already gone. */
  async deleteVolume(id: string, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.orAbsent(this.call('volume_delete', 'DELETE', `/volumes/${enc(id)}`, { expect: [202], signal }))) !==
      undefined
    );
  }

  /** os-extend; online (in-use) extension needs microversion 3.42, which the session negotiates. */
  async extendVolume(id: string, newSizeGiB: number, signal?: AbortSignal): Promise<void> {
    await this.call('volume_expand', 'POST', `/volumes/${enc(id)}/action`, {
      body: { 'os-extend': { new_size: newSizeGiB } },
      expect: [202],
      signal,
    });
  }

  async retypeVolume(id: string, type: string, signal?: AbortSignal): Promise<void> {
    await this.call('volume_retype', 'POST', `/volumes/${enc(id)}/action`, {
      body: { 'os-retype': { new_type: type, migration_policy: 'on-demand' } },
      expect: [202],
      signal,
    });
  }

  // --- snapshots -------------------------------------------------------------------

  async getSnapshot(id: string, signal?: AbortSignal): Promise<CinderSnapshot> {
    return (
      await this.call<{ snapshot: CinderSnapshot }>('snapshot_get', 'GET', `/snapshots/${enc(id)}`, {
        expect: [200],
        signal,
      })
    ).snapshot;
  }

  findSnapshot(id: string, signal?: AbortSignal): Promise<CinderSnapshot | undefined> {
    return this.orAbsent(this.getSnapshot(id, signal));
  }

  async snapshotsNamed(name: string, signal?: AbortSignal): Promise<CinderSnapshot[]> {
    return (
      await this.call<{ snapshots: CinderSnapshot[] }>('snapshot_list', 'GET', `/snapshots/detail${query({ name })}`, {
        expect: [200],
        signal,
      })
    ).snapshots;
  }

  async listSnapshots(q: ListQuery & { volumeId?: string }, signal?: AbortSignal): Promise<CinderSnapshot[]> {
    const path = `/snapshots/detail${query({ volume_id: q.volumeId, metadata: metadataFilter(q.metadata), limit: q.limit, marker: q.marker, sort: 'created_at:asc,id:asc' })}`;
    return (await this.call<{ snapshots: CinderSnapshot[] }>('snapshot_list', 'GET', path, { expect: [200], signal }))
      .snapshots;
  }

  /** force: RBD snapshots an in-use volume consistently at the image level. */
  async createSnapshot(
    s: { name: string; volume_id: string; metadata: Record<string, string> },
    signal?: AbortSignal,
  ): Promise<CinderSnapshot> {
    return (
      await this.call<{ snapshot: CinderSnapshot }>('snapshot_create', 'POST', '/snapshots', {
        body: { snapshot: { ...s, force: true } },
        expect: [202],
        signal,
      })
    ).snapshot;
  }

  async deleteSnapshot(id: string, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.orAbsent(
        this.call('snapshot_delete', 'DELETE', `/snapshots/${enc(id)}`, { expect: [202], signal }),
      )) !== undefined
    );
  }

  /** Add to (or replace) a snapshot's metadata. */
  async setSnapshotMetadata(id: string, metadata: Record<string, string>, signal?: AbortSignal): Promise<void> {
    await this.call('snapshot_metadata_update', 'POST', `/snapshots/${enc(id)}/metadata`, {
      body: { metadata },
      expect: [200],
      signal,
    });
  }

  // --- generic volume groups and group snapshots (3.13, 3.14) ---------------------------

  /** The group type Cinder's default_group_type names; undefined when it names none. */
  defaultGroupType(signal?: AbortSignal): Promise<{ id: string; name: string } | undefined> {
    return this.orAbsent(
      this.call<{ group_type: { id: string; name: string } }>('group_type_get', 'GET', '/group_types/default', {
        expect: [200],
        signal,
      }).then((r) => r.group_type),
    );
  }

  /** A group type by name or id; undefined when there is none the tenant can see. */
  findGroupType(nameOrId: string, signal?: AbortSignal): Promise<{ id: string; name: string } | undefined> {
    return this.orAbsent(
      this.call<{ group_type: { id: string; name: string } }>(
        'group_type_get',
        'GET',
        `/group_types/${enc(nameOrId)}`,
        { expect: [200], signal },
      ).then((r) => r.group_type),
    );
  }

  async listGroups(signal?: AbortSignal): Promise<CinderGroup[]> {
    return (
      await this.call<{ groups: CinderGroup[] }>('group_list', 'GET', '/groups/detail', { expect: [200], signal })
    ).groups;
  }

  async groupsNamed(name: string, signal?: AbortSignal): Promise<CinderGroup[]> {
    return (
      await this.call<{ groups: CinderGroup[] }>('group_list', 'GET', `/groups/detail${query({ name })}`, {
        expect: [200],
        signal,
      })
    ).groups;
  }

  findGroup(id: string, signal?: AbortSignal): Promise<CinderGroup | undefined> {
    return this.orAbsent(
      this.call<{ group: CinderGroup }>('group_get', 'GET', `/groups/${enc(id)}`, { expect: [200], signal }).then(
        (r) => r.group,
      ),
    );
  }

  async createGroup(
    g: { name: string; description: string; group_type: string; volume_types: string[] },
    signal?: AbortSignal,
  ): Promise<CinderGroup> {
    return (
      await this.call<{ group: CinderGroup }>('group_create', 'POST', '/groups', {
        body: { group: g },
        expect: [202],
        signal,
      })
    ).group;
  }

  /** Volumes in and out of a group (the group is `updating` until done). */
  async updateGroupVolumes(
    id: string,
    change: { add?: string[]; remove?: string[] },
    signal?: AbortSignal,
  ): Promise<void> {
    const group = {
      ...(change.add?.length ? { add_volumes: change.add.join(',') } : {}),
      ...(change.remove?.length ? { remove_volumes: change.remove.join(',') } : {}),
    };
    await this.call('group_update', 'PUT', `/groups/${enc(id)}`, { body: { group }, expect: [202], signal });
  }

  /** The volumes in a group. */
  async groupVolumes(groupId: string, signal?: AbortSignal): Promise<CinderVolume[]> {
    return (
      await this.call<{ volumes: CinderVolume[] }>(
        'volume_list',
        'GET',
        `/volumes/detail${query({ group_id: groupId })}`,
        { expect: [200], signal },
      )
    ).volumes;
  }

  /** Delete an empty group (its volumes are never deleted with it); false when it was already gone. */
  async deleteGroup(id: string, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.orAbsent(
        this.call('group_delete', 'POST', `/groups/${enc(id)}/action`, {
          body: { delete: { 'delete-volumes': false } },
          expect: [202],
          signal,
        }),
      )) !== undefined
    );
  }

  async listGroupSnapshots(signal?: AbortSignal): Promise<CinderGroupSnapshot[]> {
    return (
      await this.call<{ group_snapshots: CinderGroupSnapshot[] }>(
        'group_snapshot_list',
        'GET',
        '/group_snapshots/detail',
        { expect: [200], signal },
      )
    ).group_snapshots;
  }

  async groupSnapshotsNamed(name: string, signal?: AbortSignal): Promise<CinderGroupSnapshot[]> {
    return (
      await this.call<{ group_snapshots: CinderGroupSnapshot[] }>(
        'group_snapshot_list',
        'GET',
        `/group_snapshots/detail${query({ name })}`,
        { expect: [200], signal },
      )
    ).group_snapshots;
  }

  findGroupSnapshot(id: string, signal?: AbortSignal): Promise<CinderGroupSnapshot | undefined> {
    return this.orAbsent(
      this.call<{ group_snapshot: CinderGroupSnapshot }>('group_snapshot_get', 'GET', `/group_snapshots/${enc(id)}`, {
        expect: [200],
        signal,
      }).then((r) => r.group_snapshot),
    );
  }

  async createGroupSnapshot(
    g: { group_id: string; name: string; description: string },
    signal?: AbortSignal,
  ): Promise<CinderGroupSnapshot> {
    return (
      await this.call<{ group_snapshot: CinderGroupSnapshot }>('group_snapshot_create', 'POST', '/group_snapshots', {
        body: { group_snapshot: g },
        expect: [202],
        signal,
      })
    ).group_snapshot;
  }

  /** Deletes its member snapshots with it; false when it was already gone. */
  async deleteGroupSnapshot(id: string, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.orAbsent(
        this.call('group_snapshot_delete', 'DELETE', `/group_snapshots/${enc(id)}`, { expect: [202], signal }),
      )) !== undefined
    );
  }

  // --- attachments (microversion ≥ 3.54 for `mode`) -----------------------------------

  /** Reserve and connect in one call: with a connector, Cinder returns the connection info at once. */
  async createAttachment(
    volumeId: string,
    connector: Connector,
    mode: 'rw' | 'ro',
    signal?: AbortSignal,
  ): Promise<CinderAttachment> {
    const body = { attachment: { volume_uuid: volumeId, connector, mode } };
    return (
      await this.call<{ attachment: CinderAttachment }>('attachment_create', 'POST', '/attachments', {
        body,
        expect: [200],
        signal,
      })
    ).attachment;
  }

  async completeAttachment(id: string, signal?: AbortSignal): Promise<void> {
    await this.call('attachment_complete', 'POST', `/attachments/${enc(id)}/action`, {
      body: { 'os-complete': null },
      expect: [204, 200],
      signal,
    });
  }

  async getAttachment(id: string, signal?: AbortSignal): Promise<CinderAttachment> {
    return (
      await this.call<{ attachment: CinderAttachment }>('attachment_get', 'GET', `/attachments/${enc(id)}`, {
        expect: [200],
        signal,
      })
    ).attachment;
  }

  /** Every attachment of a volume, in any state (GET /volumes shows only completed ones). */
  async volumeAttachments(volumeId: string, signal?: AbortSignal): Promise<CinderAttachment[]> {
    return (
      await this.call<{ attachments: CinderAttachment[] }>(
        'attachment_list',
        'GET',
        `/attachments/detail${query({ volume_id: volumeId })}`,
        { expect: [200], signal },
      )
    ).attachments;
  }

  /** false when it was already gone. */
  async deleteAttachment(id: string, signal?: AbortSignal): Promise<boolean> {
    return (
      (await this.orAbsent(
        this.call('attachment_delete', 'DELETE', `/attachments/${enc(id)}`, { expect: [200, 204], signal }),
      )) !== undefined
    );
  }

  // --- project-wide ------------------------------------------------------------------

  /** The project's quotas with usage: gigabytes, gigabytes_<type>, per_volume_gigabytes, … */
  async quotaUsage(projectId: string, signal?: AbortSignal): Promise<Record<string, QuotaUsage>> {
    const r = await this.call<{ quota_set: Record<string, QuotaUsage | string> }>(
      'quota_get',
      'GET',
      `/os-quota-sets/${enc(projectId)}?usage=true`,
      { expect: [200], signal },
    );
    return Object.fromEntries(
      Object.entries(r.quota_set).filter((e): e is [string, QuotaUsage] => typeof e[1] === 'object' && e[1] !== null),
    );
  }

  /** The volume type Cinder uses when a create names none. */
  async defaultVolumeType(signal?: AbortSignal): Promise<{ id: string; name: string }> {
    return (
      await this.call<{ volume_type: { id: string; name: string } }>('volume_type_get', 'GET', '/types/default', {
        expect: [200],
        signal,
      })
    ).volume_type;
  }

  async availabilityZones(signal?: AbortSignal): Promise<string[]> {
    const r = await this.call<{ availabilityZoneInfo: { zoneName: string; zoneState?: { available?: boolean } }[] }>(
      'availability_zone_list',
      'GET',
      '/os-availability-zone',
      { expect: [200], signal },
    );
    return r.availabilityZoneInfo.filter((z) => z.zoneState?.available !== false).map((z) => z.zoneName);
  }

  /** Cinder's own words on why a volume or snapshot failed: its newest user message about it. */
  async failureReason(resourceId: string, signal?: AbortSignal): Promise<string> {
    try {
      const r = await this.call<{ messages: { user_message: string }[] }>(
        'message_list',
        'GET',
        `/messages${query({ resource_uuid: resourceId, sort: 'created_at:desc' })}`,
        {
          expect: [200],
          signal,
        },
      );
      if (r.messages[0]) return r.messages[0].user_message;
    } catch {
      // the reason is a courtesy; the failure itself is reported either way
    }
    return 'Cinder gave no reason (see the cinder-volume log)';
  }
}
