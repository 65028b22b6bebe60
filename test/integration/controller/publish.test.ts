import { status } from '@grpc/grpc-js';
import { connectorFor } from '../../../src/csi/controller/nodes.js';
import { parsePublishContext } from '../../../src/csi/volume-context.js';
import { expectCode } from '../../helpers/csi-client.js';
import { block, controllerEnv, mount, testVolumeType } from './fixtures.js';

const env = controllerEnv('publish');
const MISSING = '00000000-0000-4000-8000-000000000000';

const attachments = (volumeId: string) => env.direct.cinder.volumeAttachments(volumeId);

describe('ControllerPublishVolume', () => {
  test('attaches through Cinder for the node and hands the node what it needs to map the image', async () => {
    const v = await env.create();
    const { publish_context: pc } = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-1',
      volume_capability: mount(),
    });
    const parsed = parsePublishContext(pc);
    expect(parsed).toMatchObject({
      pool: 'volumes',
      image: `volume-${v.volume_id}`,
      user: 'cinder',
      cluster: 'ceph',
      accessMode: 'rw',
    });
    expect(parsed.monitors.length).toBeGreaterThan(0);
    expect(Object.values(pc).every((x) => typeof x === 'string')).toBe(true);
    expect(Buffer.byteLength(JSON.stringify(pc))).toBeLessThan(4096);

    const cv = await env.direct.cinder.getVolume(v.volume_id);
    expect(cv.status).toBe('in-use');
    expect(cv.attachments).toEqual([
      expect.objectContaining({ attachment_id: pc.attachmentId, device: 'node-1', server_id: null }),
    ]);
    const [a] = await attachments(v.volume_id);
    expect(a).toMatchObject({ id: pc.attachmentId, status: 'attached', attach_mode: 'rw', instance: null });

    // Idempotent per node: same answer, no second attachment.
    const again = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-1',
      volume_capability: mount(),
    });
    expect(again.publish_context).toEqual(pc);
    expect(await attachments(v.volume_id)).toHaveLength(1);

    // Published node ids are visible to the CO.
    expect((await env.ctl.ControllerGetVolume({ volume_id: v.volume_id })).status.published_node_ids).toEqual([
      'node-1',
    ]);

    // The same node read-only is incompatible with the read-write publication.
    await expectCode(
      env.ctl.ControllerPublishVolume({
        volume_id: v.volume_id,
        node_id: 'node-1',
        volume_capability: mount(),
        readonly: true,
      }),
      status.ALREADY_EXISTS,
    );
    // Another node while single-attach.
    const err = await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'node-2', volume_capability: mount() }),
      status.FAILED_PRECONDITION,
    );
    expect(err.details).toMatch(/published on node-1/);
    expect(await attachments(v.volume_id)).toHaveLength(1);

    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-1' });
    expect(await attachments(v.volume_id)).toHaveLength(0);
    expect((await env.direct.cinder.getVolume(v.volume_id)).status).toBe('available');
  });

  test('readonly, or a reader-only access mode, attaches in Cinder mode ro', async () => {
    const v = await env.create();
    const a = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-ro',
      volume_capability: mount(),
      readonly: true,
    });
    expect(a.publish_context.accessMode).toBe('ro');
    expect((await attachments(v.volume_id))[0]?.attach_mode).toBe('ro');
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-ro' });

    const b = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-ro',
      volume_capability: block('SINGLE_NODE_READER_ONLY'),
    });
    expect(b.publish_context.accessMode).toBe('ro');
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-ro' });
  });

  test('unknown volume or node → NOT_FOUND; missing fields and unservable capabilities → INVALID_ARGUMENT', async () => {
    const v = await env.create();
    await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: MISSING, node_id: 'node-1', volume_capability: mount() }),
      status.NOT_FOUND,
    );
    const err = await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'Not_A_Node', volume_capability: mount() }),
      status.NOT_FOUND,
    );
    expect(err.details).toMatch(/Kubernetes node names/);
    await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, volume_capability: mount() }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      env.ctl.ControllerPublishVolume({ node_id: 'node-1', volume_capability: mount() }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'node-1' }),
      status.INVALID_ARGUMENT,
    );
    const multi = await expectCode(
      env.ctl.ControllerPublishVolume({
        volume_id: v.volume_id,
        node_id: 'node-1',
        volume_capability: block('MULTI_NODE_MULTI_WRITER'),
      }),
      status.INVALID_ARGUMENT,
    );
    expect(multi.details).toMatch(/multiattach/);
    expect(await attachments(v.volume_id)).toHaveLength(0);
  });

  test('an attachment left half-done by an interrupted publish is cleared, not leaked', async () => {
    const v = await env.create();
    // What a publish cut off between POST /attachments and os-complete leaves behind.
    const stale = await env.direct.cinder.createAttachment(v.volume_id, connectorFor('node-gone'), 'rw');
    expect((await env.direct.cinder.getVolume(v.volume_id)).status).toBe('attaching');
    const { publish_context } = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-3',
      volume_capability: mount(),
    });
    const left = await attachments(v.volume_id);
    expect(left.map((a) => a.id)).toEqual([publish_context.attachmentId]);
    expect(left.map((a) => a.id)).not.toContain(stale.id);

    // Unpublish clears them too (a failed publish is followed by an unpublish).
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-3' });
    await env.direct.cinder.createAttachment(v.volume_id, connectorFor('node-gone'), 'rw');
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-gone' });
    expect(await attachments(v.volume_id)).toHaveLength(0);
    expect((await env.direct.cinder.getVolume(v.volume_id)).status).toBe('available');
  });
});

describe('ControllerUnpublishVolume', () => {
  test('idempotent: repeat, unknown volume, a node it is not on; only that node is touched', async () => {
    const v = await env.create();
    const { publish_context } = await env.ctl.ControllerPublishVolume({
      volume_id: v.volume_id,
      node_id: 'node-a',
      volume_capability: mount(),
    });
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-b' });
    expect((await attachments(v.volume_id)).map((a) => a.id)).toEqual([publish_context.attachmentId]);
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-a' });
    await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-a' });
    await env.ctl.ControllerUnpublishVolume({ volume_id: MISSING, node_id: 'node-a' });
    expect(await attachments(v.volume_id)).toHaveLength(0);
    await expectCode(env.ctl.ControllerUnpublishVolume({ node_id: 'node-a' }), status.INVALID_ARGUMENT);
  });
});

describe('multiattach volumes', () => {
  const multiattach = testVolumeType(env, 'multiattach', { multiattach: '<is> True' });

  test('publish to several nodes with a MULTI_NODE block capability; a single-node one still refuses a second node', async () => {
    const cap = block('MULTI_NODE_MULTI_WRITER');
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      volume_capabilities: [cap],
      parameters: { type: multiattach.name },
    });
    await env.ctl.ControllerPublishVolume({ volume_id: volume.volume_id, node_id: 'node-m1', volume_capability: cap });
    await env.ctl.ControllerPublishVolume({ volume_id: volume.volume_id, node_id: 'node-m2', volume_capability: cap });
    expect(
      (await env.ctl.ControllerGetVolume({ volume_id: volume.volume_id })).status.published_node_ids.sort(),
    ).toEqual(['node-m1', 'node-m2']);
    await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: volume.volume_id, node_id: 'node-m3', volume_capability: block() }),
      status.FAILED_PRECONDITION,
    );

    // An empty node_id unpublishes from every node.
    await env.ctl.ControllerUnpublishVolume({ volume_id: volume.volume_id });
    expect(await attachments(volume.volume_id)).toHaveLength(0);
  });

  test('a MULTI_NODE capability on a type that is not multiattach → INVALID_ARGUMENT, volume deleted', async () => {
    const name = env.name();
    const err = await expectCode(
      env.ctl.CreateVolume({
        name,
        volume_capabilities: [block('MULTI_NODE_MULTI_WRITER')],
        parameters: { type: 'ceph' },
      }),
      status.INVALID_ARGUMENT,
    );
    expect(err.details).toMatch(/multiattach/);
    expect((await env.direct.cinder.volumesNamed(name)).filter((v) => v.status !== 'deleting')).toHaveLength(0);
  });
});
