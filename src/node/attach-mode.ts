/** How a filesystem volume reaches a pod (volume_context `attachMode`, from the StorageClass). */
export const ATTACH_MODES = ['auto', 'filesystem', 'passthrough'] as const;
export type AttachMode = (typeof ATTACH_MODES)[number];
