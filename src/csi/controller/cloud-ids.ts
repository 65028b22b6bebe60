/**
 * Which cloud a volume or snapshot lives in travels in its CSI id, because the RPCs that come later
 * (Delete, Publish, Expand, snapshots, ControllerGetVolume) carry no StorageClass and only the tenant's
 * Secret, which never chooses a cloud. Ids in the default cloud are Cinder's own; in a named cloud (the
 * StorageClass parameter `cloud`) they are `<cloud>:<Cinder id>`. Cloud names are tame (config.ts
 * CLOUD_NAME) and Cinder's ids are UUIDs, so the first `:` splits them.
 */
export interface CloudRef {
  /** '' for the default cloud. */
  cloud: string;
  /** The id in that cloud's Cinder. */
  id: string;
}

export function splitCloudId(csiId: string | undefined): CloudRef {
  const id = csiId ?? '';
  const at = id.indexOf(':');
  return at > 0 ? { cloud: id.slice(0, at), id: id.slice(at + 1) } : { cloud: '', id };
}

export const joinCloudId = (cloud: string, id: string): string => (cloud && id ? `${cloud}:${id}` : id);
