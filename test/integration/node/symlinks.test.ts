import { execFileSync } from 'node:child_process';
import { mkdirSync, readFileSync, rmSync, symlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expectCode } from '../../helpers/csi-client.js';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

/**
 * Pods write under the kubelet root, so anything there may be a symlink planted to turn the plugin
 * (root) against the host. For every node RPC and every path argument, a symlink at the last and at
 * an inner component, pointing at a stand-in for /etc and at a directory outside the root, with the
 * place it points at existing or not: INVALID_ARGUMENT, nothing created, changed or mounted outside the
 * root, and the volume still unstages cleanly. Never the real /etc.
 */
const suite = nodeSuite('node-symlinks');
const { dirs, co } = suite;
const etc = join(dirs.base, 'etc-standin');
const outside = join(dirs.base, 'outside');

/** What an escape would change: the mount table and everything in the two outside places. */
function snapshot(): { mounts: string[]; files: string } {
  const mounts = readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .map((l) =>
      l
        .split(' ')
        .slice(4, 5)
        .concat(l.split(' - ')[1] ?? '')
        .join(' '),
    )
    .filter(Boolean)
    .sort();
  const files = execFileSync('find', [etc, outside, '-printf', '%p %y %s %m %T@\n'])
    .toString()
    .split('\n')
    .sort()
    .join('\n');
  return { mounts, files };
}

/** A symlink under the kubelet root at `at` (relative), pointing at `to`; its parents made as kubelet would. */
function plant(at: string, to: string): string {
  const path = join(dirs.kubeletRoot, at);
  mkdirSync(dirname(path), { recursive: true });
  symlinkSync(to, path);
  return path;
}

beforeAll(() => {
  mkdirSync(etc, { recursive: true });
  writeFileSync(join(etc, 'passwd'), 'root:x:0:0:root:/root:/bin/sh\n');
  mkdirSync(join(outside, 'exists'), { recursive: true });
});
/** The planted links and the dirs made for them (the suite then checks that nothing else is left). */
const unplant = () => {
  for (const d of ['plugins', 'pods']) rmSync(join(dirs.kubeletRoot, d), { recursive: true, force: true });
};

test('no RPC follows a planted symlink out of the kubelet root; the staged volume unstages cleanly', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const mount = cap.mount('ext4');
  const block = cap.block();
  const staging = co.staging('pv-sym');
  const blockStaging = co.staging('pv-sym-block');
  await suite.ops.stage(v, staging, mount);
  const before = snapshot();

  // Where a planted link points: the /etc stand-in, a directory outside, a place outside that does not exist.
  const destinations = [etc, join(outside, 'exists'), join(outside, 'missing')];
  const csi = 'plugins/kubernetes.io/csi/cinder.csi.stackube.io';
  const attempts: [string, () => Promise<unknown>][] = [];
  let n = 0; // every attempt plants its own link
  destinations.forEach((to) => {
    // the last component a symlink
    const lastStage = () => plant(`${csi}/pv-l${++n}/globalmount`, to);
    const lastTarget = () => plant(`pods/pod-l${++n}/volumes/kubernetes.io~csi/pv/mount`, to);
    const lastBlock = () =>
      plant(`plugins/kubernetes.io/csi/volumeDevices/publish/pv-l${++n}/pod`, join(to, 'evilfile'));
    // an inner component a symlink
    const innerStage = () => join(plant(`${csi}/pv-i${++n}`, to), 'globalmount');
    const innerTarget = () => join(plant(`pods/pod-i${++n}/volumes/kubernetes.io~csi/pv`, to), 'mount');
    const innerBlock = () => join(plant(`plugins/kubernetes.io/csi/volumeDevices/publish/pv-i${++n}`, to), 'pod');
    for (const [kind, path] of [
      ['last', lastStage],
      ['inner', innerStage],
    ] as const) {
      attempts.push([`NodeStageVolume, ${kind} component → ${to}`, () => suite.ops.stage(v, path(), mount)]);
      attempts.push([`NodeUnstageVolume, ${kind} component → ${to}`, () => suite.ops.unstage(v, path())]);
    }
    for (const [kind, path] of [
      ['last', lastTarget],
      ['inner', innerTarget],
    ] as const) {
      attempts.push([
        `NodePublishVolume, ${kind} target component → ${to}`,
        () => suite.ops.publish(v, staging, path(), mount),
      ]);
      attempts.push([`NodeUnpublishVolume, ${kind} target component → ${to}`, () => suite.ops.unpublish(v, path())]);
      attempts.push([
        `NodePublishVolume, ${kind} staging component → ${to}`,
        () => suite.ops.publish(v, path(), co.target(`pod-s${++n}`, 'pv'), mount),
      ]);
    }
    for (const [kind, path] of [
      ['last', lastBlock],
      ['inner', innerBlock],
    ] as const)
      attempts.push([
        `NodePublishVolume (block), ${kind} component → ${to}`,
        () => suite.ops.publish(v, blockStaging, path(), block),
      ]);
  });

  for (const [what, attempt] of attempts) {
    const err = await expectCode(attempt(), status.INVALID_ARGUMENT).catch((e: Error) => {
      throw new Error(`${what}: ${e.message}`);
    });
    expect(err.details).toMatch(/symlink|outside the kubelet root|not where it was checked/);
  }
  // stats and expand never touch a path they do not know
  const stray = plant('pods/pod-stats/volumes/kubernetes.io~csi/pv/mount', etc);
  await expectCode(suite.ops.stats(v, stray), status.NOT_FOUND);
  await expectCode(suite.ops.expand(v, stray, 1), status.NOT_FOUND);

  expect(snapshot()).toEqual(before);
  await suite.ops.unstage(v, staging);
  unplant();
});

test('a symlink planted after a publish does not redirect the unpublish, and the fsGroup walk never follows one', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-walk');
  const target = co.target('pod-walk', 'pv-walk');
  await suite.ops.stage(v, staging, cap.mount('ext4'));
  // the tenant's filesystem holds a symlink to the host's "/etc" before the volume is given to a group
  await suite.ops.publish(v, staging, target, cap.mount('ext4'));
  symlinkSync(join(etc, 'passwd'), join(target, 'passwd-link'));
  mkdirSync(join(target, 'dir'));
  symlinkSync(etc, join(target, 'dir', 'etc-link'));
  await suite.ops.unpublish(v, target);
  const before = snapshot();
  const grouped = co.target('pod-walk2', 'pv-walk');
  await suite.ops.publish(v, staging, grouped, cap.mount('ext4', 'SINGLE_NODE_WRITER', [], '4242'));
  expect(
    execFileSync('stat', ['-c', '%g', join(grouped, 'dir')])
      .toString()
      .trim(),
  ).toBe('4242');
  expect(snapshot().files).toEqual(before.files); // nothing outside changed hands or modes
  expect(
    execFileSync('stat', ['-c', '%g %a', join(etc, 'passwd')])
      .toString()
      .trim(),
  ).toBe('0 644');
  await suite.ops.unpublish(v, grouped);
  await suite.ops.unstage(v, staging);
  unplant();
});
