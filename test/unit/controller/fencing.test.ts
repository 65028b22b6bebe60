import { capturedLogger } from '../../../harness/log-capture.js';
import type { CephFencer, FencedImage } from '../../../src/ceph/fencing.js';
import { NodeFencing } from '../../../src/csi/controller/fencing.js';
import { type FenceRecord, type NodeMark, nodeMarkSchema, parseRecord } from '../../../src/fencing-records.js';
import { KubeError, type KubeNode } from '../../../src/kube/client.js';

/** The fencing identity's view of Ceph, in memory: records, blocklist, locks, and every step in order. */
function fakeCeph() {
  const steps: string[] = [];
  const marks = new Map<string, NodeMark>();
  const mappers = new Map<string, string[]>();
  const fences = new Map<string, FenceRecord>();
  const blocklist = new Set<string>();
  const key = (ref: FencedImage, node: string) => `${node}/${ref.pool}/${ref.image}`;
  const ceph = {
    homePool: 'volumes',
    nodeMark: async (node: string) => marks.get(node),
    markNode: async (node: string, reason: string) => void marks.set(node, { reason, at: 'now' }),
    unmarkNode: async (node: string) => void marks.delete(node),
    mapperClients: async (ref: FencedImage, node: string) => mappers.get(key(ref, node)) ?? [],
    mappedImages: async (node: string) =>
      [...mappers.keys()]
        .filter((k) => k.startsWith(`${node}/`))
        .map((k) => ({ pool: k.split('/')[1]!, image: k.split('/')[2]! })),
    fencedImages: async (node: string) =>
      [...fences.keys()]
        .filter((k) => k.startsWith(`${node}/`))
        .map((k) => ({ pool: k.split('/')[1]!, image: k.split('/')[2]! })),
    fence: async (ref: FencedImage, node: string) => fences.get(key(ref, node)),
    writeFence: async (ref: FencedImage, node: string, r: FenceRecord) => {
      steps.push(`record ${r.state}`);
      fences.set(key(ref, node), r);
    },
    removeFence: async (ref: FencedImage, node: string) => void fences.delete(key(ref, node)),
    blocklist: async (c: string) => {
      steps.push(`blocklist ${c}`);
      blocklist.add(c);
    },
    unblocklist: async (c: string) => {
      steps.push(`unblocklist ${c}`);
      blocklist.delete(c);
    },
    breakLocks: async (_ref: FencedImage, clients: string[]) => {
      steps.push(`break locks of ${clients.join(',')}`);
      return 1;
    },
  };
  return { ceph: ceph as unknown as CephFencer, steps, marks, mappers, fences, blocklist };
}

const ref = { pool: 'volumes', image: 'volume-11111111-2222-3333-4444-555555555555' };
const node = (taints: string[] = []): KubeNode => ({
  metadata: { name: 'n1' },
  spec: { taints: taints.map((key) => ({ key, effect: 'NoExecute' })) },
});

describe('which node is lost', () => {
  test('an operator mark, the out-of-service taint or a Node that is gone; a NotReady node without the taint is not', async () => {
    const f = fakeCeph();
    let answer: KubeNode | Error = node(['node.kubernetes.io/unreachable']);
    const fencing = new NodeFencing({
      ceph: f.ceph,
      kube: { getNode: async () => (answer instanceof Error ? Promise.reject(answer) : answer) },
      log: capturedLogger('silent').log,
    });
    expect(await fencing.lostReason('n1')).toBeUndefined();
    answer = node(['node.kubernetes.io/out-of-service']);
    expect(await fencing.lostReason('n1')).toMatch(/out-of-service taint/);
    answer = new KubeError('not-found', 'nodes "n1" not found', 404);
    expect(await fencing.lostReason('n1')).toMatch(/Node object is gone/);
    answer = new KubeError('unavailable', 'connection refused');
    await expect(fencing.lostReason('n1')).rejects.toMatchObject({ code: 14 }); // UNAVAILABLE: no release unfenced
    f.marks.set('n1', { reason: 'power cut', at: 'then' });
    expect(await fencing.lostReason('n1')).toMatch(/operator.*power cut/);
  });

  test('without the Kubernetes API only the operator says so', async () => {
    const f = fakeCeph();
    const fencing = new NodeFencing({ ceph: f.ceph, log: capturedLogger('silent').log });
    expect(await fencing.lostReason('n1')).toBeUndefined();
  });
});

describe('a fence', () => {
  test('is recorded before the first blocklist entry, then locks are broken, then it is marked fenced', async () => {
    const f = fakeCeph();
    const counted: number[] = [];
    const fencing = new NodeFencing({
      ceph: f.ceph,
      log: capturedLogger('silent').log,
      onFenced: (n) => counted.push(n),
    });
    f.mappers.set(`n1/volumes/${ref.image}`, ['127.0.0.1:0/7']);
    expect(await fencing.fenceImage('n1', ref, 'tainted')).toEqual(['127.0.0.1:0/7']);
    expect(f.steps).toEqual([
      'record fencing',
      'blocklist 127.0.0.1:0/7',
      'break locks of 127.0.0.1:0/7',
      'record fenced',
    ]);
    // again (a retried unpublish): nothing more to do
    f.steps.length = 0;
    await fencing.fenceImage('n1', ref, 'tainted');
    expect(f.steps).toEqual([]);
    expect(counted).toEqual([1]);
  });

  test('one cut short is finished with the clients it recorded, and any the node recorded since', async () => {
    const f = fakeCeph();
    const fencing = new NodeFencing({ ceph: f.ceph, log: capturedLogger('silent').log });
    f.fences.set(`n1/volumes/${ref.image}`, { clients: ['127.0.0.1:0/7'], state: 'fencing', reason: 'x', at: 'then' });
    f.mappers.set(`n1/volumes/${ref.image}`, ['127.0.0.1:0/8']);
    await fencing.fenceImage('n1', ref, 'tainted');
    expect([...f.blocklist]).toEqual(['127.0.0.1:0/7', '127.0.0.1:0/8']);
    expect(f.fences.get(`n1/volumes/${ref.image}`)?.state).toBe('fenced');
  });

  test('of a node with no recorded client fences nobody', async () => {
    const f = fakeCeph();
    const fencing = new NodeFencing({ ceph: f.ceph, log: capturedLogger('silent').log });
    expect(await fencing.fenceImage('n1', ref, 'tainted')).toEqual([]);
    expect(f.steps).toEqual([]);
  });

  test('is lifted once the node released it (publish), or by the operator whatever its state', async () => {
    const f = fakeCeph();
    const fencing = new NodeFencing({ ceph: f.ceph, log: capturedLogger('silent').log });
    f.mappers.set(`n1/volumes/${ref.image}`, ['127.0.0.1:0/7']);
    await fencing.fenceNode('n1', 'by hand');
    expect(f.marks.has('n1')).toBe(true);
    expect(await fencing.unfence('n1', { onlyReleased: true })).toEqual([]);
    expect(f.blocklist.has('127.0.0.1:0/7')).toBe(true);
    f.fences.set(`n1/volumes/${ref.image}`, { ...f.fences.get(`n1/volumes/${ref.image}`)!, state: 'released' });
    expect(await fencing.unfence('n1', { onlyReleased: true })).toEqual(['127.0.0.1:0/7']);
    expect(f.blocklist.size).toBe(0);
    expect(f.marks.has('n1')).toBe(true); // the operator's mark is the operator's to lift
    await fencing.unfence('n1', { onlyReleased: false });
    expect(f.marks.has('n1')).toBe(false);
  });
});

describe('a record read from Ceph', () => {
  test('is what its schema says, else none: a foreign, damaged or oversized value is no record', () => {
    expect(parseRecord(nodeMarkSchema, '{"reason":"r","at":"now"}')).toEqual({ reason: 'r', at: 'now' });
    expect(parseRecord(nodeMarkSchema, '{"reason":"r"')).toBeUndefined();
    expect(parseRecord(nodeMarkSchema, '{"reason":1,"at":"now"}')).toBeUndefined();
    expect(parseRecord(nodeMarkSchema, `{"reason":"r","at":"now","pad":"${'x'.repeat(20_000)}"}`)).toBeUndefined();
    expect(parseRecord(nodeMarkSchema, undefined)).toBeUndefined();
  });
});
