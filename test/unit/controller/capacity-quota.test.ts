import { capacityFromQuota, UNLIMITED_BYTES } from '../../../src/csi/controller/queries.js';

const GiB = 1024 ** 3;
const q = (limit: number, in_use = 0, reserved = 0) => ({ limit, in_use, reserved });

test('gigabytes left = limit − in use − reserved; the type quota can be tighter', () => {
  expect(capacityFromQuota({ gigabytes: q(100, 30, 5) }, 'ceph')).toEqual({ available: 65 * GiB, largest: 65 * GiB });
  expect(capacityFromQuota({ gigabytes: q(100, 30), gigabytes_ceph: q(10, 4) }, 'ceph')).toEqual({
    available: 6 * GiB,
    largest: 6 * GiB,
  });
  expect(capacityFromQuota({ gigabytes: q(100, 30), gigabytes_fast: q(10, 4) }, 'ceph').available).toBe(70 * GiB);
  expect(capacityFromQuota({ gigabytes: q(10, 12) }, 'ceph').available).toBe(0);
});

test('unlimited quotas report the large, exact UNLIMITED_BYTES and no maximum size', () => {
  expect(capacityFromQuota({ gigabytes: q(-1, 30), gigabytes_ceph: q(-1) }, 'ceph')).toEqual({
    available: UNLIMITED_BYTES,
  });
  expect(Number.isSafeInteger(UNLIMITED_BYTES) && UNLIMITED_BYTES % GiB === 0).toBe(true);
});

test('a per-volume limit bounds the largest volume', () => {
  expect(capacityFromQuota({ gigabytes: q(-1), per_volume_gigabytes: q(50) }, 'ceph')).toEqual({
    available: UNLIMITED_BYTES,
    largest: 50 * GiB,
  });
  expect(capacityFromQuota({ gigabytes: q(20), per_volume_gigabytes: q(50) }, 'ceph')).toEqual({
    available: 20 * GiB,
    largest: 20 * GiB,
  });
});
