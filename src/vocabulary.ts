/**
 * The words volumes are described with, in one host-free place that the controller, the node, the
 * deploy tests and the docs' consistency tests all import: filesystems, access modes, attach modes and
 * the keys of the maps that travel between the CO, the controller and the node.
 */

/** Filesystems the node makes and mounts; a capability naming none gets what the device holds, else ext4. */
export const FS_TYPES = ['ext4', 'ext3', 'xfs'] as const;
export type FsType = (typeof FS_TYPES)[number];
export const DEFAULT_FS_TYPE: FsType = 'ext4';
export const isFsType = (fs: string): fs is FsType => (FS_TYPES as readonly string[]).includes(fs);

/** How a filesystem volume reaches a pod (volume_context `attachMode`, from the StorageClass). */
export const ATTACH_MODES = ['auto', 'filesystem', 'passthrough'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];

/**
 * The CSI access modes and what each means here: whether several nodes may have the volume, whether
 * it is read-only, and whether one node may publish it once only (the spec's non-MULTI_NODE modes, but
 * SINGLE_NODE_MULTI_WRITER; UNKNOWN as strictly as the strictest).
 */
export const ACCESS_MODES = {
  UNKNOWN: { multiNode: false, readOnly: false, onePublishPerNode: true },
  SINGLE_NODE_WRITER: { multiNode: false, readOnly: false, onePublishPerNode: true },
  SINGLE_NODE_READER_ONLY: { multiNode: false, readOnly: true, onePublishPerNode: true },
  SINGLE_NODE_SINGLE_WRITER: { multiNode: false, readOnly: false, onePublishPerNode: true },
  SINGLE_NODE_MULTI_WRITER: { multiNode: false, readOnly: false, onePublishPerNode: false },
  MULTI_NODE_READER_ONLY: { multiNode: true, readOnly: true, onePublishPerNode: false },
  MULTI_NODE_SINGLE_WRITER: { multiNode: true, readOnly: false, onePublishPerNode: false },
  MULTI_NODE_MULTI_WRITER: { multiNode: true, readOnly: false, onePublishPerNode: false },
} as const;
export type AccessMode = keyof typeof ACCESS_MODES;
const traits = (mode: string) => ACCESS_MODES[mode as AccessMode] ?? ACCESS_MODES.UNKNOWN;
export const isMultiNodeMode = (mode: string) => traits(mode).multiNode;
export const isReadOnlyMode = (mode: string) => traits(mode).readOnly;
/** Modes in which several nodes write: a filesystem would be corrupted, so only block access serves them. */
export const isMultiNodeWriteMode = (mode: string) => traits(mode).multiNode && !traits(mode).readOnly;
export const allowsOnePublishPerNode = (mode: string) => traits(mode).onePublishPerNode;

/** Keys of volume_context that CreateVolume sets from StorageClass parameters. */
export const VOLUME_CONTEXT_KEYS = { fsType: 'fsType', attachMode: 'attachMode' } as const;

/** StorageClass parameters of this driver (keys under csi.storage.k8s.io/ are the sidecars'). */
export const CREATE_PARAMETERS = [
  'type',
  'availability',
  VOLUME_CONTEXT_KEYS.fsType,
  VOLUME_CONTEXT_KEYS.attachMode,
  'cloud',
] as const;
/**
 * The StorageClass parameter that puts a volume in a configured cloud other than the default (the operator's choice).
 */
export const CLOUD_PARAMETER = 'cloud';

/**
 * The contract between ControllerPublishVolume (writes publish_context) and the node (reads it):
 * everything the node needs to map the RBD image.
 */
export const PUBLISH_CONTEXT_KEYS = {
  pool: 'rbdPool',
  image: 'rbdImage',
  monitors: 'rbdMonitors',
  user: 'rbdUser',
  cluster: 'rbdCluster',
  attachmentId: 'attachmentId',
  accessMode: 'accessMode',
  /** The volume this was published for: the node refuses to stage it as another volume. */
  volumeId: 'volumeId',
} as const;

/**
 * Keys of the node-stage secret, named as ceph-csi names them so one Secret serves both drivers:
 * `userKey` is the Ceph key, `userID` (optional) the Ceph user when it is not publish_context's.
 */
export const NODE_STAGE_SECRET_KEYS = { user: 'userID', key: 'userKey' } as const;
