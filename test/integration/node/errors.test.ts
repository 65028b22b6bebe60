import { closeSync, existsSync, openSync, readdirSync, readFileSync, readSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { cephKey, type AttachedVolume } from '../../../harness/cinder-volumes.js';
import { expectCode } from '../../helpers/csi-client.js';
import { cap, nodeLeaks } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

const suite = nodeSuite('node-err');
const { dirs, co } = suite;

/** A well-formed publish_context for an image that does not exist. */
const GHOST: AttachedVolume = {
  volumeId: 'ghost-volume',
  attachmentId: '',
  publishContext: {
    rbdPool: 'volumes',
    rbdImage: 'volume-does-not-exist',
    rbdMonitors: '127.0.0.1:6789',
    rbdUser: 'cinder',
    rbdCluster: 'ceph',
    attachmentId: 'x',
    accessMode: 'rw',
    volumeId: 'ghost-volume',
  },
};

describe('missing or malformed arguments', () => {
  test('every node RPC: missing ids and paths, paths outside the kubelet root → INVALID_ARGUMENT', async () => {
    const n = suite.node.csi.Node as Required<typeof suite.node.csi.Node>;
    const staging = co.staging('pv-args');
    const target = co.target('pod-args', 'pv-args');
    const ok = {
      volume_id: 'v',
      publish_context: GHOST.publishContext,
      staging_target_path: staging,
      volume_capability: cap.mount(),
      target_path: target,
      volume_path: target,
    };
    const cases: [string, (r: object) => Promise<unknown>, object][] = [
      ['NodeStageVolume without volume_id', n.NodeStageVolume, { ...ok, volume_id: '' }],
      ['NodeStageVolume without staging_target_path', n.NodeStageVolume, { ...ok, staging_target_path: '' }],
      ['NodeStageVolume without volume_capability', n.NodeStageVolume, { ...ok, volume_capability: undefined }],
      [
        'NodeStageVolume without access type',
        n.NodeStageVolume,
        { ...ok, volume_capability: { access_mode: { mode: 'SINGLE_NODE_WRITER' } } },
      ],
      [
        'NodeStageVolume with a staging path outside the kubelet root',
        n.NodeStageVolume,
        { ...ok, staging_target_path: '/tmp' },
      ],
      [
        'NodeStageVolume with a relative trick',
        n.NodeStageVolume,
        { ...ok, staging_target_path: `${dirs.kubeletRoot}/../state` },
      ],
      ['NodeStageVolume without publish_context', n.NodeStageVolume, { ...ok, publish_context: {} }],
      [
        'NodeStageVolume with an unsupported fsType',
        n.NodeStageVolume,
        { ...ok, volume_capability: cap.mount('vfat') },
      ],
      ['NodeStageVolume with a malformed userKey', n.NodeStageVolume, { ...ok, secrets: { userKey: 'not a key' } }],
      ['NodePublishVolume without volume_id', n.NodePublishVolume, { ...ok, volume_id: '' }],
      ['NodePublishVolume without target_path', n.NodePublishVolume, { ...ok, target_path: '' }],
      ['NodePublishVolume without volume_capability', n.NodePublishVolume, { ...ok, volume_capability: undefined }],
      [
        'NodePublishVolume with a target outside the kubelet root',
        n.NodePublishVolume,
        { ...ok, target_path: '/etc/x' },
      ],
      ['NodeUnpublishVolume without volume_id', n.NodeUnpublishVolume, { ...ok, volume_id: '' }],
      ['NodeUnpublishVolume without target_path', n.NodeUnpublishVolume, { ...ok, target_path: '' }],
      [
        'NodeUnpublishVolume with a target outside the kubelet root',
        n.NodeUnpublishVolume,
        { ...ok, target_path: '/' },
      ],
      ['NodeUnstageVolume without volume_id', n.NodeUnstageVolume, { ...ok, volume_id: '' }],
      ['NodeUnstageVolume without staging_target_path', n.NodeUnstageVolume, { ...ok, staging_target_path: '' }],
      ['NodeUnstageVolume outside the kubelet root', n.NodeUnstageVolume, { ...ok, staging_target_path: '/var' }],
      ['NodeGetVolumeStats without volume_id', n.NodeGetVolumeStats, { ...ok, volume_id: '' }],
      ['NodeGetVolumeStats without volume_path', n.NodeGetVolumeStats, { ...ok, volume_path: '' }],
      ['NodeExpandVolume without volume_id', n.NodeExpandVolume, { ...ok, volume_id: '' }],
      ['NodeExpandVolume without volume_path', n.NodeExpandVolume, { ...ok, volume_path: '' }],
    ];
    for (const [name, rpc, req] of cases) {
      const err = await expectCode(rpc(req), status.INVALID_ARGUMENT).catch((e: Error) => {
        throw new Error(`${name}: ${e.message}`);
      });
      expect(err.details.length).toBeGreaterThan(10);
    }
    // a publish without a staging path is a CO that skipped NodeStageVolume (the spec's own code for it)
    await expectCode(n.NodePublishVolume({ ...ok, staging_target_path: '' }), status.FAILED_PRECONDITION);
  });

  test('stats and expand of a volume or path this plugin does not know → NOT_FOUND, the path never touched (csi-sanity)', async () => {
    const n = suite.node.csi.Node as Required<typeof suite.node.csi.Node>;
    for (const volume_path of ['some/path', '/proc', co.target('pod-nf', 'pv-nf'), `${dirs.kubeletRoot}/../state`]) {
      await expectCode(n.NodeGetVolumeStats({ volume_id: 'no-such-volume', volume_path }), status.NOT_FOUND);
      await expectCode(
        n.NodeExpandVolume({ volume_id: 'no-such-volume', volume_path, capacity_range: { required_bytes: 1 } }),
        status.NOT_FOUND,
      );
    }
  });

  test('a filesystem cannot be written from several nodes: MULTI_NODE_MULTI_WRITER with mount → FAILED_PRECONDITION', async () => {
    const staging = co.staging('pv-mnmw');
    const err = await expectCode(
      suite.ops.stage(GHOST, staging, cap.mount('ext4', 'MULTI_NODE_MULTI_WRITER')),
      status.FAILED_PRECONDITION,
    );
    expect(err.details).toMatch(/use block access/);
  });
});

describe('volumes that are not staged', () => {
  test('publish → FAILED_PRECONDITION; unpublish and unstage → OK; stats and expand → NOT_FOUND', async () => {
    const staging = co.staging('pv-none');
    const target = co.target('pod-none', 'pv-none');
    const err = await expectCode(suite.ops.publish(GHOST, staging, target, cap.mount()), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/not staged on this node/);
    await suite.ops.unpublish(GHOST, target);
    await suite.ops.unstage(GHOST, staging);
    await expectCode(suite.ops.stats(GHOST, staging), status.NOT_FOUND);
    await expectCode(suite.ops.expand(GHOST, staging, 1 << 30), status.NOT_FOUND);
  });

  test('an image that does not exist → NOT_FOUND, and the failed stage leaves nothing behind', async () => {
    const staging = co.staging('pv-ghost');
    const err = await expectCode(suite.ops.stage(GHOST, staging, cap.mount()), status.NOT_FOUND);
    expect(err.details).toMatch(/RBD image volumes\/volume-does-not-exist does not exist/);
    expect(readdirSync(join(dirs.stateDir, 'volumes'))).toEqual([]);
  });
});

describe('staged volumes', () => {
  let v: AttachedVolume;
  beforeAll(async () => {
    v = await suite.volumes.createAttached('node-test');
  });

  test('stage: same arguments → OK; other capability → ALREADY_EXISTS; another staging path → FAILED_PRECONDITION', async () => {
    const staging = co.staging('pv-stage');
    const other = co.staging('pv-stage-other');
    await suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', ['noatime']));
    await suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', ['noatime']));
    await expectCode(suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', [])), status.ALREADY_EXISTS);
    await expectCode(suite.ops.stage(v, staging, cap.block()), status.ALREADY_EXISTS);
    await expectCode(
      suite.ops.stage(v, other, cap.mount('ext4', 'SINGLE_NODE_WRITER', ['noatime'])),
      status.FAILED_PRECONDITION,
    );
    // unstage at a path where it is not staged: OK and the real stage stays
    await suite.ops.unstage(v, other);
    expect((await suite.ops.stats(v, staging)).volume_condition.abnormal).toBe(false);
    await suite.ops.unstage(v, staging);
  });

  test("another volume id never stages this volume's image: publish_context names its volume, and one image has one stage", async () => {
    const staging = co.staging('pv-image');
    const other = co.staging('pv-image-other');
    expect(v.publishContext.volumeId).toBe(v.volumeId);
    const err = await expectCode(
      suite.ops.stage({ ...v, volumeId: 'another-volume' }, other, cap.mount('ext4')),
      status.INVALID_ARGUMENT,
    );
    expect(err.details).toMatch(/publish_context was written for volume .*, not another-volume/);
    await suite.ops.stage(v, staging, cap.mount('ext4'));
    // a publish_context that names no volume (an older controller's) is refused outright
    const { volumeId: _id, ...older } = v.publishContext;
    const unnamed = await expectCode(
      suite.ops.stage({ volumeId: 'another-volume', publishContext: older }, other, cap.mount('ext4')),
      status.INVALID_ARGUMENT,
    );
    expect(unnamed.details).toMatch(/volumeId: is required/);
    // one naming the other volume id but this image: the stage record keeps the image to one volume
    const twice = await expectCode(
      suite.ops.stage(
        { volumeId: 'another-volume', publishContext: { ...v.publishContext, volumeId: 'another-volume' } },
        other,
        cap.mount('ext4'),
      ),
      status.FAILED_PRECONDITION,
    );
    expect(twice.details).toMatch(
      new RegExp(
        `RBD image volumes/${v.publishContext.rbdImage} is already staged on this node as volume ${v.volumeId}`,
      ),
    );
    await suite.ops.unstage(v, staging);
  });

  test('publish: same target → OK; same target, other arguments → ALREADY_EXISTS; a second target of a single-writer → FAILED_PRECONDITION', async () => {
    const staging = co.staging('pv-pub');
    const t1 = co.target('pod-1', 'pv-pub');
    const t2 = co.target('pod-2', 'pv-pub');
    const c = cap.mount('ext4', 'SINGLE_NODE_SINGLE_WRITER');
    await suite.ops.stage(v, staging, c);
    await suite.ops.publish(v, staging, t1, c);
    await suite.ops.publish(v, staging, t1, c);
    await expectCode(suite.ops.publish(v, staging, t1, c, true), status.ALREADY_EXISTS);
    await expectCode(suite.ops.publish(v, staging, t2, c), status.FAILED_PRECONDITION);
    await expectCode(
      suite.ops.publish(v, staging, t2, cap.block('SINGLE_NODE_SINGLE_WRITER')),
      status.FAILED_PRECONDITION,
    );
    // stats answer for the staging path and the target, NOT_FOUND elsewhere
    expect((await suite.ops.stats(v, t1)).volume_condition).toMatchObject({ abnormal: false });
    await expectCode(suite.ops.stats(v, t2), status.NOT_FOUND);
    // unstage while published → FAILED_PRECONDITION, the volume stays usable
    await expectCode(suite.ops.unstage(v, staging), status.FAILED_PRECONDITION);
    await suite.ops.unpublish(v, t1);
    await suite.ops.unstage(v, staging);
  });

  test('SINGLE_NODE_MULTI_WRITER: several targets on this node, each published and unpublished on its own', async () => {
    const staging = co.staging('pv-multi');
    const targets = ['pod-m1', 'pod-m2', 'pod-m3'].map((p) => co.target(p, 'pv-multi'));
    const c = cap.mount('ext4', 'SINGLE_NODE_MULTI_WRITER');
    await suite.ops.stage(v, staging, c);
    for (const [i, t] of targets.entries()) await suite.ops.publish(v, staging, t, c, i === 2);
    await suite.ops.unpublish(v, targets[0]!);
    expect((await suite.ops.stats(v, targets[1]!)).volume_condition.abnormal).toBe(false);
    await expectCode(suite.ops.unstage(v, staging), status.FAILED_PRECONDITION);
    for (const t of targets) await suite.ops.unpublish(v, t);
    await suite.ops.unstage(v, staging);
  });

  test('a second operation on a volume while one runs → ABORTED', async () => {
    const staging = co.staging('pv-race');
    const results = await Promise.allSettled([
      suite.ops.stage(v, staging, cap.mount()),
      suite.ops.stage(v, staging, cap.mount()),
    ]);
    const codes = results.map((r) => (r.status === 'fulfilled' ? 0 : (r.reason as { code: number }).code)).sort();
    expect(codes).toEqual([0, status.ABORTED]);
    await suite.ops.unstage(v, staging);
  });
});

describe('never format a device that holds something', () => {
  test('a partition table: the mount stage fails (FAILED_PRECONDITION) and the table is untouched', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging('pv-pt');
    const target = co.blockTarget('pod-pt', 'pv-pt');
    await suite.ops.stage(v, staging, cap.block());
    await suite.ops.publish(v, staging, target, cap.block());
    const mbr = Buffer.alloc(512);
    mbr.writeUInt32LE(0x1234abcd, 440); // disk signature
    mbr.set([0x00, 0x20, 0x21, 0x00, 0x83, 0xfe, 0xff, 0xff], 446); // one Linux partition…
    mbr.writeUInt32LE(2048, 454);
    mbr.writeUInt32LE(4096, 458);
    mbr.set([0x55, 0xaa], 510);
    const fd = openSync(target, 'r+');
    writeSync(fd, mbr, 0, 512, 0);
    closeSync(fd);
    await suite.ops.unpublish(v, target);
    await suite.ops.unstage(v, staging);

    const err = await expectCode(suite.ops.stage(v, staging, cap.mount('ext4')), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/holds a dos partition table/);
    expect(nodeLeaks({ ...dirs, allowed: [staging, target].map((p) => p.slice(dirs.kubeletRoot.length + 1)) })).toEqual(
      [],
    );

    await suite.ops.stage(v, staging, cap.block());
    await suite.ops.publish(v, staging, target, cap.block(), true);
    const back = Buffer.alloc(512);
    const rfd = openSync(target, 'r');
    readSync(rfd, back, 0, 512, 0);
    closeSync(rfd);
    expect(back.equals(mbr)).toBe(true);
    await suite.ops.unpublish(v, target);
    await suite.ops.unstage(v, staging);
  });

  test('bytes no tool recognises count as data: FAILED_PRECONDITION, nothing formatted', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging('pv-raw');
    const target = co.blockTarget('pod-raw', 'pv-raw');
    await suite.ops.stage(v, staging, cap.block());
    await suite.ops.publish(v, staging, target, cap.block());
    const data = Buffer.alloc(4096, 0x5a);
    const fd = openSync(target, 'r+');
    writeSync(fd, data, 0, data.length, 8192);
    closeSync(fd);
    await suite.ops.unpublish(v, target);
    await suite.ops.unstage(v, staging);
    const err = await expectCode(suite.ops.stage(v, staging, cap.mount()), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/holds data without a filesystem signature/);
  });

  test('a mount option ext4 refuses is INVALID_ARGUMENT and rolled back: no mapping, loop or rbd-fuse left', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging('pv-badopt');
    const err = await expectCode(
      suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', ['data=nonsense'])),
      status.INVALID_ARGUMENT,
    );
    expect(err.details).toMatch(/the kernel refused to mount \/dev\/loop\d+ \(ext4\) with the options data=nonsense/);
    expect(nodeLeaks({ ...dirs, allowed: [staging.slice(dirs.kubeletRoot.length + 1)] })).toEqual([]);
    // the filesystem made before the failure is found (not made again) by the next stage
    await suite.ops.stage(v, staging, cap.mount('ext4'));
    await suite.ops.unstage(v, staging);
  });

  test('a filesystem of another type than asked: FAILED_PRECONDITION, not reformatted', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging('pv-fs');
    await suite.ops.stage(v, staging, cap.mount('xfs'));
    await suite.ops.unstage(v, staging);
    const err = await expectCode(suite.ops.stage(v, staging, cap.mount('ext4')), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/already holds a xfs filesystem, but the volume capability asks for ext4/);
    // no fsType asked: the filesystem there is used
    await suite.ops.stage(v, staging, cap.mount());
    await suite.ops.unstage(v, staging);
  });
});

describe('the Ceph key', () => {
  const keyless = nodeSuite('node-key', { cephKeyring: undefined });
  const keyDirs = keyless.dirs;
  const keyCo = keyless.co;

  test('no key in the secret and no --ceph-keyring → INVALID_ARGUMENT naming userKey', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const err = await expectCode(keyless.ops.stage(v, keyCo.staging('pv-nokey'), cap.mount()), status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/userKey/);
  });

  test('the node-stage secret key maps the image; it never shows on a command line, in the environment or in a log', async () => {
    const key = cephKey();
    const v = await suite.volumes.createAttached('node-test');
    const staging = keyCo.staging('pv-key');
    const o = keyless.ops;
    await o.stage(v, staging, cap.mount(), { secrets: { userID: 'cinder', userKey: key } });
    for (const pid of readdirSync('/proc').filter((p) => /^\d+$/.test(p))) {
      for (const f of ['cmdline', 'environ']) {
        let text = '';
        try {
          text = readFileSync(`/proc/${pid}/${f}`, 'latin1');
        } catch {
          continue;
        }
        expect(text.includes(key) ? `${pid}/${f}` : '').toBe('');
      }
    }
    expect(existsSync(join(keyDirs.stateDir, 'tmp')) ? readdirSync(join(keyDirs.stateDir, 'tmp')) : []).toEqual([]);
    await o.unstage(v, staging);
    expect(keyless.node.logs.join('\n')).not.toContain(key);
    expect(keyless.node.logs.some((l) => l.includes('NodeStageVolume'))).toBe(true);
  });

  test('a wrong key → PERMISSION_DENIED, the key not echoed, nothing left', async () => {
    const wrong = Buffer.alloc(28, 7).toString('base64');
    const v = await suite.volumes.createAttached('node-test');
    const err = await expectCode(
      keyless.ops.stage(v, keyCo.staging('pv-wrongkey'), cap.mount(), { secrets: { userKey: wrong } }),
      status.PERMISSION_DENIED,
    );
    expect(err.details).toMatch(/Ceph refused client.cinder/);
    expect(err.details).not.toContain(wrong);
    expect(keyless.node.logs.join('\n')).not.toContain(wrong);
  });
});
