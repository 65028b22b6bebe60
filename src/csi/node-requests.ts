import { isAbsolute, resolve } from 'node:path';
import { z } from 'zod';
import { trimTrailingSlashes } from '../text.js';
import type { AccessType, VolumeUse } from '../node/volumes/types.js';
import { isContextFlag } from '../node/host/selinux.js';
import { failedPrecondition, invalidArgument, type CsiError } from '../server/errors.js';
import type { VolumeCapability__Output } from './generated/csi/v1/VolumeCapability.js';
import {
  ATTACH_MODES,
  type AttachMode,
  FS_TYPES,
  isFsType,
  isMultiNodeWriteMode,
  NODE_STAGE_SECRET_KEYS,
  VOLUME_CONTEXT_KEYS,
} from '../vocabulary.js';

/** A required field, INVALID_ARGUMENT naming it when absent. */
export function required(value: string | undefined, field: string): string {
  if (!value) throw invalidArgument(`${field} is required`);
  return value;
}

/**
 * A path from the CO: absolute, normalised, and inside the kubelet root (as configured, or its
 * resolved form when it is a symlink). This is the check on the words; the node layer then checks the
 * resolved path before it creates or mounts anything (symlinks under the root are pods' to make).
 */
export function kubeletPath(
  value: string | undefined,
  field: string,
  kubeletRoot: string | readonly string[],
  missing: (m: string) => CsiError = invalidArgument,
): string {
  if (!value) throw missing(`${field} is required`);
  if (!isAbsolute(value) || resolve(value) !== (trimTrailingSlashes(value) || '/'))
    throw invalidArgument(`${field} "${value.slice(0, 200)}" must be a normalised absolute path`);
  const path = resolve(value);
  const roots = (typeof kubeletRoot === 'string' ? [kubeletRoot] : kubeletRoot).map((r) => resolve(r));
  if (!roots.some((root) => path.startsWith(`${root}/`)))
    throw invalidArgument(
      `${field} ${path.slice(0, 200)} is outside the kubelet root ${roots[0]} (set --kubelet-root if kubelet uses another)`,
    );
  return path;
}

const plainFlag = z
  .string()
  .regex(
    /^[A-Za-z0-9_.=:/,+@-]+$/,
    'mount flags may hold letters, digits and _ . = : / , + @ - (an SELinux context="user:role:type:level" also quotes)',
  )
  .refine(
    (f) => !f.split(',').some((o) => ['bind', 'rbind', 'remount', 'move', 'loop'].includes(o)),
    'bind, rbind, remount, move and loop are not mount flags a CO may pass',
  )
  .refine(
    (f) => !f.split(',').some((o) => o.startsWith('context=')),
    'an SELinux context= is a flag of its own, with a label user:role:type:level',
  );
/** A mount flag: plain options, or kubelet's SELinux context="…" (seLinuxMount), one per flag. */
const mountFlag = z.union([z.string().refine(isContextFlag), plainFlag]);

/**
 * The volume capability → how the volume is used. fsType falls back to the volume_context's (the
 * StorageClass's) when the capability names none; a filesystem written from several nodes at once
 * would be corrupted, so multi-node write modes are refused for mount access.
 */
export function volumeUse(
  cap: VolumeCapability__Output | null | undefined,
  volumeContext: Record<string, string> | undefined,
): VolumeUse {
  if (!cap) throw invalidArgument('volume_capability is required');
  const accessMode = cap.access_mode?.mode;
  if (!accessMode || accessMode === 'UNKNOWN') throw invalidArgument('volume_capability.access_mode is required');
  const accessType: AccessType | undefined = cap.block ? 'block' : cap.mount ? 'mount' : undefined;
  if (!accessType) throw invalidArgument('volume_capability needs an access type: block or mount');
  if (accessType === 'block') return { accessType, accessMode, mountFlags: [] };

  if (isMultiNodeWriteMode(accessMode))
    throw failedPrecondition(
      `access mode ${accessMode} with a filesystem is not supported: ext4 and xfs cannot be written from several nodes at once (use block access)`,
    );
  const mount = cap.mount!;
  const fsType = mount.fs_type || volumeContext?.[VOLUME_CONTEXT_KEYS.fsType] || undefined;
  if (fsType && !isFsType(fsType))
    throw invalidArgument(`fsType "${fsType.slice(0, 40)}" is not supported; use one of ${FS_TYPES.join(', ')}`);
  const flags = z.array(mountFlag).safeParse(mount.mount_flags ?? []);
  if (!flags.success) {
    const issue = flags.error.issues[0];
    const why = issue?.code === 'invalid_union' ? issue.errors.flat().at(-1)?.message : issue?.message;
    throw invalidArgument(`volume_capability.mount.mount_flags: ${why}`);
  }
  if (flags.data.filter(isContextFlag).length > 1)
    throw invalidArgument('volume_capability.mount.mount_flags: more than one SELinux context=');
  let mountGroup: number | undefined;
  if (mount.volume_mount_group) {
    mountGroup = Number(mount.volume_mount_group);
    if (!/^\d{1,10}$/.test(mount.volume_mount_group) || mountGroup > 0xfffffffe)
      throw invalidArgument(`volume_mount_group "${mount.volume_mount_group}" must be a numeric group id`);
  }
  const attachMode = (volumeContext?.[VOLUME_CONTEXT_KEYS.attachMode] || 'auto') as AttachMode;
  if (!ATTACH_MODES.includes(attachMode))
    throw invalidArgument(
      `volume_context attachMode "${attachMode.slice(0, 40)}" must be one of ${ATTACH_MODES.join(', ')}`,
    );
  return { accessType, accessMode, fsType, mountFlags: flags.data, mountGroup, attachMode };
}

const secretSchema = z.object({
  [NODE_STAGE_SECRET_KEYS.user]: z
    .string()
    .regex(/^[\w.-]{1,64}$/, 'must be a Ceph user name without "client."')
    .optional(),
  // base64 only: a newline would let a secret write other sections into the keyring file
  [NODE_STAGE_SECRET_KEYS.key]: z
    .string()
    .regex(/^[A-Za-z0-9+/]{16,256}={0,2}$/, 'must be a base64 Ceph key (ceph auth get-key)')
    .optional(),
});

/**
 * The node-stage secret → Ceph user and key; the message names the key, never a value. A userID comes
 * with its userKey or not at all: alone it would pick another identity out of the node's own keyring.
 */
export function stageCredentials(secrets: Record<string, string> | undefined): { user?: string; key?: string } {
  const r = secretSchema.safeParse(secrets ?? {});
  if (!r.success)
    throw invalidArgument(
      `node-stage secret: ${r.error.issues.map((i) => `${i.path.join('.')} ${i.message}`).join('; ')}`,
    );
  const user = r.data[NODE_STAGE_SECRET_KEYS.user];
  const key = r.data[NODE_STAGE_SECRET_KEYS.key];
  if (user && !key)
    throw invalidArgument(
      `node-stage secret: ${NODE_STAGE_SECRET_KEYS.user} without ${NODE_STAGE_SECRET_KEYS.key}: the node's keyring serves only the Ceph user the controller names; give the key too, or leave ${NODE_STAGE_SECRET_KEYS.user} out`,
    );
  return { user, key };
}
