import { status } from '@grpc/grpc-js';
import { expectCode } from '../../helpers/csi-client.js';
import { GiB, block, controllerEnv, mount, testVolumeType } from './fixtures.js';

const env = controllerEnv('expand');
const MISSING = '00000000-0000-4000-8000-000000000000';

describe('ControllerExpandVolume', () => {
  test('grows an available volume to whole GiB; a filesystem needs node expansion; the repeat is OK', async () => {
    const v = await env.create();
    const r = await env.ctl.ControllerExpandVolume({
      volume_id: v.volume_id,
      capacity_range: { required_bytes: 2.5 * GiB },
      volume_capability: mount(),
    });
    expect(r).toEqual({ capacity_bytes: 3 * GiB, node_expansion_required: true });
    expect((await env.direct.cinder.getVolume(v.volume_id)).size).toBe(3);
    expect(
      await env.ctl.ControllerExpandVolume({
        volume_id: v.volume_id,
        capacity_range: { required_bytes: 2 * GiB },
        volume_capability: mount(),
      }),
    ).toEqual(r);
  });

  test('online: grows a published volume (microversion 3.42); a block volume needs no node expansion', async () => {
    const v = await env.create();
    await env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'node-x', volume_capability: block() });
    try {
      const r = await env.ctl.ControllerExpandVolume({
        volume_id: v.volume_id,
        capacity_range: { required_bytes: 2 * GiB },
        volume_capability: block(),
      });
      expect(r).toEqual({ capacity_bytes: 2 * GiB, node_expansion_required: false });
      expect(await env.direct.cinder.getVolume(v.volume_id)).toMatchObject({ size: 2, status: 'in-use' });
    } finally {
      await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-x' });
    }
  });

  test('NOT_FOUND, OUT_OF_RANGE and INVALID_ARGUMENT as the spec names them', async () => {
    const v = await env.create();
    await expectCode(
      env.ctl.ControllerExpandVolume({ volume_id: MISSING, capacity_range: { required_bytes: 2 * GiB } }),
      status.NOT_FOUND,
    );
    await expectCode(
      env.ctl.ControllerExpandVolume({
        volume_id: v.volume_id,
        capacity_range: { required_bytes: 2 * GiB, limit_bytes: GiB },
      }),
      status.OUT_OF_RANGE,
    );
    await expectCode(env.ctl.ControllerExpandVolume({ volume_id: v.volume_id }), status.INVALID_ARGUMENT);
    await expectCode(
      env.ctl.ControllerExpandVolume({ capacity_range: { required_bytes: 2 * GiB } }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      env.ctl.ControllerExpandVolume({
        volume_id: v.volume_id,
        capacity_range: { required_bytes: 2 * GiB },
        volume_capability: block('MULTI_NODE_MULTI_WRITER'),
      }),
      status.INVALID_ARGUMENT,
    );
    expect((await env.direct.cinder.getVolume(v.volume_id)).size).toBe(1);
  });
});

describe('ControllerModifyVolume', () => {
  const gold = testVolumeType(env, 'gold');

  test('type → Cinder retype, available or in-use; the repeat is OK', async () => {
    const v = await env.create({ parameters: { type: 'ceph' } });
    await env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { type: gold.name } });
    expect((await env.direct.cinder.getVolume(v.volume_id)).volume_type).toBe(gold.name);
    await env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { type: gold.name } });

    await env.ctl.ControllerPublishVolume({ volume_id: v.volume_id, node_id: 'node-r', volume_capability: mount() });
    try {
      await env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { type: 'ceph' } });
      expect(await env.direct.cinder.getVolume(v.volume_id)).toMatchObject({ volume_type: 'ceph', status: 'in-use' });
    } finally {
      await env.ctl.ControllerUnpublishVolume({ volume_id: v.volume_id, node_id: 'node-r' });
    }
  });

  test('a type given at creation through mutable_parameters', async () => {
    const v = await env.create({ mutable_parameters: { type: gold.name } });
    expect((await env.direct.cinder.getVolume(v.volume_id)).volume_type).toBe(gold.name);
  });

  test('unknown keys or types → INVALID_ARGUMENT; unknown volume → NOT_FOUND', async () => {
    const v = await env.create();
    expect(
      (
        await expectCode(
          env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { iops: '9' } }),
          status.INVALID_ARGUMENT,
        )
      ).details,
    ).toMatch(/"iops"/);
    await expectCode(
      env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: {} }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      env.ctl.ControllerModifyVolume({ volume_id: v.volume_id, mutable_parameters: { type: 'no-such-type' } }),
      status.INVALID_ARGUMENT,
    );
    await expectCode(
      env.ctl.ControllerModifyVolume({ volume_id: MISSING, mutable_parameters: { type: gold.name } }),
      status.NOT_FOUND,
    );
    await expectCode(
      env.ctl.ControllerModifyVolume({ mutable_parameters: { type: gold.name } }),
      status.INVALID_ARGUMENT,
    );
    expect((await env.direct.cinder.getVolume(v.volume_id)).volume_type).toBe('ceph');
  });
});
