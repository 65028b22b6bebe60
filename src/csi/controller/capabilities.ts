import { invalidArgument } from '../../server/errors.js';
import { FS_TYPES, isFsType, isMultiNodeMode, isReadOnlyMode } from '../../vocabulary.js';
import type { VolumeCapability__Output } from '../generated/csi/v1/VolumeCapability.js';

export const isMultiNode = (c: VolumeCapability__Output) => isMultiNodeMode(c.access_mode!.mode);
export const isReadOnly = (c: VolumeCapability__Output) => isReadOnlyMode(c.access_mode!.mode);
export const isBlock = (c: VolumeCapability__Output | null | undefined) => c?.access_type === 'block';

/** A capability the CO sent must say how (block or mount) and with which access mode. */
export function checkCapability(
  c: VolumeCapability__Output | null | undefined,
  field: string,
): VolumeCapability__Output {
  if (!c) throw invalidArgument(`${field} is required`);
  if (c.access_type !== 'block' && c.access_type !== 'mount')
    throw invalidArgument(`${field}: access_type (block or mount) is required`);
  if (!c.access_mode || c.access_mode.mode === 'UNKNOWN') throw invalidArgument(`${field}: access_mode is required`);
  return c;
}

export function checkCapabilities(
  caps: VolumeCapability__Output[] | undefined,
  field = 'volume_capabilities',
): VolumeCapability__Output[] {
  if (!caps?.length) throw invalidArgument(`${field} is required: at least one capability`);
  return caps.map((c, i) => checkCapability(c, `${field}[${i}]`));
}

/**
 * Why this driver cannot serve a capability, or undefined when it can. A Cinder volume reaches
 * several nodes only when its type is multiattach, and then only as a raw block device or read-only:
 * a filesystem mounted read-write on two hosts would be corrupted.
 */
export function unsupportedReason(c: VolumeCapability__Output, volume?: { multiattach: boolean }): string | undefined {
  const mode = c.access_mode!.mode;
  if (c.access_type === 'mount') {
    const fs = c.mount?.fs_type ?? '';
    if (fs && !isFsType(fs)) return `fs_type "${fs.slice(0, 40)}" is not supported (use one of ${FS_TYPES.join(', ')})`;
    if (isMultiNode(c) && mode !== 'MULTI_NODE_READER_ONLY')
      return `${mode} needs access_type block: a filesystem cannot be mounted writable on several nodes`;
  }
  if (isMultiNode(c) && volume && !volume.multiattach)
    return `${mode} needs a multiattach volume (a Cinder volume type with multiattach="<is> True"); this volume is not`;
  return undefined;
}
