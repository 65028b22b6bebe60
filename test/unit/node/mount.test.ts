import {
  mkfsCommand,
  mountAt,
  mountOptions,
  parseBlkidExport,
  parseMountInfo,
} from '../../../src/node/host/mount-commands.js';
import { isContextFlag, seLinuxContext, splitMountOptions } from '../../../src/node/host/selinux.js';

const MOUNTINFO = `22 1 0:21 / / rw,relatime shared:1 - ext4 /dev/vda1 rw
98 22 0:45 / /var/lib/stackube-csi/fuse/vol-1 rw,nosuid,nodev,relatime shared:50 - fuse.rbd-fuse rbd-fuse rw,user_id=0,group_id=0
99 22 7:3 / /var/lib/kubelet/plugins/kubernetes.io/csi/cinder.csi.stackube.io/abc/globalmount rw,relatime shared:51 - xfs /dev/loop3 rw,nouuid,attr2
100 22 7:3 / /var/lib/kubelet/pods/p1/volumes/kubernetes.io~csi/pvc-1/mount ro,relatime shared:51 - xfs /dev/loop3 rw,nouuid
101 22 0:5 /loop4 /var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/p2 rw,nosuid shared:2 - devtmpfs udev rw,size=4096k
102 22 0:50 / /var/lib/kubelet/with\\040space rw - tmpfs tmpfs rw
`;

describe('mountinfo', () => {
  const mounts = parseMountInfo(MOUNTINFO);

  test('fields, device numbers, and bind mounts of a device node', () => {
    expect(mounts).toHaveLength(6);
    expect(mounts[2]).toMatchObject({ devNumber: '7:3', fsType: 'xfs', source: '/dev/loop3', root: '/' });
    expect(mounts[4]).toMatchObject({
      fsType: 'devtmpfs',
      root: '/loop4',
      mountpoint: '/var/lib/kubelet/plugins/kubernetes.io/csi/volumeDevices/publish/pvc-2/p2',
    });
    expect(mounts[3]!.options).toContain('ro');
  });

  test('octal escapes in paths are decoded', () => {
    expect(mountAt(mounts, '/var/lib/kubelet/with space')?.fsType).toBe('tmpfs');
    expect(mountAt(mounts, '/nowhere')).toBeUndefined();
  });
});

describe('blkid -p -o export', () => {
  test('a filesystem, a partition table, and other signatures', () => {
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nUUID=1b2c\nBLOCK_SIZE=4096\nTYPE=ext4\nUSAGE=filesystem\n')).toEqual({
      fsType: 'ext4',
    });
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nPTUUID=5d1c0e7a\nPTTYPE=dos\n')).toEqual({ partitionTable: 'dos' });
    expect(parseBlkidExport('DEVNAME=/dev/loop0\nUUID=x\nTYPE=LVM2_member\nUSAGE=raid\n')).toEqual({
      other: 'LVM2_member (raid)',
    });
    expect(parseBlkidExport('')).toEqual({});
  });
});

describe('mkfs and mount options', () => {
  test('mkfs never discards and never forces over xfs data (blank devices only reach it)', () => {
    expect(mkfsCommand('ext4', '/dev/loop0')).toEqual([
      'mkfs.ext4',
      ['-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', '/dev/loop0'],
    ]);
    expect(mkfsCommand('xfs', '/dev/loop0')).toEqual(['mkfs.xfs', ['-q', '-K', '/dev/loop0']]);
  });

  test('xfs gets nouuid (a clone beside its source); read-only wins over rw; flags split and de-duplicated', () => {
    expect(mountOptions('xfs', ['noatime'], false)).toEqual(['noatime', 'nouuid']);
    expect(mountOptions('ext4', ['rw,noatime', 'noatime'], true)).toEqual(['noatime', 'ro']);
    expect(mountOptions('ext4', [], false)).toEqual([]);
  });
});

describe('SELinux context flags (kubelet quotes the label: its categories hold a comma)', () => {
  const A = 'context="system_u:object_r:container_file_t:s0:c0,c1"';
  test('one option to mount(8), whole', () => {
    expect(splitMountOptions([A, 'noatime,nodiratime'])).toEqual([A, 'noatime', 'nodiratime']);
    expect(mountOptions('xfs', [A], true)).toEqual([A, 'ro', 'nouuid']);
    expect(seLinuxContext(splitMountOptions(['noatime', A]))).toBe('system_u:object_r:container_file_t:s0:c0,c1');
    expect(seLinuxContext(['noatime'])).toBeUndefined();
  });
  test('well-formed labels only; a comma only inside quotes', () => {
    expect(isContextFlag(A)).toBe(true);
    expect(isContextFlag('context=system_u:object_r:container_file_t:s0')).toBe(true);
    expect(isContextFlag('context="system_u:object_r:container_file_t:s0-s0:c0.c1023"')).toBe(true);
    for (const bad of [
      'context=system_u:object_r:x:s0:c0,c1',
      'context="a b"',
      'context="system_u:object_r"',
      'context="x:y:z:s0";rm',
      'fscontext=x',
    ])
      expect([bad, isContextFlag(bad)]).toEqual([bad, false]);
  });
});
