import { existsSync, mkdirSync, mkdtempSync, readlinkSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { capturedLogger } from '../../../harness/log-capture.js';
import type { FenceRecord } from '../../../src/fencing-records.js';
import type { CephClients } from '../../../src/node/fencing/ceph-clients.js';
import type { Runner } from '../../../src/node/host/command.js';
import { LoopDevices } from '../../../src/node/host/loop.js';
import { KubeletRoot } from '../../../src/node/host/kubelet-paths.js';
import type { BlankCheck } from '../../../src/node/ceph/blank-check.js';
import type { FormatIntent, FormatIntents } from '../../../src/node/ceph/format-intents.js';
import type { MapperSet } from '../../../src/node/mappers/index.js';
import type { RbdMapper } from '../../../src/node/mappers/mapper.js';
import type { MountEntry } from '../../../src/node/host/mount-commands.js';
import type { Mounter } from '../../../src/node/host/mounter.js';
import { NodeVolumes } from '../../../src/node/volumes/node-volumes.js';
import { readDirectVolume } from '../../../src/node/kata/direct-volume.js';
import { PassthroughPublisher } from '../../../src/node/kata/passthrough.js';
import { RuntimeDetector } from '../../../src/node/kata/runtime.js';

/**
 * The node's volume logic on small fakes of the host (an in-memory mount table and devices, a mapper
 * that hands out names): the stage transaction's decisions (format only blank or its own cut-short
 * format, idempotency, mismatches), the publish policy (one publish for single-writer modes, one device
 * in one kernel) and the order of undoing. The real tools and devices are the integration tests' job.
 */
type Content = 'blank' | 'junk' | `fs:${string}`;

function fakes() {
  const dir = mkdtempSync(join(tmpdir(), 'node-volumes-'));
  const kubelet = join(dir, 'kubelet');
  mkdirSync(kubelet);
  const devices = new Map<string, Content>();
  const table: MountEntry[] = [];
  const calls: string[] = [];
  let id = 100;
  // a pinned path (/proc/<pid>/fd/<n>) names what it holds; /proc/<pid>/fd/<n>/<name>, an entry of the held directory
  const real = (p: string) => {
    const held = /^(\/proc\/\d+\/fd\/\d+)(\/[^/]+)?$/.exec(p);
    return held ? readlinkSync(held[1]!) + (held[2] ?? '') : p;
  };
  const mounter: Mounter = {
    mounts: async () => table.map((m) => ({ ...m })),
    mountDevice: async (device, at, fsType, options) => {
      calls.push(`mount ${device}`);
      table.push({
        id: ++id,
        parent: 1,
        devNumber: '',
        root: '/',
        mountpoint: real(at),
        options,
        fsType,
        source: device,
        superOptions: [],
      });
    },
    bind: async (source, at) => {
      const from = table.filter((m) => m.mountpoint === real(source)).at(-1);
      table.push({
        id: ++id,
        parent: 1,
        devNumber: '',
        root: '/',
        mountpoint: real(at),
        options: ['rw'],
        fsType: from?.fsType ?? 'devtmpfs',
        source: from?.source ?? source,
        superOptions: [],
      });
    },
    remountReadOnly: async (mp) =>
      void table
        .filter((m) => m.mountpoint === real(mp))
        .at(-1)
        ?.options.push('ro'),
    unmount: async (target) => {
      const i = table.map((m) => m.mountpoint).lastIndexOf(real(target));
      if (i >= 0) table.splice(i, 1);
    },
    format: async (device, fsType, _s, overwrite) => {
      calls.push(`mkfs ${fsType}${overwrite ? ' (overwrite)' : ''}`);
      devices.set(device, `fs:${fsType}`);
    },
    probe: async (device) => {
      const c = devices.get(device);
      return c?.startsWith('fs:') ? { fsType: c.slice(3) } : {};
    },
    usage: async () => ({
      bytes: { total: 100, available: 60, used: 40 },
      inodes: { total: 10, available: 5, used: 5 },
    }),
    grow: async () => undefined,
    growUnmounted: async () => undefined,
    applyMountGroup: async () => 'applied',
  };
  const mapper: RbdMapper = {
    kind: 'fuse',
    map: async (req) => {
      const device = `/dev/fake-${req.spec.image}`;
      if (!devices.has(device)) devices.set(device, 'blank');
      calls.push(`map ${req.spec.image}`);
      return {
        kind: 'fuse',
        device,
        pid: process.pid,
        mountpoint: join(dir, 'fuse'),
        imageFile: join(dir, 'fuse', req.spec.image),
      };
    },
    unmap: async (spec) => void calls.push(`unmap ${spec.image}`),
    kill: async (m) => void calls.push(`kill ${m.device}`),
    health: async () => undefined,
    refresh: async () => 1 << 30,
  };
  const never: Runner = async (cmd) => {
    throw new Error(`no host command in a unit test (${cmd})`);
  };
  const mappers: MapperSet = {
    active: mapper,
    reason: 'test',
    byKind: { krbd: mapper, nbd: mapper, fuse: mapper },
    loops: new LoopDevices({ run: never, table: async () => ({}) }),
  };
  // the format intents, as the pool's object would keep them
  const intents = new Map<string, FormatIntent>();
  const formatIntents = {
    get: async (spec: { image: string }) => intents.get(spec.image),
    begin: async (spec: { image: string }, _k: string, fsType: string) =>
      void intents.set(spec.image, { fsType, node: 'n1', at: '2026-12-01T00:00:00Z' }),
    end: async (spec: { image: string }) => void intents.delete(spec.image),
  } as unknown as FormatIntents;
  // the fencing records, as the controller and this node would keep them in Ceph
  const fences = new Map<string, FenceRecord>();
  const mapperRecords = new Map<string, string[]>();
  let nonce = 0;
  let listings = 0;
  const clients = {
    watchers: async () => [],
    keys: async () => {
      listings++;
      return new Set([
        ...[...fences.keys()].map((i) => `fence/${i}`),
        ...[...mapperRecords.keys()].map((i) => `mapper/${i}`),
      ]);
    },
    learn: async (spec: { image: string }) => {
      const added = [`127.0.0.1:0/${++nonce}`];
      mapperRecords.set(spec.image, added);
      return added;
    },
    forget: async (spec: { image: string }) => void mapperRecords.delete(spec.image),
    fence: async (spec: { image: string }) => fences.get(spec.image),
    release: async (spec: { image: string }, _k: string, f: FenceRecord) =>
      void fences.set(spec.image, { ...f, state: 'released' }),
  } as unknown as CephClients;
  const { log } = capturedLogger('silent');
  return {
    fences,
    mapperRecords,
    listings: () => listings,
    dir,
    kubelet,
    devices,
    table,
    calls,
    intents,
    make: async () =>
      new NodeVolumes({
        run: never,
        mappers,
        stateDir: join(dir, 'state'),
        cephKeyring: join(dir, 'keyring'),
        log,
        runtime: new RuntimeDetector({
          hypervisorHandlers: ['kata*'],
          kube: { unavailable: 'none in a unit test' },
          log,
        }),
        passthrough: new PassthroughPublisher({ root: join(dir, 'kata'), log, tools: [] }),
        paths: await KubeletRoot.open(kubelet),
        intents: formatIntents,
        blankCheck: {
          blank: async (spec: { image: string }) => (devices.get(`/dev/fake-${spec.image}`) ?? 'blank') === 'blank',
        } as unknown as BlankCheck,
        clients,
        mounter,
      }),
  };
}

const image = (name: string) => ({
  pool: 'volumes',
  image: name,
  monitors: ['127.0.0.1:6789'],
  user: 'cinder',
  cluster: 'ceph',
});
const use = (
  o: {
    fsType?: string;
    accessMode?: string;
    accessType?: 'mount' | 'block';
    attachMode?: 'auto' | 'filesystem' | 'passthrough';
  } = {},
) => ({
  accessType: o.accessType ?? ('mount' as const),
  accessMode: o.accessMode ?? 'SINGLE_NODE_WRITER',
  fsType: o.fsType ?? 'ext4',
  mountFlags: [],
  attachMode: o.attachMode ?? ('filesystem' as const),
});

let f: ReturnType<typeof fakes>;
beforeEach(() => (f = fakes()));
afterEach(() => rmSync(f.dir, { recursive: true, force: true }));

const stageReq = (v: string, staging: string, o: Parameters<typeof use>[0] = {}) => ({
  ...use(o),
  volumeId: v,
  publishedFor: v,
  stagingPath: staging,
  image: image(`volume-${v}`),
  readonly: false,
  credentials: {},
});
const publishReq = (v: string, staging: string, target: string, o: Parameters<typeof use>[0] = {}) => ({
  ...use(o),
  volumeId: v,
  stagingPath: staging,
  targetPath: target,
  readonly: false,
  volumeContext: {},
});

describe('the stage transaction', () => {
  test('a blank device is formatted once; the same stage again changes nothing; another capability is ALREADY_EXISTS', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv1/globalmount');
    await nv.stage(stageReq('v1', staging));
    await nv.stage(stageReq('v1', staging));
    expect(f.calls).toEqual(['map volume-v1', 'mkfs ext4', 'mount /dev/fake-volume-v1']);
    await expect(nv.stage(stageReq('v1', staging, { fsType: 'xfs' }))).rejects.toMatchObject({
      kind: 'already-exists',
    });
    await expect(nv.stage(stageReq('v1', join(f.kubelet, 'plugins/other/globalmount')))).rejects.toMatchObject({
      kind: 'failed-precondition',
    });
  });

  test('a device that holds bytes no tool knows is never formatted, unless the cluster says they are a format cut short', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv2/globalmount');
    f.devices.set('/dev/fake-volume-v2', 'junk');
    await expect(nv.stage(stageReq('v2', staging))).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/never formats a device that holds data/),
    });
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual([]);
    expect(f.calls.at(-1)).toBe('unmap volume-v2'); // rolled back
    f.intents.set('volume-v2', { fsType: 'xfs', node: 'n0', at: '2026-12-01T00:00:00Z' });
    await nv.stage(stageReq('v2', staging, { fsType: 'xfs' }));
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual(['mkfs xfs (overwrite)']);
    expect(f.intents.size).toBe(0); // the finished format took its intent away
  });

  test('a format cut short after it wrote a superblock is finished, not mounted as half a filesystem', async () => {
    const nv = await f.make();
    f.devices.set('/dev/fake-volume-v4', 'fs:ext4');
    f.intents.set('volume-v4', { fsType: 'ext4', node: 'n0', at: '2026-12-01T00:00:00Z' });
    await nv.stage(stageReq('v4', join(f.kubelet, 'plugins/pv4/globalmount')));
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual(['mkfs ext4 (overwrite)']);
    expect(f.intents.size).toBe(0);
  });

  test('a format cut short is not finished through a read-only stage, nor is an intent for a filesystem not made here', async () => {
    const nv = await f.make();
    f.devices.set('/dev/fake-volume-v5', 'junk');
    f.intents.set('volume-v5', { fsType: 'ext4', node: 'n0', at: '2026-12-01T00:00:00Z' });
    await expect(
      nv.stage({ ...stageReq('v5', join(f.kubelet, 'plugins/pv5/globalmount')), readonly: true }),
    ).rejects.toMatchObject({ kind: 'failed-precondition', message: expect.stringMatching(/stage it writable once/) });
    f.intents.set('volume-v5', { fsType: 'btrfs', node: 'n0', at: '2026-12-01T00:00:00Z' });
    await expect(nv.stage(stageReq('v5', join(f.kubelet, 'plugins/pv5/globalmount')))).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/format intent for "btrfs"/),
    });
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual([]);
    expect(f.devices.get('/dev/fake-volume-v5')).toBe('junk');
  });

  test('a raw block stage gives up a format cut short (its user writes the device from then on); a read-only one does not', async () => {
    const nv = await f.make();
    f.devices.set('/dev/fake-volume-v6', 'junk');
    f.intents.set('volume-v6', { fsType: 'ext4', node: 'n0', at: '2026-12-01T00:00:00Z' });
    const ro = {
      ...stageReq('v6', join(f.kubelet, 'plugins/pv6/globalmount'), { accessType: 'block' }),
      readonly: true,
    };
    await nv.stage(ro);
    expect(f.intents.has('volume-v6')).toBe(true);
    await nv.unstage('v6', ro.stagingPath);
    await nv.stage(stageReq('v6', join(f.kubelet, 'plugins/pv6/globalmount'), { accessType: 'block' }));
    expect(f.intents.has('volume-v6')).toBe(false);
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual([]);
  });

  test('an existing filesystem of another type than asked is refused, not reformatted', async () => {
    const nv = await f.make();
    f.devices.set('/dev/fake-volume-v3', 'fs:xfs');
    await expect(
      nv.stage(stageReq('v3', join(f.kubelet, 'plugins/pv3/globalmount'), { fsType: 'ext4' })),
    ).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/already holds a xfs filesystem/),
    });
    expect(f.calls.filter((c) => c.startsWith('mkfs'))).toEqual([]);
  });
});

describe('the publish policy', () => {
  test('a single-writer volume has one publish on the node; SINGLE_NODE_MULTI_WRITER has several', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv4/globalmount');
    const t1 = join(f.kubelet, 'pods/a/mount');
    const t2 = join(f.kubelet, 'pods/b/mount');
    await nv.stage(stageReq('v4', staging));
    await nv.publish(publishReq('v4', staging, t1));
    await nv.publish(publishReq('v4', staging, t1)); // the same again: OK
    await expect(nv.publish(publishReq('v4', staging, t2))).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/allows one publish per node/),
    });
    const multi = join(f.kubelet, 'plugins/pv5/globalmount');
    await nv.stage(stageReq('v5', multi, { accessMode: 'SINGLE_NODE_MULTI_WRITER' }));
    await nv.publish(
      publishReq('v5', multi, join(f.kubelet, 'pods/c/mount'), { accessMode: 'SINGLE_NODE_MULTI_WRITER' }),
    );
    await nv.publish(
      publishReq('v5', multi, join(f.kubelet, 'pods/d/mount'), { accessMode: 'SINGLE_NODE_MULTI_WRITER' }),
    );
  });

  test('one device, one kernel: a VM publish of a device the host has mounted for a pod is FAILED_PRECONDITION', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv6/globalmount');
    await nv.stage(stageReq('v6', staging, { accessMode: 'SINGLE_NODE_MULTI_WRITER', attachMode: 'auto' }));
    await nv.publish(
      publishReq('v6', staging, join(f.kubelet, 'pods/runc/mount'), {
        accessMode: 'SINGLE_NODE_MULTI_WRITER',
        attachMode: 'filesystem',
      }),
    );
    await expect(
      nv.publish(
        publishReq('v6', staging, join(f.kubelet, 'pods/vm/mount'), {
          accessMode: 'SINGLE_NODE_MULTI_WRITER',
          attachMode: 'passthrough',
        }),
      ),
    ).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/cannot be handed to a VM/),
    });
  });

  test('unstage waits for the unpublish; then the mounts go, the mapping last', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv7/globalmount');
    const target = join(f.kubelet, 'pods/e/mount');
    await nv.stage(stageReq('v7', staging));
    await nv.publish(publishReq('v7', staging, target));
    await expect(nv.unstage('v7', staging)).rejects.toMatchObject({
      kind: 'failed-precondition',
      message: expect.stringMatching(/NodeUnpublishVolume must come first/),
    });
    await nv.unpublish('v7', target);
    await nv.unstage('v7', staging);
    expect(f.table).toEqual([]);
    expect(f.calls.at(-1)).toBe('unmap volume-v7');
    expect((await nv.records.list()).records).toEqual([]);
  });

  test("a VM publish onto a target that holds another volume's direct-volume file is refused; that file outlives this volume's unpublish", async () => {
    const nv = await f.make();
    const target = join(f.kubelet, 'pods/vm/volumes/kubernetes.io~csi/pv/mount');
    const stagingA = join(f.kubelet, 'plugins/pva/globalmount');
    const stagingB = join(f.kubelet, 'plugins/pvb/globalmount');
    await nv.stage(stageReq('va', stagingA, { attachMode: 'passthrough' }));
    await nv.stage(stageReq('vb', stagingB, { attachMode: 'passthrough' }));
    await nv.publish(publishReq('vb', stagingB, target, { attachMode: 'passthrough' }));
    await expect(nv.publish(publishReq('va', stagingA, target, { attachMode: 'passthrough' }))).rejects.toMatchObject({
      kind: 'already-exists',
      message: expect.stringMatching(/already hands \/dev\/fake-volume-vb to a VM/),
    });
    await nv.unpublish('va', target);
    expect((await readDirectVolume(join(f.dir, 'kata'), target))?.info.device).toBe('/dev/fake-volume-vb');
    expect(existsSync(target)).toBe(true);
    // B's own unpublish takes its file and the empty target directory; something written there is reported
    writeFileSync(join(target, 'written-by-pod'), 'data');
    await expect(nv.unpublish('vb', target)).rejects.toThrow(/disable_block_device_use = true/);
    rmSync(join(target, 'written-by-pod'));
    await nv.unpublish('vb', target);
    expect(existsSync(target)).toBe(false);
  });
});

describe('one RBD image, one stage', () => {
  test('two stages of one image under two volume ids at once: exactly one maps it, the other is refused', async () => {
    const nv = await f.make();
    const one = { ...stageReq('v8', join(f.kubelet, 'plugins/pv8/globalmount')), image: image('shared') };
    const two = { ...stageReq('v9', join(f.kubelet, 'plugins/pv9/globalmount')), image: image('shared') };
    const results = await Promise.allSettled([nv.stage(one), nv.stage(two)]);
    expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({
      reason: { kind: 'failed-precondition', message: expect.stringMatching(/already staged on this node as volume/) },
    });
    expect(f.calls.filter((c) => c.startsWith('map'))).toEqual(['map shared']);
  });

  test('a publish_context written for another volume is INVALID_ARGUMENT before anything is done', async () => {
    const nv = await f.make();
    await expect(
      nv.stage({ ...stageReq('v10', join(f.kubelet, 'plugins/pv10/globalmount')), publishedFor: 'v11' }),
    ).rejects.toMatchObject({ kind: 'invalid-argument' });
    expect(f.calls).toEqual([]);
  });
});

describe('a stage the controller fenced (this node was taken for lost)', () => {
  const fence = (clients: string[], state: 'fencing' | 'fenced' | 'released' = 'fenced') => ({
    clients,
    state,
    reason: 'tainted out-of-service',
    at: '2026-12-07T00:00:00Z',
  });

  test('its next RPC kills the mapper before anything else, takes the publishes and the stage down, and releases the fence', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv9/globalmount');
    const target = join(f.kubelet, 'pods/p9/volumes/v9');
    await nv.stage(stageReq('v9', staging));
    await nv.publish(publishReq('v9', staging, target));
    expect(f.mapperRecords.get('volume-v9')).toEqual(['127.0.0.1:0/1']);
    f.fences.set('volume-v9', fence(['127.0.0.1:0/1']));
    f.calls.length = 0;
    await nv.unpublish('v9', target); // answered from the teardown: the target is gone with the rest
    expect(f.calls[0]).toBe('kill /dev/fake-volume-v9');
    expect(f.calls.at(-1)).toBe('unmap volume-v9');
    expect(await nv.records.read('v9')).toBeUndefined();
    expect(f.table.filter((m) => m.mountpoint.includes('v9'))).toEqual([]);
    expect(f.fences.get('volume-v9')?.state).toBe('released');
    expect(f.mapperRecords.has('volume-v9')).toBe(false);
    await nv.unstage('v9', staging); // kubelet's unstage that follows: nothing left, OK
  });

  test('a fence of another client instance (an earlier stage of this node) or one released is no fence of this stage', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv8/globalmount');
    await nv.stage(stageReq('v8', staging));
    f.fences.set('volume-v8', fence(['127.0.0.1:0/999']));
    await nv.stats('v8', staging);
    f.fences.set('volume-v8', fence(['127.0.0.1:0/1'], 'released'));
    await nv.stats('v8', staging);
    expect(f.calls.filter((c) => c.startsWith('kill'))).toEqual([]);
    expect((await nv.records.read('v8'))?.phase).toBe('mounted');
  });

  test("kubelet's periodic stats share one listing of the pool's fencing records; a fence listed later is seen", async () => {
    const nv = await f.make();
    const stagings = ['v5', 'v4', 'v3'].map((v) => join(f.kubelet, `plugins/p${v}/globalmount`));
    for (const [i, v] of ['v5', 'v4', 'v3'].entries()) await nv.stage(stageReq(v, stagings[i]!));
    const before = f.listings();
    for (const [i, v] of ['v5', 'v4', 'v3'].entries()) await nv.stats(v, stagings[i]!);
    expect(f.listings() - before).toBe(1);
    // a fence written after the listing: the stage goes at an RPC that reads the record itself (unpublish)
    f.fences.set('volume-v4', fence([f.mapperRecords.get('volume-v4')![0]!]));
    await nv.unpublish('v4', join(f.kubelet, 'pods/p4/volumes/v4'));
    expect(await nv.records.read('v4')).toBeUndefined();
    expect(f.fences.get('volume-v4')?.state).toBe('released');
  });

  test('at start every fenced stage goes; a new stage of the volume afterwards maps it afresh', async () => {
    const nv = await f.make();
    const staging = join(f.kubelet, 'plugins/pv7/globalmount');
    await nv.stage(stageReq('v7', staging));
    await nv.stage(stageReq('v6', join(f.kubelet, 'plugins/pv6/globalmount')));
    f.fences.set('volume-v7', fence(['127.0.0.1:0/1'], 'fencing'));
    const restarted = await f.make();
    // a fenced stage's teardown runs as the one operation on its volume (against the RPCs served meanwhile); the look
    // at the others takes no lock
    const held: string[] = [];
    const exclusive = async <T>(id: string, fn: () => Promise<T>) => {
      held.push(id);
      return fn();
    };
    expect(await restarted.dropFenced(exclusive)).toEqual(['v7']);
    expect(held).toEqual(['v7']);
    expect(await restarted.records.read('v6')).toBeDefined();
    await restarted.stage(stageReq('v7', staging));
    expect(f.mapperRecords.get('volume-v7')).toEqual(['127.0.0.1:0/3']);
  });
});
