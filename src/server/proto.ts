import { join } from 'node:path';
import { loadPackageDefinition, type ServiceDefinition } from '@grpc/grpc-js';
import { loadSync } from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../package-info.js';

/** How messages look in JS: snake_case fields as in the spec, enum names, defaults filled, int64 as number. */
export const PROTO_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true } as const;

export const CSI_PROTO_DIR = join(PACKAGE_ROOT, 'proto');

type CsiServiceName = 'Identity' | 'Controller' | 'Node' | 'GroupController' | 'SnapshotMetadata';
type CsiPackage = { csi: { v1: Record<CsiServiceName, { service: ServiceDefinition } & (new (...a: any[]) => any)> } };

let loaded: CsiPackage | undefined;
/** The csi.v1 package from proto/csi.proto (spec v1.12.0), loaded once. */
export function csiPackage(): CsiPackage['csi']['v1'] {
  loaded ??= loadPackageDefinition(loadSync('csi.proto', { ...PROTO_OPTIONS, includeDirs: [CSI_PROTO_DIR] })) as unknown as CsiPackage;
  return loaded.csi.v1;
}
