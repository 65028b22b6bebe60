import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadPackageDefinition, type ServiceClientConstructor } from '@grpc/grpc-js';
import { fromJSON } from '@grpc/proto-loader';
import { PACKAGE_ROOT } from '../package-info.js';

/** How messages look in JS: snake_case fields as in the spec, enum names, defaults filled, int64 as number. */
export const PROTO_OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true } as const;

export const CSI_PROTO_DIR = join(PACKAGE_ROOT, 'proto');

export const CSI_SERVICES = ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const;
export type CsiServiceName = (typeof CSI_SERVICES)[number];
type CsiPackage = Record<CsiServiceName, ServiceClientConstructor>;

/** A namespace of protobufjs's JSON descriptor (proto/csi.json, made from csi.proto by `npm run gen`). */
interface JsonNamespace {
  nested?: Record<string, JsonNode>;
}
interface JsonNode extends JsonNamespace {
  fields?: Record<string, { type: string; keyType?: string }>;
  methods?: Record<string, { requestType: string; responseType: string }>;
  values?: Record<string, number>;
}

/**
 * The descriptor cut down to some services and the csi.v1 types they reach (nested types go with
 * their parent; google.protobuf's wrappers stay). proto-loader builds reflection objects for every
 * type it is given, so a node plugin that serves Identity and Node should not pay for Controller's.
 */
export function descriptorFor(json: JsonNamespace, services: readonly CsiServiceName[]): JsonNamespace {
  const v1 = json.nested!.csi!.nested!.v1!.nested!;
  const kept = new Set<string>(services);
  const reach = (node: JsonNode) => {
    const refs = [
      ...Object.values(node.fields ?? {}).map((f) => f.type),
      ...Object.values(node.methods ?? {}).flatMap((m) => [m.requestType, m.responseType]),
    ];
    for (const ref of refs) {
      const top = ref.replace(/^\.?csi\.v1\./, '').split('.')[0]!;
      // a name nested in this node resolves there first, as protobuf resolves it
      if (node.nested?.[top] || !v1[top] || kept.has(top)) continue;
      kept.add(top);
      reach(v1[top]);
    }
    for (const child of Object.values(node.nested ?? {})) reach(child);
  };
  for (const s of services) reach(v1[s]!);
  const nested = Object.fromEntries(Object.entries(v1).filter(([name]) => kept.has(name)));
  return { nested: { ...json.nested, csi: { nested: { v1: { nested } } } } };
}

const loaded = new Map<string, CsiPackage>();

/** The csi.v1 package (spec v1.12.0) with the given services (all by default), loaded once per set. */
export function csiPackage(services: readonly CsiServiceName[] = CSI_SERVICES): CsiPackage {
  const key = [...services].sort().join(',');
  let pkg = loaded.get(key);
  if (!pkg) {
    // read per set, not kept: a process loads one set (the client, all of them) and needs no more
    const descriptor = JSON.parse(readFileSync(join(CSI_PROTO_DIR, 'csi.json'), 'utf8')) as JsonNamespace;
    const definition = fromJSON(descriptorFor(descriptor, services), PROTO_OPTIONS);
    pkg = (loadPackageDefinition(definition) as unknown as { csi: { v1: CsiPackage } }).csi.v1;
    loaded.set(key, pkg);
  }
  return pkg;
}
