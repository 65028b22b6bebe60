import { localDaemons } from '../../../src/node/mappers/mapper-host.js';
import { LoopDevices } from '../../../src/node/host/loop.js';
import { CommandError, type Runner, type RunResult } from '../../../src/node/host/command.js';
import { FuseMapper } from '../../../src/node/mappers/fuse.js';
import { KrbdMapper, parseKrbdList } from '../../../src/node/mappers/krbd.js';
import { callFailure, CephCallError } from '../../../src/node/ceph/session.js';
import { cephFailure, mappedDevicePath } from '../../../src/node/mappers/map-output.js';
import type { ImageSpec } from '../../../src/node/mappers/mapper.js';
import { NbdMapper, parseNbdList } from '../../../src/node/mappers/nbd.js';

const SPEC: ImageSpec = {
  pool: 'volumes',
  image: 'volume-3f0c',
  monitors: ['10.0.0.1:6789', '[fd00::2]:6789'],
  user: 'cinder',
  cluster: 'ceph',
};

/** Recorded outputs of Ceph 16.2 tools, as the mappers see them. */
const KRBD_LIST =
  '[{"id":"0","pool":"volumes","namespace":"","name":"volume-3f0c","snap":"-","device":"/dev/rbd0"},{"id":"1","pool":"other","namespace":"","name":"x","snap":"-","device":"/dev/rbd1"}]\n';
const NBD_LIST =
  '[{"id":48211,"pool":"volumes","namespace":"","image":"volume-3f0c","snap":"-","device":"/dev/nbd0","cookie":"2b5ea4d2-8d3a-4b0a-9a34-5a1f0e6f3c1d"}]';

/** A runner that answers from a script and records every command line (no host needed). */
function scriptedRunner(answer: (cmd: string, args: string[]) => Partial<RunResult> | Error): {
  run: Runner;
  calls: string[][];
} {
  const calls: string[][] = [];
  const run: Runner = async (cmd, args) => {
    calls.push([cmd, ...args]);
    const a = answer(cmd, args);
    if (a instanceof Error) throw a;
    return { stdout: '', stderr: '', exitCode: 0, ...a };
  };
  return { run, calls };
}

describe('krbd command lines and outputs', () => {
  test('map: identity, monitors and conf as arguments, the key only as a keyring path', () => {
    const m = new KrbdMapper({ run: scriptedRunner(() => ({})).run, cephConf: '/etc/ceph/ceph.conf' });
    expect(m.mapArgs({ spec: SPEC, keyringFile: '/var/lib/stackube-csi/tmp/ab.keyring', readonly: false })).toEqual([
      'device',
      'map',
      '--id',
      'cinder',
      '--keyring',
      '/var/lib/stackube-csi/tmp/ab.keyring',
      '-m',
      '10.0.0.1:6789,[fd00::2]:6789',
      '--client_mount_timeout',
      '30',
      '-c',
      '/etc/ceph/ceph.conf',
      'volumes/volume-3f0c',
    ]);
    expect(
      new KrbdMapper({ run: scriptedRunner(() => ({})).run }).mapArgs({
        spec: SPEC,
        keyringFile: '/k',
        readonly: true,
      }),
    ).toEqual(expect.arrayContaining(['--read-only', '-c', '/dev/null']));
  });

  test('rbd device list --format json parses; an empty list is []', () => {
    expect(parseKrbdList(KRBD_LIST)).toEqual([
      { device: '/dev/rbd0', pool: 'volumes', namespace: '', image: 'volume-3f0c', snap: '-' },
      { device: '/dev/rbd1', pool: 'other', namespace: '', image: 'x', snap: '-' },
    ]);
    expect(parseKrbdList('[]')).toEqual([]);
    expect(parseKrbdList('')).toEqual([]);
  });

  test('unmap finds the device by image when no mapping was recorded, and "not mapped" is success', async () => {
    const { run, calls } = scriptedRunner((cmd, args) => {
      if (args[1] === 'list') return { stdout: KRBD_LIST };
      if (args[1] === 'unmap')
        return new CommandError(
          `${cmd} ${args.join(' ')}`,
          22,
          'rbd: sysfs write failed\nrbd: unmap failed: (22) Invalid argument',
          'exit',
        );
      return {};
    });
    await new KrbdMapper({ run }).unmap(SPEC, 'vol-1');
    expect(calls).toEqual([
      ['rbd', 'device', 'list', '--format', 'json'],
      ['rbd', 'device', 'unmap', '/dev/rbd0'],
    ]);
  });

  test('map of an image already mapped (a stage that crashed) takes the mapping over instead of mapping twice', async () => {
    const { run, calls } = scriptedRunner((_c, args) => (args[1] === 'list' ? { stdout: KRBD_LIST } : {}));
    const m = new KrbdMapper({ run, deviceTimeoutMs: 50 });
    // /dev/rbd0 does not exist here: the device wait fails, and the mapping is undone
    await expect(m.map({ spec: SPEC, keyringFile: '/k', readonly: false, volumeKey: 'v' })).rejects.toThrow(
      '/dev/rbd0 did not appear',
    );
    expect(calls.filter((c) => c[2] === 'map')).toEqual([]);
    expect(calls.at(-1)).toEqual(['rbd', 'device', 'unmap', '/dev/rbd0']);
  });

  test('the map command waits for beforeOpen, and a beforeOpen that fails fails the map without mapping', async () => {
    const { run, calls } = scriptedRunner((_c, args) =>
      args[1] === 'list' ? { stdout: '[]' } : { stdout: '/dev/rbd0\n' },
    );
    let seen!: () => void;
    const before = new Promise<void>((resolve) => (seen = resolve));
    const mapping = new KrbdMapper({ run, deviceTimeoutMs: 50 })
      .map({ spec: SPEC, keyringFile: '/k', readonly: false, volumeKey: 'v', beforeOpen: before })
      .catch((e: Error) => e);
    await new Promise((r) => setTimeout(r, 20));
    expect(calls.filter((c) => c[2] === 'map')).toEqual([]);
    seen();
    await mapping; // /dev/rbd0 does not exist here: the device wait fails; the map ran after beforeOpen
    expect(calls.filter((c) => c[2] === 'map')).toHaveLength(1);

    const refused = scriptedRunner(() => ({ stdout: '[]' }));
    const failure = new Error('watchers: refused');
    await expect(
      new KrbdMapper({ run: refused.run }).map({
        spec: SPEC,
        keyringFile: '/k',
        readonly: false,
        volumeKey: 'v',
        beforeOpen: Promise.reject(failure),
      }),
    ).rejects.toBe(failure);
    expect(refused.calls.filter((c) => c[2] === 'map')).toEqual([]);
  });

  test('a failed map says what it means: missing image, refused key, unreachable monitors', async () => {
    const fail = (stderr: string, reason: 'exit' | 'timeout' = 'exit') =>
      scriptedRunner((_c, args) =>
        args[1] === 'list'
          ? { stdout: '[]' }
          : new CommandError('rbd device map …', reason === 'exit' ? 2 : undefined, stderr, reason),
      ).run;
    const map = (run: Runner) =>
      new KrbdMapper({ run }).map({ spec: SPEC, keyringFile: '/k', readonly: false, volumeKey: 'v' });
    await expect(
      map(
        fail(
          'rbd: error opening image volume-3f0c: (2) No such file or directory\nrbd: map failed: (2) No such file or directory',
        ),
      ),
    ).rejects.toMatchObject({
      kind: 'not-found',
      message: expect.stringContaining('RBD image volumes/volume-3f0c does not exist'),
    });
    await expect(
      map(
        fail(
          "2024-01-01 -1 monclient(hunting): handle_auth_bad_method server allowed_methods [2] but i only support [2]\nrbd: couldn't connect to the cluster!",
        ),
      ),
    ).rejects.toMatchObject({
      kind: 'permission-denied',
      message: expect.stringContaining('Ceph refused client.cinder'),
    });
    await expect(map(fail('', 'timeout'))).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringContaining('10.0.0.1:6789,[fd00::2]:6789'),
    });
    await expect(
      map(fail('rbd: sysfs write failed\nrbd: map failed: (95) Operation not supported')),
    ).rejects.toMatchObject({ kind: 'internal' });
  });
});

describe('rbd-nbd command lines and outputs', () => {
  test('map and unmap command lines', () => {
    const m = new NbdMapper({ run: scriptedRunner(() => ({})).run });
    expect(m.mapArgs({ spec: SPEC, keyringFile: '/k', readonly: true })).toEqual([
      'map',
      '--read-only',
      '--id',
      'cinder',
      '--keyring',
      '/k',
      '-m',
      '10.0.0.1:6789,[fd00::2]:6789',
      '--client_mount_timeout',
      '30',
      '-c',
      '/dev/null',
      'volumes/volume-3f0c',
    ]);
    expect(m.unmapArgs('/dev/nbd0')).toEqual(['unmap', '/dev/nbd0']);
    expect(m.listArgs()).toEqual(['list-mapped', '--format', 'json']);
  });

  test('list-mapped --format json parses with the daemon pid (and tolerates the newer cookie field)', () => {
    expect(parseNbdList(NBD_LIST)).toEqual([
      { device: '/dev/nbd0', pool: 'volumes', namespace: '', image: 'volume-3f0c', snap: '-', pid: 48211 },
    ]);
    expect(parseNbdList('[]')).toEqual([]);
  });

  test('map prints the device; the pid comes from list-mapped', async () => {
    let mapped = false;
    const { run, calls } = scriptedRunner((_c, args) => {
      if (args[0] === 'list-mapped') return { stdout: mapped ? NBD_LIST : '[]' };
      if (args[0] === 'map') {
        mapped = true;
        return { stdout: '/dev/nbd0\n' };
      }
      return {};
    });
    await expect(
      new NbdMapper({ run, deviceTimeoutMs: 50 }).map({
        spec: SPEC,
        keyringFile: '/k',
        readonly: false,
        volumeKey: 'v',
      }),
    ).rejects.toThrow('/dev/nbd0 did not appear');
    expect(calls.map((c) => c[1])).toEqual(['list-mapped', 'map', 'list-mapped', 'list-mapped', 'unmap']);
  });
});

describe('map output', () => {
  test('the device is the last /dev line, whatever warnings come before it', () => {
    expect(mappedDevicePath('did not load config file, using default settings.\n/dev/rbd3\n', 'rbd device map')).toBe(
      '/dev/rbd3',
    );
    expect(() => mappedDevicePath('rbd: warning: something\n', 'rbd device map')).toThrow('printed no device path');
  });

  test('rbd-fuse log lines are classified like the CLI tools', () => {
    expect(
      cephFailure(
        '2026-11-25T16:33:09 -1 monclient(hunting): handle_auth_bad_method server allowed_methods [2] but i only support [2]\nfailed to fetch mon config (--no-mon-config to skip)',
        'rbd-fuse',
        SPEC,
      ).kind,
    ).toBe('permission-denied');
    expect(cephFailure('monclient(hunting): authenticate timed out after 30', 'rbd-fuse', SPEC).kind).toBe(
      'unavailable',
    );
  });

  test("the Ceph session's failures keep their meaning: Ceph's answer by its errno, a cancel, a timeout, the helper", () => {
    const kind = (e: CephCallError) => callFailure(e, 'rbd status', SPEC).kind;
    expect(kind(new CephCallError('watchers', 2, '(2) No such file or directory: error opening image', 'ceph'))).toBe(
      'not-found',
    );
    expect(kind(new CephCallError('omap-get', 13, '(13) Permission denied: Ceph refused', 'ceph'))).toBe(
      'permission-denied',
    );
    expect(
      kind(new CephCallError('omap-get', undefined, 'KeyringUnreadable: failed to load keyring /k: denied', 'ceph')),
    ).toBe('permission-denied');
    expect(kind(new CephCallError('omap-get', 110, '(110) Connection timed out', 'ceph'))).toBe('unavailable');
    expect(kind(new CephCallError('omap-get', undefined, 'no answer in 60000 ms', 'timeout'))).toBe('unavailable');
    expect(kind(new CephCallError('omap-get', undefined, 'cancelled by the caller', 'cancelled'))).toBe('aborted');
    expect(kind(new CephCallError('omap-get', undefined, 'the Ceph session helper exited (SIGKILL)', 'helper'))).toBe(
      'unavailable',
    );
    expect(kind(new CephCallError('omap-get', 5, '(5) Input/output error', 'ceph'))).toBe('internal');
  });
});

describe('rbd-fuse command line', () => {
  const run = scriptedRunner(() => ({})).run;
  const fuse = new FuseMapper({
    run,
    stateDir: '/var/lib/stackube-csi',
    cephConf: '/etc/ceph/ceph.conf',
    daemons: localDaemons,
    loops: new LoopDevices({ run, table: async () => ({}) }),
  });

  test('one image per process, foreground, under the state dir; identity through CEPH_ARGS', () => {
    const p = fuse.paths('vol-1', SPEC.image);
    expect(p).toEqual({
      mountpoint: '/var/lib/stackube-csi/fuse/vol-1',
      imageFile: '/var/lib/stackube-csi/fuse/vol-1/volume-3f0c',
      log: '/var/lib/stackube-csi/fuse/vol-1.log',
    });
    expect(fuse.fuseArgs(SPEC, p.mountpoint)).toEqual([
      '-f',
      '-c',
      '/etc/ceph/ceph.conf',
      '-p',
      'volumes',
      '-r',
      'volume-3f0c',
      '/var/lib/stackube-csi/fuse/vol-1',
    ]);
    expect(fuse.fuseEnv(SPEC, '/var/lib/stackube-csi/tmp/1.keyring')).toEqual({
      CEPH_ARGS:
        '--id cinder --keyring /var/lib/stackube-csi/tmp/1.keyring -m 10.0.0.1:6789,[fd00::2]:6789 --client_mount_timeout 30',
    });
  });

  test('a keyring path with whitespace is refused (CEPH_ARGS splits on it)', () => {
    expect(() => fuse.fuseEnv(SPEC, '/var/lib/my keys/k')).toThrow('CEPH_ARGS cannot hold whitespace');
  });
});
