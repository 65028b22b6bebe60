import { z } from 'zod';
import { DRIVER_NAME } from '../../package-info.js';
import { invalidArgument } from '../../server/errors.js';
import {
  ATTACH_MODES,
  type AttachMode,
  CLOUD_PARAMETER,
  CREATE_PARAMETERS,
  FS_TYPES,
  VOLUME_CONTEXT_KEYS,
} from '../../vocabulary.js';

/** Keys the external-provisioner adds with --extra-create-metadata; recorded on the Cinder volume. */
export const K8S_METADATA_KEYS = [
  'csi.storage.k8s.io/pvc/name',
  'csi.storage.k8s.io/pvc/namespace',
  'csi.storage.k8s.io/pv/name',
] as const;
/** Other keys under this prefix come from Kubernetes sidecars, not users: accepted and ignored. */
export const K8S_PREFIX = 'csi.storage.k8s.io/';

/** Metadata this driver writes on every volume and snapshot it creates. */
export const META = {
  cluster: `${DRIVER_NAME}/cluster`,
  fsType: `${DRIVER_NAME}/fsType`,
  attachMode: `${DRIVER_NAME}/attachMode`,
} as const;

export const name = z.string().trim().min(1, 'must not be empty').max(255, 'must be at most 255 characters');

const createParametersSchema = z
  .object({
    type: name.optional(),
    availability: name.optional(),
    [CLOUD_PARAMETER]: name.optional(),
    fsType: z.enum(FS_TYPES, { message: `must be one of ${FS_TYPES.join(', ')}` }).optional(),
    attachMode: z.enum(ATTACH_MODES, { message: `must be one of ${ATTACH_MODES.join(', ')}` }).default('auto'),
  })
  .strict();

const mutableParametersSchema = z.object({ type: name.optional() }).strict();

export interface CreateParameters {
  type?: string;
  availability?: string;
  fsType?: string;
  attachMode: AttachMode;
  /** PVC/PV names to record as volume metadata. */
  kubernetes: Record<string, string>;
}

export function parseWith<S extends z.ZodType>(
  schema: S,
  params: Record<string, string>,
  field: string,
  known: string,
): z.infer<S> {
  const r = schema.safeParse(params);
  if (r.success) return r.data;
  const problems = r.error.issues.map((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => `unknown parameter "${k}" (this driver takes ${known})`).join('; ')
      : `parameter "${i.path.join('.')}": ${i.message}`,
  );
  throw invalidArgument(`${field}: ${problems.join('; ')}`);
}

/** StorageClass parameters → what CreateVolume does; an unknown key is INVALID_ARGUMENT naming it. */
export function parseCreateParameters(
  params: Record<string, string> | undefined,
  field = 'parameters',
): CreateParameters {
  const own: Record<string, string> = {};
  const kubernetes: Record<string, string> = {};
  for (const [k, v] of Object.entries(params ?? {})) {
    if ((K8S_METADATA_KEYS as readonly string[]).includes(k)) kubernetes[k] = v;
    else if (!k.startsWith(K8S_PREFIX)) own[k] = v;
  }
  return { ...parseWith(createParametersSchema, own, field, CREATE_PARAMETERS.join(', ')), kubernetes };
}

/** VolumeAttributesClass parameters: only `type` (a Cinder retype) can change on a live volume. */
export function parseMutableParameters(
  params: Record<string, string> | undefined,
  field = 'mutable_parameters',
): { type?: string } {
  return parseWith(mutableParametersSchema, params ?? {}, field, 'type');
}

/** The volume_context of a volume: set once at creation, read back from its metadata later. */
export function volumeContextOf(p: Pick<CreateParameters, 'fsType' | 'attachMode'>): Record<string, string> {
  return {
    ...(p.fsType ? { [VOLUME_CONTEXT_KEYS.fsType]: p.fsType } : {}),
    [VOLUME_CONTEXT_KEYS.attachMode]: p.attachMode,
  };
}

/** Cinder metadata for a new volume: cluster, volume_context and the PVC/PV it serves. */
export function volumeMetadata(clusterId: string, p: CreateParameters): Record<string, string> {
  return {
    [META.cluster]: clusterId,
    ...(p.fsType ? { [META.fsType]: p.fsType } : {}),
    [META.attachMode]: p.attachMode,
    ...p.kubernetes,
  };
}
