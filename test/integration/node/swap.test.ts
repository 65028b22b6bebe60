import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, renameSync, rmSync, symlinkSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import { TestVolumes } from '../../../harness/cinder-volumes.js';
import { expectCode } from '../../helpers/csi-client.js';
import { nodeDirs, nodeOps } from '../../../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../../harness/node-leaks.js';
import { onEveryPause, startPluginProcess, type PluginProcess } from '../../helpers/plugin-process.js';

/**
 * The race the held handles close: a component above a target path swapped for a symlink out of the
 * kubelet root after the plugin checked the path and before it used it. The plugin process is held at
 * the point between check and use (the failpoint paths:target_path, hit inside every create, unmount,
 * remount and removal of a target), the swap is made, and the plugin goes on: nothing outside the root
 * is created, removed, unmounted or mounted. On a real RBD volume, real mounts and a real outside mount.
 */
const dirs = nodeDirs('node-swap');
const co = new CoPaths(dirs.kubeletRoot);
const outside = join(dirs.base, 'outside');
let volumes: TestVolumes;
let plugin: PluginProcess;

beforeAll(async () => {
  volumes = TestVolumes.open('node-swap');
  // what a swap would aim at: a directory named like the target, with a filesystem mounted on it
  mkdirSync(join(outside, 'mount'), { recursive: true });
  await execa('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'outside-standin', join(outside, 'mount')]);
  plugin = await startPluginProcess(dirs, 'paths:target_path=pause');
});
afterAll(async () => {
  await plugin?.stop();
  await execa('umount', [join(outside, 'mount')], { reject: false });
  forceCleanup(dirs.base);
  await volumes?.cleanup();
});

/** What an escape would change outside the root: the mount table's entries there and every file. */
const outsideState = () => ({
  mounts: readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .filter((l) => l.split(' ')[4]?.startsWith(outside))
    .map((l) => `${l.split(' ')[4]} ${l.split(' - ')[1]}`),
  files: execFileSync('find', [outside, '-printf', '%p %y %m\n']).toString().split('\n').sort(),
});

/** Put a symlink to `outside` in place of the target's parent; returns the undo. */
function swapParent(target: string): () => void {
  const parent = dirname(target);
  renameSync(parent, `${parent}.moved`);
  symlinkSync(outside, parent);
  return () => {
    rmSync(parent);
    renameSync(`${parent}.moved`, parent);
  };
}

test('a parent swapped for a symlink while a publish is held between check and use: nothing is made or mounted outside', async () => {
  const ops = nodeOps(plugin.csi);
  const v = await volumes.createAttached('node-test');
  const staging = co.staging('pv-swap');
  const target = co.target('pod-swap', 'pv-swap');
  await ops.stage(v, staging, cap.mount('ext4'));
  const before = outsideState();
  let undo: (() => void) | undefined;
  const stop = onEveryPause(dirs.socket, 'paths:target_path', (n) => {
    if (n === 1) undo = swapParent(target); // the target dir is about to be made in its (held) parent
  });
  const err = await expectCode(ops.publish(v, staging, target, cap.mount('ext4')), status.INVALID_ARGUMENT);
  await stop();
  expect(err.details).toMatch(/target_path .* (cannot be opened|is not where it was checked|symlink)/);
  expect(outsideState()).toEqual(before);
  undo!();
  // the directory the plugin made went where it was checked: inside the root, and the unpublish takes it
  const release = onEveryPause(dirs.socket, 'paths:target_path', () => undefined);
  await ops.unpublish(v, target);
  await ops.unstage(v, staging);
  await release();
  expect(outsideState()).toEqual(before);
});

test('a parent swapped for a symlink while an unpublish is held: the real mount is taken down, the outside one and its directory are left', async () => {
  const ops = nodeOps(plugin.csi);
  const v = await volumes.createAttached('node-test');
  const staging = co.staging('pv-swap2');
  const target = co.target('pod-swap2', 'pv-swap2');
  const go = onEveryPause(dirs.socket, 'paths:target_path', () => undefined);
  await ops.stage(v, staging, cap.mount('ext4'));
  await ops.publish(v, staging, target, cap.mount('ext4'));
  await go();
  const before = outsideState();
  let undo: (() => void) | undefined;
  const stop = onEveryPause(dirs.socket, 'paths:target_path', (n) => {
    if (n === 1) undo = swapParent(target); // about to unmount the target through its held parent
  });
  const err = await expectCode(ops.unpublish(v, target), status.INVALID_ARGUMENT);
  await stop();
  expect(err.details).toMatch(/target_path .* (is a symlink|is not where it was checked)/);
  expect(outsideState()).toEqual(before); // the tmpfs outside is still mounted, its directory still there
  undo!();
  // the bind the plugin made was unmounted where it was (inside the root); the retry removes the directory
  const release = onEveryPause(dirs.socket, 'paths:target_path', () => undefined);
  await ops.unpublish(v, target);
  await ops.unstage(v, staging);
  await release();
});

afterEach(() => {
  expect([...co.release(), ...nodeLeaks(dirs)]).toEqual([]);
});
