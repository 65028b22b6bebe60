import { status } from '@grpc/grpc-js';
import { checkRoom, KnownNodes } from '../../../src/csi/controller/nodes.js';
import { KubeError } from '../../../src/kube/client.js';
import { DRIVER_NAME } from '../../../src/package-info.js';
import { type CsiError } from '../../../src/server/errors.js';

const codeOf = async (p: Promise<unknown>) =>
  p.then(
    () => 'OK',
    (e: CsiError) => e.code,
  );

/** A Kubernetes API that knows the CSINodes and VolumeAttachments given (a small fake of two GETs). */
function fakeKube(
  nodes: Record<string, { name: string; nodeID: string; count?: number }[]>,
  attached: { node: string; attacher?: string; attached?: boolean }[] = [],
) {
  let lists = 0;
  return {
    lists: () => lists,
    getCsiNode: async (name: string) => {
      if (!nodes[name]) throw new KubeError('not-found', `CSINode ${name} not found`, 404);
      return {
        metadata: { name },
        spec: {
          drivers: nodes[name].map((d) => ({
            name: d.name,
            nodeID: d.nodeID,
            allocatable: d.count === undefined ? null : { count: d.count },
          })),
        },
      };
    },
    listVolumeAttachments: async () => {
      lists++;
      return {
        items: attached.map((a) => ({
          spec: { attacher: a.attacher ?? DRIVER_NAME, nodeName: a.node },
          status: { attached: a.attached ?? true },
        })),
      };
    },
  };
}

describe('which nodes exist', () => {
  test('--mode all without Kubernetes: only the node served here', async () => {
    const nodes = new KnownNodes({ own: { nodeId: 'n1', maxVolumes: async () => 40 }, defaultLimit: 128 });
    expect(await nodes.facts('n1')).toEqual({ limit: 40 });
    expect(await codeOf(nodes.facts('fake-node-id'))).toBe(status.NOT_FOUND);
  });

  test('a controller with neither source takes any node id, at the default limit', async () => {
    expect(await new KnownNodes({ defaultLimit: 128 }).facts('anything')).toEqual({ limit: 128 });
  });

  test("in a cluster: the node's CSINode must list this driver with that node id; its allocatable count is the limit", async () => {
    const kube = fakeKube(
      {
        w1: [{ name: DRIVER_NAME, nodeID: 'w1', count: 49 }],
        w2: [{ name: 'other.csi', nodeID: 'w2' }],
        w3: [{ name: DRIVER_NAME, nodeID: 'w3' }],
      },
      [
        { node: 'w1' },
        { node: 'w1' },
        { node: 'w1', attached: false },
        { node: 'w1', attacher: 'other.csi' },
        { node: 'w3' },
      ],
    );
    const nodes = new KnownNodes({ kube, defaultLimit: 128 });
    expect(await nodes.facts('w1')).toEqual({ limit: 49, attached: 2 });
    expect(await nodes.facts('w3')).toEqual({ limit: 128, attached: 1 });
    expect(kube.lists()).toBe(1); // one list serves a burst of publishes
    expect(await codeOf(nodes.facts('w2'))).toBe(status.NOT_FOUND);
    expect(await codeOf(nodes.facts('nope'))).toBe(status.NOT_FOUND);
  });

  test('an API server that does not answer: UNAVAILABLE, never a guess', async () => {
    const kube = {
      getCsiNode: async () => Promise.reject(new KubeError('timeout', 'slow')),
      listVolumeAttachments: async () => ({ items: [] }),
    };
    expect(await codeOf(new KnownNodes({ kube, defaultLimit: 1 }).facts('w1'))).toBe(status.UNAVAILABLE);
  });
});

test('a node at its limit is RESOURCE_EXHAUSTED naming the node, the count and the limit; 0 means no limit', () => {
  expect(() => checkRoom('w1', 3, 3)).toThrow(
    /node w1 already holds 3 volumes of this driver, its limit \(max_volumes_per_node\) is 3/,
  );
  try {
    checkRoom('w1', 4, 3);
  } catch (e) {
    expect((e as CsiError).code).toBe(status.RESOURCE_EXHAUSTED);
  }
  expect(() => checkRoom('w1', 2, 3)).not.toThrow();
  expect(() => checkRoom('w1', 500, 0)).not.toThrow();
});
