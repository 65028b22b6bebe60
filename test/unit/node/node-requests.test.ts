import { kubeletPath, stageCredentials, volumeUse } from '../../../src/csi/node-requests.js';
import { type CsiError, Status } from '../../../src/server/errors.js';

const codeOf = (fn: () => unknown): number | undefined => {
  try {
    fn();
  } catch (e) {
    return (e as CsiError).code;
  }
  return undefined;
};

describe('paths from the CO', () => {
  const root = '/var/lib/kubelet';
  test('inside the kubelet root: accepted (a trailing slash is tolerated)', () => {
    expect(kubeletPath('/var/lib/kubelet/pods/p/volumes/x/mount', 'target_path', root)).toBe(
      '/var/lib/kubelet/pods/p/volumes/x/mount',
    );
    expect(kubeletPath('/var/lib/kubelet/plugins/x/', 'staging_target_path', root)).toBe('/var/lib/kubelet/plugins/x');
  });
  test.each([
    ['/etc', 'outside the kubelet root'],
    ['/var/lib/kubelet', 'outside the kubelet root'],
    ['/var/lib/kubeletx/a', 'outside the kubelet root'],
    ['/var/lib/kubelet/../../etc', 'normalised absolute path'],
    ['var/lib/kubelet/a', 'normalised absolute path'],
  ])('%s → INVALID_ARGUMENT (%s)', (p, why) => {
    expect(() => kubeletPath(p, 'target_path', root)).toThrow(why);
    expect(codeOf(() => kubeletPath(p, 'target_path', root))).toBe(Status.INVALID_ARGUMENT);
  });
  test('missing → the code the caller names', () => {
    expect(codeOf(() => kubeletPath('', 'target_path', root))).toBe(Status.INVALID_ARGUMENT);
  });
});

describe('volume capability', () => {
  const mount = (m: object, mode = 'SINGLE_NODE_WRITER') =>
    ({
      mount: { fs_type: '', mount_flags: [], volume_mount_group: '', ...m },
      access_mode: { mode },
      access_type: 'mount',
    }) as never;
  test('fsType from the capability, else the StorageClass (volume_context)', () => {
    expect(volumeUse(mount({ fs_type: 'xfs' }), { fsType: 'ext4' }).fsType).toBe('xfs');
    expect(volumeUse(mount({}), { fsType: 'xfs' }).fsType).toBe('xfs');
    expect(volumeUse(mount({}), {}).fsType).toBeUndefined();
  });
  test('mount group must be a numeric gid', () => {
    expect(volumeUse(mount({ volume_mount_group: '2000' }), {}).mountGroup).toBe(2000);
    expect(codeOf(() => volumeUse(mount({ volume_mount_group: 'wheel' }), {}))).toBe(Status.INVALID_ARGUMENT);
  });
  test('refused: missing parts, unknown fs, bind-style flags, multi-node writers on a filesystem', () => {
    expect(codeOf(() => volumeUse(null, {}))).toBe(Status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeUse({ access_mode: { mode: 'SINGLE_NODE_WRITER' } } as never, {}))).toBe(
      Status.INVALID_ARGUMENT,
    );
    expect(codeOf(() => volumeUse(mount({}, 'UNKNOWN'), {}))).toBe(Status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeUse(mount({ fs_type: 'ntfs' }), {}))).toBe(Status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeUse(mount({ mount_flags: ['remount'] }), {}))).toBe(Status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeUse(mount({ mount_flags: ['noatime x'] }), {}))).toBe(Status.INVALID_ARGUMENT);
    expect(codeOf(() => volumeUse(mount({}, 'MULTI_NODE_MULTI_WRITER'), {}))).toBe(Status.FAILED_PRECONDITION);
  });
  test('block access allows multi-node writers (the application coordinates)', () => {
    expect(
      volumeUse({ block: {}, access_mode: { mode: 'MULTI_NODE_MULTI_WRITER' }, access_type: 'block' } as never, {}),
    ).toEqual({ accessType: 'block', accessMode: 'MULTI_NODE_MULTI_WRITER', mountFlags: [] });
  });
});

describe('node-stage secret', () => {
  const KEY = 'AQBU66peVcBCKxAAoPQ4tKlJ9gxvrH3MRnDRHQ==';
  test('ceph-csi names: userID and userKey', () => {
    expect(stageCredentials({ userID: 'kube', userKey: KEY })).toEqual({ user: 'kube', key: KEY });
    expect(stageCredentials(undefined)).toEqual({ user: undefined, key: undefined });
  });
  test('a key that is not base64 (a newline could inject keyring lines) is refused without echoing it', () => {
    let message = '';
    try {
      stageCredentials({ userKey: `${KEY}\n[client.admin]` });
    } catch (e) {
      message = (e as Error).message;
    }
    expect(message).toMatch(/userKey must be a base64 Ceph key/);
    expect(message).not.toContain(KEY);
  });
});
