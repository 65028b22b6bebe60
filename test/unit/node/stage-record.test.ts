import { mkdirSync, mkdtempSync, readdirSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type StageRecord, StageRecords, volumeKey } from '../../../src/node/volumes/stage-records.js';

const record = (volumeId: string): StageRecord => ({
  version: 1,
  volumeId,
  stagingPath: '/var/lib/kubelet/plugins/x/globalmount',
  stageArgs: 'abc',
  image: {
    pool: 'volumes',
    image: `volume-${volumeId}`,
    monitors: ['127.0.0.1:6789'],
    user: 'cinder',
    cluster: 'ceph',
  },
  mapper: 'fuse',
  clients: [],
  phase: 'mounted',
  attachMode: 'auto',
  mountFlags: ['noatime'],
  mapping: { kind: 'fuse', device: '/dev/loop2', pid: 1234, mountpoint: '/s/fuse/v', imageFile: '/s/fuse/v/volume-v' },
  accessType: 'mount',
  accessMode: 'SINGLE_NODE_WRITER',
  readonly: false,
  fsType: 'ext4',
  mountOptions: ['noatime'],
  formatted: true,
  targets: { '/var/lib/kubelet/pods/p/mount': { kind: 'mount', readonly: false, args: 'def' } },
  updatedAt: '',
});

describe('stage records', () => {
  const state = mkdtempSync(join(tmpdir(), 'csi-records-'));
  const records = new StageRecords(state);

  test('written atomically (no temp file left), 0600, read back equal', async () => {
    const written = await records.write(record('v1'));
    expect(await records.read('v1')).toEqual(written);
    expect(readdirSync(records.dir)).toEqual(['v1.json']);
    expect(statSync(join(records.dir, 'v1.json')).mode & 0o777).toBe(0o600);
  });

  test('an unknown volume has no record; removing twice is fine', async () => {
    expect(await records.read('nope')).toBeUndefined();
    await records.remove('v1');
    await records.remove('v1');
    expect(await records.read('v1')).toBeUndefined();
  });

  test('a damaged record is an error naming the file on read, and listed as damaged', async () => {
    await records.write(record('v2'));
    writeFileSync(join(records.dir, 'v3.json'), '{"version":1,');
    await expect(records.read('v3')).rejects.toThrow(/v3.json is damaged \(not JSON/);
    const { records: ok, damaged } = await records.list();
    expect(ok.map((r) => r.volumeId)).toEqual(['v2']);
    expect(damaged).toEqual(['v3.json']);
  });

  test('volume keys: tame ids as they are, anything else hashed', () => {
    expect(volumeKey('3f0c6a1e-5b7e-4d2b-9c3a-1a2b3c4d5e6f')).toBe('3f0c6a1e-5b7e-4d2b-9c3a-1a2b3c4d5e6f');
    expect(volumeKey('../../etc/passwd')).toMatch(/^h-[0-9a-f]{40}$/);
    expect(volumeKey('a/b')).not.toBe(volumeKey('a_b'));
  });
});

test('records written before attachMode and mountFlags existed read as auto, no flags', async () => {
  const state = mkdtempSync(join(tmpdir(), 'csi-records-'));
  const records = new StageRecords(state);
  const { attachMode: _a, mountFlags: _f, ...old } = record('v-old');
  mkdirSync(records.dir, { recursive: true });
  writeFileSync(join(records.dir, `${volumeKey('v-old')}.json`), JSON.stringify(old));
  expect(await records.read('v-old')).toMatchObject({ attachMode: 'auto', mountFlags: [] });
});
