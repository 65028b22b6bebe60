import { status } from '@grpc/grpc-js';
import { checkNodeId, connectorFor, nodeOfAttachment } from '../../../src/csi/controller/nodes.js';
import { chooseZone, mentionsZones } from '../../../src/csi/controller/topology.js';
import { TOPOLOGY_ZONE_KEY } from '../../../src/package-info.js';
import { type CsiError } from '../../../src/server/errors.js';

const zone = (z: string) => ({ segments: { [TOPOLOGY_ZONE_KEY]: z } });

describe('chooseZone', () => {
  test('first preferred zone Cinder has, then requisite', () => {
    expect(chooseZone({ preferred: [zone('z9'), zone('b')], requisite: [zone('a'), zone('b')] }, ['a', 'b'])).toBe('b');
    expect(chooseZone({ preferred: [], requisite: [zone('x'), zone('a')] }, ['a', 'b'])).toBe('a');
  });
  test('no requisite zone exists → RESOURCE_EXHAUSTED naming the zones', () => {
    try {
      chooseZone({ preferred: [], requisite: [zone('x')] }, ['nova']);
      throw new Error('no error');
    } catch (e) {
      expect((e as CsiError).code).toBe(status.RESOURCE_EXHAUSTED);
      expect((e as CsiError).message).toMatch(/x.*Cinder has: nova/);
    }
  });
  test('only unknown preferred zones → Cinder default', () => {
    expect(chooseZone({ preferred: [zone('x')], requisite: [] }, ['nova'])).toBeUndefined();
  });
  test('topologies without our key do not count', () => {
    expect(mentionsZones({ preferred: [{ segments: { other: 'x' } }], requisite: [] })).toBe(false);
    expect(mentionsZones(null)).toBe(false);
  });
});

describe('node ids', () => {
  test('Kubernetes node names pass; empty is INVALID_ARGUMENT; impossible names are NOT_FOUND', () => {
    expect(checkNodeId('worker-1.example.com')).toBe('worker-1.example.com');
    for (const [id, code] of [
      ['', status.INVALID_ARGUMENT],
      ['Node_1', status.NOT_FOUND],
      ['-a', status.NOT_FOUND],
      ['a'.repeat(254), status.NOT_FOUND],
    ] as const) {
      try {
        checkNodeId(id);
        throw new Error(`accepted ${id}`);
      } catch (e) {
        expect((e as CsiError).code).toBe(code);
      }
    }
  });
  test('the connector carries the node id as host and mountpoint, and no instance', () => {
    const c = connectorFor('n1');
    expect(c).toMatchObject({ host: 'n1', mountpoint: 'n1', os_type: 'linux', multipath: false });
    expect(c).not.toHaveProperty('instance_uuid');
  });
  test('an attachment belongs to a node when it has no Nova server and a node name as device', () => {
    expect(nodeOfAttachment({ attachment_id: 'a', server_id: null, device: 'n1' })).toBe('n1');
    expect(nodeOfAttachment({ attachment_id: 'a', server_id: 'uuid', device: 'n1' })).toBeUndefined();
    expect(nodeOfAttachment({ attachment_id: 'a', server_id: null, device: '/dev/vdb' })).toBeUndefined();
  });
});
