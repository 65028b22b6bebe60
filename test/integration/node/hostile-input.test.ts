import { existsSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { directVolumeDir, MOUNT_INFO_FILE } from '../../../src/node/kata/direct-volume.js';
import { expectCode } from '../../helpers/csi-client.js';
import { scratchDir } from '../../../harness/local-stack.js';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

/**
 * What a hostile (or broken) CO can send the node plugin, on real RBD images, devices and mounts:
 * bytes no syscall takes, a Ceph user without its key, a Kata target that already hands another
 * volume's device to a VM, and one RBD image staged under two volume ids at once. Each is refused
 * with its code, and nothing is left behind (the suite checks after every test).
 */
const kataRoot = scratchDir('node-hostile-kata');
const suite = nodeSuite('node-hostile', { kataDirectVolumeRoot: kataRoot });
const { co } = suite;
afterAll(() => rmSync(kataRoot, { recursive: true, force: true }));

const rbdFuseOf = (image: string) =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        const argv = readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0');
        return (
          /rbd-fuse$/.test(argv[0] ?? '') && argv.includes(image) && argv.some((a) => a.startsWith(suite.dirs.stateDir))
        );
      } catch {
        return false;
      }
    });

test('a NUL byte in a path or a control character in an id is INVALID_ARGUMENT before anything is touched', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-nul');
  const target = co.target('pod-nul', 'pv-nul');
  const n = suite.node.csi.Node;
  const cases: [string, Promise<unknown>][] = [
    ['NodeStageVolume staging_target_path', suite.ops.stage(v, `${staging}\0x`, cap.mount('ext4'))],
    ['NodeStageVolume volume_id', suite.ops.stage({ ...v, volumeId: `${v.volumeId}\n` }, staging, cap.mount('ext4'))],
    ['NodeUnstageVolume staging_target_path', suite.ops.unstage(v, `${staging}\0`)],
    ['NodePublishVolume target_path', suite.ops.publish(v, staging, `${target}\0`, cap.mount('ext4'))],
    ['NodePublishVolume staging_target_path', suite.ops.publish(v, `\0${staging}`, target, cap.mount('ext4'))],
    ['NodeUnpublishVolume target_path', suite.ops.unpublish(v, `${target}\0/..`)],
    ['NodeGetVolumeStats volume_path', suite.ops.stats(v, `${target}\0`)],
    [
      'NodeExpandVolume volume_id',
      n.NodeExpandVolume({ volume_id: `a\u0007b`, volume_path: target, capacity_range: { required_bytes: 1 } }),
    ],
    [
      'a publish_context value',
      suite.ops.stage(
        { ...v, publishContext: { ...v.publishContext, rbdImage: `${v.publishContext.rbdImage}\0` } },
        staging,
        cap.mount('ext4'),
      ),
    ],
  ];
  for (const [what, call] of cases) {
    const err = await expectCode(call, status.INVALID_ARGUMENT).catch((e: Error) => {
      throw new Error(`${what}: ${e.message}`);
    });
    expect(err.details).toMatch(/holds a (NUL byte|control character)/);
  }
  expect(readdirSync(join(staging))).toEqual([]);
  expect(existsSync(target)).toBe(false);
});

test("a userID without its userKey never picks another identity out of the node's keyring", async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-user');
  const err = await expectCode(
    suite.ops.stage(v, staging, cap.mount('ext4'), { secrets: { userID: 'admin' } }),
    status.INVALID_ARGUMENT,
  );
  expect(err.details).toMatch(/userID without userKey/);
  expect(rbdFuseOf(v.publishContext.rbdImage!)).toEqual([]);
});

test("a VM publish onto a target that holds another volume's Kata file is ALREADY_EXISTS, and that file stays the other volume's", async () => {
  const [a, b] = [await suite.volumes.createAttached('node-test'), await suite.volumes.createAttached('node-test')];
  const passthrough = cap.mount('ext4');
  const context = { volume_context: { attachMode: 'passthrough' } };
  const [stagingA, stagingB] = [co.staging('pv-kata-a'), co.staging('pv-kata-b')];
  const target = co.target('pod-vm', 'pv-kata');
  await suite.ops.stage(a, stagingA, passthrough, context);
  await suite.ops.stage(b, stagingB, passthrough, context);
  await suite.ops.publish(b, stagingB, target, passthrough, false, context);
  const file = join(directVolumeDir(kataRoot, target), MOUNT_INFO_FILE);
  const entryOfB = readFileSync(file, 'utf8');

  const err = await expectCode(
    suite.ops.publish(a, stagingA, target, passthrough, false, context),
    status.ALREADY_EXISTS,
  );
  expect(err.details).toMatch(/already hands \/dev\/loop\d+ to a VM/);
  expect(readFileSync(file, 'utf8')).toBe(entryOfB);
  await suite.ops.unpublish(a, target); // A was never published there: B's entry and directory stay
  expect(readFileSync(file, 'utf8')).toBe(entryOfB);
  expect(existsSync(target)).toBe(true);

  await suite.ops.unpublish(b, target);
  expect(existsSync(file)).toBe(false);
  await suite.ops.unstage(a, stagingA);
  await suite.ops.unstage(b, stagingB);
});

test('one RBD image staged under two volume ids at once: exactly one mapping; the other stage is refused', async () => {
  const v = await suite.volumes.createAttached('node-test');
  // the publish_context of one image, rewritten to name another volume id (what a CO mixing up two volumes sends)
  const twin = {
    volumeId: `${v.volumeId}-twin`,
    publishContext: { ...v.publishContext, volumeId: `${v.volumeId}-twin` },
  };
  const [staging, twinStaging] = [co.staging('pv-race'), co.staging('pv-race-twin')];
  const results = await Promise.allSettled([
    suite.ops.stage(v, staging, cap.mount('ext4')),
    suite.ops.stage(twin, twinStaging, cap.mount('ext4')),
  ]);
  const won = results.findIndex((r) => r.status === 'fulfilled');
  expect(results.map((r) => r.status).sort()).toEqual(['fulfilled', 'rejected']);
  expect((results[1 - won] as PromiseRejectedResult).reason).toMatchObject({
    code: status.FAILED_PRECONDITION,
    details: expect.stringMatching(/is already staged on this node as volume/),
  });
  expect(rbdFuseOf(v.publishContext.rbdImage!)).toHaveLength(1);
  expect((await suite.node.csi.Node.NodeGetInfo({})).node_id).toBe('node-test'); // still serving
  if (won === 0) await suite.ops.unstage(v, staging);
  else await suite.ops.unstage(twin, twinStaging);
});
