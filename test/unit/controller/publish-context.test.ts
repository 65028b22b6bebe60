import { parsePublishContext, publishContextFromConnection } from '../../../src/csi/volume-context.js';

/** connection_info exactly as this Cinder's attachments API returned it (flattened). */
const FLAT = {
  name: 'volumes/volume-503a8fd7',
  hosts: ['127.0.0.1'],
  ports: ['6789'],
  cluster_name: 'ceph',
  auth_enabled: true,
  auth_username: 'cinder',
  secret_type: 'ceph',
  volume_id: '503a8fd7',
  access_mode: 'rw',
  driver_volume_type: 'rbd',
  attachment_id: 'att-1',
};

test('the attachments API (flat) and os-initialize_connection (nested) shapes give the same context', () => {
  const { driver_volume_type, ...data } = FLAT;
  const a = publishContextFromConnection(FLAT, 'att-1', 'rw', 'vol-1');
  const b = publishContextFromConnection({ driver_volume_type, data }, 'att-1', 'rw', 'vol-1');
  expect(a).toEqual(b);
  expect(parsePublishContext(a)).toEqual({
    pool: 'volumes',
    image: 'volume-503a8fd7',
    monitors: ['127.0.0.1:6789'],
    user: 'cinder',
    cluster: 'ceph',
    attachmentId: 'att-1',
    accessMode: 'rw',
    volumeId: 'vol-1',
  });
});

test('a non-RBD connection is refused with the reason', () => {
  expect(() => publishContextFromConnection({ ...FLAT, driver_volume_type: 'iscsi' }, 'a', 'rw', 'v')).toThrow(
    /only RBD/,
  );
});
