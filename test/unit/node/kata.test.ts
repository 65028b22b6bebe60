import { mkdtempSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import {
  directVolumeDir,
  encodeVolumePath,
  DirectVolumeCli,
  findDirectVolumeTools,
  KataVolumeError,
  MOUNT_INFO_FILE,
  parseGuestStats,
  readDirectVolume,
  removeDirectVolume,
  writeDirectVolume,
} from '../../../src/node/kata/direct-volume.js';
import type { Runner } from '../../../src/node/host/command.js';

const TARGET = '/var/lib/kubelet/pods/0d2f/volumes/kubernetes.io~csi/pvc-1/mount';

describe('direct-volume directory names (Go base64.URLEncoding: URL-safe, padded)', () => {
  test("Kata's documented example", () => {
    // docs/how-to/how-to-run-kata-containers-with-kinds-of-Block-Volumes.md
    expect(encodeVolumePath('/kubelet/kata-test-vol-001/volume001')).toBe(
      'L2t1YmVsZXQva2F0YS10ZXN0LXZvbC0wMDEvdm9sdW1lMDAx',
    );
  });
  test('keeps = padding, which Node’s base64url would drop', () => {
    expect(encodeVolumePath(TARGET)).toBe(
      'L3Zhci9saWIva3ViZWxldC9wb2RzLzBkMmYvdm9sdW1lcy9rdWJlcm5ldGVzLmlvfmNzaS9wdmMtMS9tb3VudA==',
    );
    expect(Buffer.from(TARGET).toString('base64url')).not.toBe(encodeVolumePath(TARGET));
  });
  test('uses - and _ instead of + and /', () => {
    expect(encodeVolumePath('/a?>b~~')).toBe('L2E_PmJ-fg==');
  });
});

describe('mountInfo.json', () => {
  let root: string;
  beforeEach(() => {
    root = join(mkdtempSync(join(tmpdir(), 'kata-')), 'direct-volumes');
  });
  afterEach(() => rmSync(join(root, '..'), { recursive: true, force: true }));

  test('written with the runtime’s field names, dir 0700, file 0600, nothing else in the directory', async () => {
    const file = await writeDirectVolume(root, TARGET, { device: '/dev/loop7', fsType: 'ext4', readonly: false });
    expect(file).toBe(join(root, encodeVolumePath(TARGET), MOUNT_INFO_FILE));
    expect(JSON.parse(readFileSync(file, 'utf8'))).toEqual({
      'volume-type': 'directvol',
      device: '/dev/loop7',
      fstype: 'ext4',
      metadata: {},
      options: ['rw'],
    });
    expect(statSync(directVolumeDir(root, TARGET)).mode & 0o777).toBe(0o700);
    expect(statSync(file).mode & 0o777).toBe(0o600);
    // the runtime takes any other file in the directory for a sandbox id: no temporary files may stay
    expect(readdirSync(directVolumeDir(root, TARGET))).toEqual([MOUNT_INFO_FILE]);
    expect(readdirSync(root)).toEqual([encodeVolumePath(TARGET)]);
  });

  test('read-only and fsGroup reach the guest: options ro, metadata fsGroup + policy', async () => {
    await writeDirectVolume(root, TARGET, {
      device: '/dev/rbd3',
      fsType: 'xfs',
      readonly: true,
      fsGroup: 2000,
      fsGroupChangePolicy: 'OnRootMismatch',
    });
    const state = await readDirectVolume(root, TARGET);
    expect(state?.info).toEqual({
      'volume-type': 'directvol',
      device: '/dev/rbd3',
      fstype: 'xfs',
      metadata: { fsGroup: '2000', fsGroupChangePolicy: 'OnRootMismatch' },
      options: ['ro'],
    });
    expect(state?.sandboxIds).toEqual([]);
  });

  test('rewriting the same device replaces the file; a sandbox id file the runtime recorded is reported and kept', async () => {
    await writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: false });
    writeFileSync(join(directVolumeDir(root, TARGET), 'sandbox-4f1e'), '');
    await writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: true });
    const state = await readDirectVolume(root, TARGET);
    expect(state?.info.options).toEqual(['ro']);
    expect(state?.sandboxIds).toEqual(['sandbox-4f1e']);
    expect(readdirSync(root)).toEqual([basename(directVolumeDir(root, TARGET))]); // no temporary file left
  });

  test("another device's file is never replaced nor removed: the other volume keeps its VM disk", async () => {
    await writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: false });
    await expect(
      writeDirectVolume(root, TARGET, { device: '/dev/loop2', fsType: 'ext4', readonly: false }),
    ).rejects.toMatchObject({ conflict: true, message: expect.stringMatching(/already hands \/dev\/loop1 to a VM/) });
    // two publishes racing for one target: exactly one file, and the loser refused
    const other = `${TARGET}-race`;
    const results = await Promise.allSettled(
      ['/dev/loop3', '/dev/loop4'].map((device) =>
        writeDirectVolume(root, other, { device, fsType: 'ext4', readonly: false }),
      ),
    );
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(await removeDirectVolume(root, TARGET, '/dev/loop2')).toBe(false);
    expect((await readDirectVolume(root, TARGET))?.info.device).toBe('/dev/loop1');
    expect(readdirSync(root).filter((n) => n.endsWith('.tmp'))).toEqual([]);
  });

  test('remove takes the directory and everything in it; twice is fine; read then finds nothing', async () => {
    await writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: false });
    writeFileSync(join(directVolumeDir(root, TARGET), 'sandbox-1'), '');
    expect(await removeDirectVolume(root, TARGET, '/dev/loop1')).toBe(true);
    expect(await removeDirectVolume(root, TARGET, '/dev/loop1')).toBe(true);
    expect(readdirSync(root)).toEqual([]);
    expect(await readDirectVolume(root, TARGET)).toBeUndefined();
  });

  test('a damaged file is reported, not taken for a volume', async () => {
    await writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: false });
    writeFileSync(join(directVolumeDir(root, TARGET), MOUNT_INFO_FILE), '{"device": "loop1"}');
    await expect(readDirectVolume(root, TARGET)).rejects.toThrow(
      /is not Kata mount info.*volume-type.*device: must be an absolute device path/,
    );
    writeFileSync(join(directVolumeDir(root, TARGET), MOUNT_INFO_FILE), 'not json');
    await expect(readDirectVolume(root, TARGET)).rejects.toThrow(KataVolumeError);
  });

  test('a target path too long for a directory name says so', async () => {
    const long = `/var/lib/kubelet/pods/${'x'.repeat(200)}/mount`;
    await expect(
      writeDirectVolume(root, long, { device: '/dev/loop1', fsType: 'ext4', readonly: false }),
    ).rejects.toThrow(/too long for a Kata direct-volume directory name \(304 characters encoded, 255 allowed\)/);
  });

  test('a file where the directory should be is refused', async () => {
    await writeDirectVolume(root, '/other', { device: '/dev/loop1', fsType: 'ext4', readonly: false });
    writeFileSync(directVolumeDir(root, TARGET), 'x');
    await expect(
      writeDirectVolume(root, TARGET, { device: '/dev/loop1', fsType: 'ext4', readonly: false }),
    ).rejects.toThrow(/should be a directory/);
  });
});

describe('kata-ctl / kata-runtime direct-volume', () => {
  const recorder = (stdout = '') => {
    const calls: string[][] = [];
    const exec: Runner = async (cmd, args) => {
      calls.push([cmd, ...args]);
      return { stdout, stderr: '', exitCode: 0 };
    };
    return { calls, exec };
  };

  test('stats: the command lines kata-runtime (flags) and kata-ctl (positional) define, and the agent’s numbers', async () => {
    const out = JSON.stringify({
      usage: [
        { available: 900, total: 1000, used: 100, unit: 1 },
        { available: 60, total: 64, used: 4, unit: 2 },
      ],
    });
    const { calls, exec } = recorder(out);
    const stats = await new DirectVolumeCli({ kind: 'kata-runtime', path: '/opt/kata/bin/kata-runtime' }, exec).stats(
      TARGET,
    );
    await new DirectVolumeCli({ kind: 'kata-ctl', path: '/opt/kata/bin/kata-ctl' }, exec).stats(TARGET);
    expect(calls).toEqual([
      ['/opt/kata/bin/kata-runtime', 'direct-volume', 'stats', '--volume-path', TARGET],
      ['/opt/kata/bin/kata-ctl', 'direct-volume', 'stats', TARGET],
    ]);
    expect(stats).toEqual({
      bytes: { total: 1000, used: 100, available: 900 },
      inodes: { total: 64, used: 4, available: 60 },
      abnormal: undefined,
    });
  });

  test('resize: size in bytes', async () => {
    const { calls, exec } = recorder();
    await new DirectVolumeCli({ kind: 'kata-runtime', path: 'kata-runtime' }, exec).resize(TARGET, 2 * 1024 ** 3);
    await new DirectVolumeCli({ kind: 'kata-ctl', path: 'kata-ctl' }, exec).resize(TARGET, 2 * 1024 ** 3);
    expect(calls).toEqual([
      ['kata-runtime', 'direct-volume', 'resize', '--volume-path', TARGET, '--size', '2147483648'],
      ['kata-ctl', 'direct-volume', 'resize', TARGET, '2147483648'],
    ]);
    await expect(new DirectVolumeCli({ kind: 'kata-ctl', path: 'kata-ctl' }, exec).resize(TARGET, 0)).rejects.toThrow(
      /cannot resize to 0 bytes/,
    );
  });

  test('which tools: kata-ctl (Kata 4 runtime-rs) before kata-runtime; only those found', async () => {
    const on = (have: Record<string, string>) => findDirectVolumeTools(async (cmd) => have[cmd]);
    expect(await on({ 'kata-runtime': '/opt/kata/bin/kata-runtime', 'kata-ctl': '/opt/kata/bin/kata-ctl' })).toEqual([
      { kind: 'kata-ctl', path: '/opt/kata/bin/kata-ctl' },
      { kind: 'kata-runtime', path: '/opt/kata/bin/kata-runtime' },
    ]);
    expect(await on({ 'kata-runtime': '/usr/bin/kata-runtime' })).toEqual([
      { kind: 'kata-runtime', path: '/usr/bin/kata-runtime' },
    ]);
    expect(await on({})).toEqual([]);
  });

  test('stats output: enum names, missing zero fields (omitempty), an abnormal condition, garbage', () => {
    expect(
      parseGuestStats(
        '{"usage":[{"total":5,"unit":"BYTES"}],"volume_condition":{"abnormal":true,"message":"fs errors"}}',
      ),
    ).toEqual({
      bytes: { total: 5, used: 0, available: 0 },
      inodes: undefined,
      abnormal: 'fs errors',
    });
    expect(() => parseGuestStats('Error: no sandbox found')).toThrow(/not JSON: Error: no sandbox found/);
    expect(() => parseGuestStats('{"usage":[{"unit":"PAGES"}]}')).toThrow(/unexpected JSON \(usage.0.unit\)/);
  });
});
