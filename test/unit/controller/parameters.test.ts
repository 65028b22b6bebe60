import { status } from '@grpc/grpc-js';
import {
  META,
  parseCreateParameters,
  parseMutableParameters,
  volumeContextOf,
  volumeMetadata,
} from '../../../src/csi/controller/parameters.js';
import { type CsiError } from '../../../src/server/errors.js';

const failure = (f: () => unknown): CsiError => {
  try {
    f();
  } catch (e) {
    return e as CsiError;
  }
  throw new Error('expected a failure');
};

test('known parameters parse with defaults; provisioner keys are kept for metadata', () => {
  const p = parseCreateParameters({
    type: 'ceph',
    availability: 'nova',
    fsType: 'xfs',
    'csi.storage.k8s.io/pvc/name': 'data',
    'csi.storage.k8s.io/pvc/namespace': 'ns',
    'csi.storage.k8s.io/pv/name': 'pvc-1',
    'csi.storage.k8s.io/provisioner-secret-name': 'ignored',
  });
  expect(p).toEqual({
    type: 'ceph',
    availability: 'nova',
    fsType: 'xfs',
    attachMode: 'auto',
    kubernetes: {
      'csi.storage.k8s.io/pvc/name': 'data',
      'csi.storage.k8s.io/pvc/namespace': 'ns',
      'csi.storage.k8s.io/pv/name': 'pvc-1',
    },
  });
  expect(volumeContextOf(p)).toEqual({ fsType: 'xfs', attachMode: 'auto' });
  expect(volumeMetadata('c1', p)).toEqual({
    [META.cluster]: 'c1',
    [META.fsType]: 'xfs',
    [META.attachMode]: 'auto',
    'csi.storage.k8s.io/pvc/name': 'data',
    'csi.storage.k8s.io/pvc/namespace': 'ns',
    'csi.storage.k8s.io/pv/name': 'pvc-1',
  });
});

test('an unknown key is INVALID_ARGUMENT naming it', () => {
  const e = failure(() => parseCreateParameters({ type: 'ceph', sizeGB: '3' }));
  expect(e.code).toBe(status.INVALID_ARGUMENT);
  expect(e.message).toMatch(/unknown parameter "sizeGB"/);
});

test('bad values name the parameter', () => {
  expect(failure(() => parseCreateParameters({ attachMode: 'vm' })).message).toMatch(
    /parameter "attachMode": must be one of auto, filesystem, passthrough/,
  );
  expect(failure(() => parseCreateParameters({ fsType: 'ntfs' })).message).toMatch(/parameter "fsType"/);
  expect(failure(() => parseCreateParameters({ type: '' })).message).toMatch(/parameter "type"/);
});

test('mutable parameters: only type', () => {
  expect(parseMutableParameters({ type: 'fast' })).toEqual({ type: 'fast' });
  expect(failure(() => parseMutableParameters({ iops: '5' })).message).toMatch(/unknown parameter "iops"/);
});
