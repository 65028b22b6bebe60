import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { loadSync } from '@grpc/proto-loader';
import { status } from '@grpc/grpc-js';
import { removeByPrefix } from '../../harness/cinder.js';
import { startTestDriver, type TestDriver } from '../../harness/driver.js';
import { CEPH_CONF, CEPH_KEYRING, scratchDir } from '../../harness/local-stack.js';
import { forceCleanup, nodeLeaks } from '../../harness/node-leaks.js';
import { CSI_PROTO_DIR, PROTO_OPTIONS } from '../../src/server/proto.js';
import { directCinder } from '../../harness/cinder.js';
import { META } from '../../src/csi/controller/parameters.js';

/**
 * Every RPC of every service, called with requests built from the proto's own descriptors and
 * filled with hostile values (oversized strings, traversal paths, NULs, huge maps, wrong shapes), on
 * the real stack with a controller and a node plugin in one driver: no answer is INTERNAL or UNKNOWN,
 * every answer comes within the deadline, and the driver serves normally afterwards, having left no
 * volume, mount, loop device or process behind. A seeded generator keeps each run the same.
 */
const CASES_PER_RPC = 24;
const DEADLINE_MS = 20_000;
const base = scratchDir('fuzz');
const kubeletRoot = join(base, 'kubelet');
const stateDir = join(base, 'state');
mkdirSync(kubeletRoot, { recursive: true });
const prefix = `fuzz-${process.pid}-`;
const clusterId = `fuzz-${process.pid}`;

let driver: TestDriver;
beforeAll(async () => {
  driver = await startTestDriver({
    mode: 'all',
    options: {
      nodeId: 'fuzz-node',
      kubeletRoot,
      stateDir,
      rbdMapper: 'fuse',
      cephConf: CEPH_CONF,
      cephKeyring: CEPH_KEYRING,
      controllerCephConf: CEPH_CONF,
      clusterId,
    },
    logLevel: 'info',
  });
});
afterAll(async () => {
  await driver?.stop();
  forceCleanup(base);
});

/** mulberry32: small, seeded, good enough to pick fuzz values. */
function rng(seed: number) {
  return () => {
    seed |= 0;
    seed = (seed + 0x6d2b79f5) | 0;
    let t = Math.imul(seed ^ (seed >>> 15), 1 | seed);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

interface Field {
  name: string;
  type: string;
  label: string;
  typeName: string;
}
interface Descriptor {
  name: string;
  field: Field[];
  nestedType?: Descriptor[];
  options?: { mapEntry?: boolean } | null;
}

const pkg = loadSync('csi.proto', { ...PROTO_OPTIONS, includeDirs: [CSI_PROTO_DIR] });
const messages = new Map<string, Descriptor>();
for (const [name, def] of Object.entries(pkg)) {
  const d = def as { type?: Descriptor; format?: string };
  if (d.format?.startsWith('Protocol Buffer') && d.type) messages.set(name, d.type);
}
const lookup = (typeName: string) => messages.get(typeName.replace(/^\./, ''));

/** Half the requests stay within the size limits, so they reach the handlers instead of the size check. */
let oversized = true;

function strings(r: () => number): string {
  const small = [
    () => '',
    () => 'x'.repeat(129),
    () => 'x'.repeat(1 << 20),
    () => '../../../../etc',
    () => `${kubeletRoot}/../../etc`,
    () => `${kubeletRoot}/pods/${Math.floor(r() * 1e6)}/mount`,
    () => 'a\u0000b',
    () => '\u202e\u0007\u001b[31m',
    () => '00000000-0000-4000-8000-000000000000',
    () => `${prefix}${Math.floor(r() * 1e9)}`,
    () => '-1',
    () => '{"json": true}',
    () => '%s%n%x',
  ];
  const pick = oversized ? small : small.filter((_, i) => i !== 1 && i !== 2);
  return pick[Math.floor(r() * pick.length)]!();
}

function value(f: Field, r: () => number, depth: number): unknown {
  const one = () => {
    switch (f.type) {
      case 'TYPE_STRING':
        return strings(r);
      case 'TYPE_BYTES':
        return Buffer.alloc(Math.floor(r() * 64));
      case 'TYPE_BOOL':
        return r() < 0.5;
      case 'TYPE_INT64':
      case 'TYPE_INT32':
        return [0, -1, 1, 2 ** 31 - 1, Number.MAX_SAFE_INTEGER, -(2 ** 40)][Math.floor(r() * 6)];
      case 'TYPE_DOUBLE':
        return [0, -1, 1e300, Number.NaN][Math.floor(r() * 4)];
      case 'TYPE_ENUM':
        return ['UNKNOWN', 'SINGLE_NODE_WRITER', 'MULTI_NODE_MULTI_WRITER', 'BYTES'][Math.floor(r() * 4)];
      case 'TYPE_MESSAGE': {
        const d = lookup(f.typeName);
        return d && depth < 4 ? message(d, r, depth + 1) : {};
      }
      default:
        return undefined;
    }
  };
  const d = f.type === 'TYPE_MESSAGE' ? lookup(f.typeName) : undefined;
  if (d?.options?.mapEntry) {
    const n = [0, 1, 3, 60][Math.floor(r() * 4)]!;
    return Object.fromEntries(
      Array.from({ length: oversized ? n : Math.min(n, 3) }, (_, i) => [
        i === 0 ? strings(r) || 'k' : `k${i}`,
        oversized && r() < 0.2 ? 'v'.repeat(200) : strings(r),
      ]),
    );
  }
  if (f.label === 'LABEL_REPEATED') return Array.from({ length: Math.floor(r() * 3) }, one);
  return one();
}

function message(d: Descriptor, r: () => number, depth = 0): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const f of d.field) if (r() < 0.8) out[f.name] = value(f, r, depth);
  return out;
}

const services = ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const;

/** One call of any RPC as a promise of its end: a streaming one (SnapshotMetadata) is read to its last message. */
function call(svc: (typeof services)[number], method: string, req: object): Promise<unknown> {
  const opts = { deadlineMs: DEADLINE_MS };
  if (svc === 'SnapshotMetadata')
    return (async () => {
      for await (const _ of driver.client.SnapshotMetadata[method as 'GetMetadataDelta'](req, opts).messages);
    })();
  return (driver.client[svc] as Record<string, (q: object, o: object) => Promise<unknown>>)[method]!(req, opts);
}
const rpcs = services.flatMap((svc) =>
  Object.entries(pkg[`csi.v1.${svc}`] as Record<string, { requestType: { type: Descriptor } }>).map(([method, m]) => ({
    svc,
    method,
    request: m.requestType.type,
  })),
);

test(`${rpcs.length} RPCs × ${CASES_PER_RPC} hostile requests: never INTERNAL or UNKNOWN, always within the deadline`, async () => {
  expect(rpcs.length).toBeGreaterThanOrEqual(25);
  const r = rng(20261201);
  const bad: string[] = [];
  const codes = new Map<string, number>();
  for (const { svc, method, request } of rpcs) {
    for (let i = 0; i < CASES_PER_RPC; i++) {
      oversized = i % 2 === 0;
      const req = message(request, r);
      const t0 = Date.now();
      const code = await call(svc, method, req).then(
        () => status.OK,
        (e: { code: number; details?: string }) => {
          if ((e.details ?? '').length > 1100) bad.push(`${method}: a ${e.details!.length}-character message`);
          return e.code;
        },
      );
      if (code === status.INTERNAL || code === status.UNKNOWN || code === status.DEADLINE_EXCEEDED)
        bad.push(`${method} → ${status[code]} for ${JSON.stringify(req).slice(0, 300)}`);
      codes.set(status[code]!, (codes.get(status[code]!) ?? 0) + 1);
      if (Date.now() - t0 > DEADLINE_MS) bad.push(`${method} took ${Date.now() - t0} ms`);
    }
  }
  expect(bad).toEqual([]);
  // the requests reached past the argument checks too (Cinder's and the host's answers)
  expect(codes.get('NOT_FOUND') ?? 0).toBeGreaterThan(10);
  // still serving, and nothing left behind
  expect((await driver.client.Identity.Probe({})).ready?.value ?? true).toBeDefined();
  await driver.client.Controller.ControllerGetCapabilities({});
  expect(nodeLeaks({ stateDir, kubeletRoot })).toEqual([]);
  // what the fuzz did create (a well-formed CreateVolume or CreateSnapshot among the hostile ones) carries its cluster
  // id
  const direct = await directCinder();
  try {
    const made = await direct.cinder.listVolumes({ metadata: { [META.cluster]: clusterId } });
    const snaps = (await direct.cinder.listSnapshots({})).filter((s) => s.metadata?.[META.cluster] === clusterId);
    for (const sn of snaps) await direct.cinder.deleteSnapshot(sn.id);
    for (const v of made) await direct.cinder.deleteVolume(v.id);
    expect(await removeByPrefix(direct.cinder, prefix)).toEqual([]);
  } finally {
    await direct.close();
  }
}, 600_000);

/**
 * Every string field of a request message (and of the messages in it), as a path of field names; maps as [name, '{}'].
 */
function stringPaths(d: Descriptor, depth = 0): string[][] {
  const out: string[][] = [];
  for (const f of d.field) {
    const inner = f.type === 'TYPE_MESSAGE' ? lookup(f.typeName) : undefined;
    if (f.type === 'TYPE_STRING') out.push([f.name]);
    else if (inner?.options?.mapEntry) out.push([f.name, '{}']);
    else if (inner && depth < 3) for (const p of stringPaths(inner, depth + 1)) out.push([f.name, ...p]);
  }
  return out;
}

/**
 * `req` with the string at `path` set to `v` (a map gets an entry whose key and value hold it); repeated fields hold
 * it once.
 */
function withString(d: Descriptor, req: Record<string, unknown>, path: string[], v: string): Record<string, unknown> {
  const [name, ...rest] = path as [string, ...string[]];
  const f = d.field.find((x) => x.name === name)!;
  const repeated = f.label === 'LABEL_REPEATED' && rest[0] !== '{}';
  let next: unknown;
  if (!rest.length) next = v;
  else if (rest[0] === '{}') next = { ...(req[name] ?? {}), [`k${v}`]: v };
  else
    next = withString(
      lookup(f.typeName)!,
      ((repeated ? (req[name] as unknown[])?.[0] : req[name]) as Record<string, unknown>) ?? {},
      rest,
      v,
    );
  return { ...req, [name]: repeated ? [next] : next };
}

/** Well-formed requests the hostile strings go into, so that each field is the one thing wrong (the rest random). */
const capability = { mount: { fs_type: 'ext4', mount_flags: [] }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const wellFormed: Record<string, () => Record<string, unknown>> = {
  CreateVolume: () => ({ name: `${prefix}nul`, volume_capabilities: [capability] }),
  NodeStageVolume: () => ({
    volume_id: 'v-nul',
    staging_target_path: `${kubeletRoot}/plugins/s/globalmount`,
    volume_capability: capability,
    publish_context: {
      rbdPool: 'volumes',
      rbdImage: 'volume-none',
      rbdMonitors: '127.0.0.1:1',
      rbdUser: 'cinder',
      volumeId: 'v-nul',
    },
  }),
  NodeUnstageVolume: () => ({ volume_id: 'v-nul', staging_target_path: `${kubeletRoot}/plugins/s/globalmount` }),
  NodePublishVolume: () => ({
    volume_id: 'v-nul',
    staging_target_path: `${kubeletRoot}/plugins/s/globalmount`,
    target_path: `${kubeletRoot}/pods/p/mount`,
    volume_capability: capability,
  }),
  NodeUnpublishVolume: () => ({ volume_id: 'v-nul', target_path: `${kubeletRoot}/pods/p/mount` }),
  NodeGetVolumeStats: () => ({ volume_id: 'v-nul', volume_path: `${kubeletRoot}/pods/p/mount` }),
  NodeExpandVolume: () => ({
    volume_id: 'v-nul',
    volume_path: `${kubeletRoot}/pods/p/mount`,
    capacity_range: { required_bytes: 1 },
  }),
};

test('a NUL byte or control characters in every string field of every RPC: never INTERNAL or UNKNOWN, always within the deadline', async () => {
  const r = rng(20261202);
  const bad: string[] = [];
  let sent = 0;
  let paths = 0;
  for (const { svc, method, request } of rpcs) {
    oversized = false;
    const base = wellFormed[method]?.() ?? message(request, r);
    for (const path of stringPaths(request)) {
      paths++;
      for (const hostile of [
        `${kubeletRoot}/pods/p\u0000x/mount`,
        `${kubeletRoot}/pods/p/mount\u0000/../../etc`,
        'a\u0000',
        '\u0007\u001b[31m\r\n\u007f',
        `x\ty\u0085z`,
      ]) {
        const req = withString(request, base, path, hostile);
        sent++;
        const code = await call(svc, method, req).then(
          () => status.OK,
          (e: { code: number }) => e.code,
        );
        if (code === status.INTERNAL || code === status.UNKNOWN || code === status.DEADLINE_EXCEEDED)
          bad.push(`${method} ${path.join('.')} → ${status[code]}`);
      }
    }
  }
  expect(paths).toBeGreaterThan(35); // ids, names, paths, tokens, and every map, in every service
  expect(sent).toBe(paths * 5);
  expect(bad).toEqual([]);
  expect(nodeLeaks({ stateDir, kubeletRoot })).toEqual([]);
}, 600_000);
