import { randomBytes } from 'node:crypto';
import {
  closeSync,
  fsyncSync,
  openSync,
  readFileSync,
  readSync,
  realpathSync,
  statSync,
  writeFileSync,
  writeSync,
} from 'node:fs';
import { join } from 'node:path';
import { cap, nodeLeaks } from '../../../harness/node-leaks.js';
import { mountAt, parseMountInfo } from '../../../src/node/host/mount-commands.js';
import { nodeSuite } from './suite.js';

/** The mount at a path as the mount table shows it: resolved, as under a symlinked kubelet root. */
const mountOf = (path: string) => {
  let real = path;
  try {
    real = realpathSync(path);
  } catch {
    // gone: not mounted either
  }
  return mountAt(parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')), real);
};

describe.each([
  ['a plain kubelet root', false],
  ['a kubelet root that is a symlink (/var/lib/kubelet → another disk)', true],
])('with %s', (_root, symlinkedRoot) => {
  const suite = nodeSuite(symlinkedRoot ? 'node-life-ln' : 'node-life', {}, {}, { symlinkedRoot });
  const { dirs, co } = suite;

  describe.each(['ext4', 'xfs'])('mount access, %s', (fsType) => {
    test('stage formats a blank volume, publish binds it, data survives unstage and a fresh stage', async () => {
      const v = await suite.volumes.createAttached('node-test');
      const staging = co.staging(`pv-${fsType}`);
      const target = co.target('pod-a', `pv-${fsType}`);
      const capability = cap.mount(fsType);

      await suite.ops.stage(v, staging, capability);
      await suite.ops.stage(v, staging, capability); // idempotent
      const staged = mountOf(staging);
      expect(staged?.fsType).toBe(fsType);
      if (fsType === 'xfs') expect(staged?.superOptions).toContain('nouuid');

      await suite.ops.publish(v, staging, target, capability);
      await suite.ops.publish(v, staging, target, capability); // idempotent
      const payload = randomBytes(1 << 20);
      writeFileSync(join(target, 'data'), payload);

      await suite.ops.unpublish(v, target);
      await suite.ops.unpublish(v, target); // idempotent
      expect(() => statSync(target)).toThrow(/ENOENT/);
      await suite.ops.unstage(v, staging);
      await suite.ops.unstage(v, staging); // idempotent
      expect(mountOf(staging)).toBeUndefined();
      expect(
        nodeLeaks({ ...dirs, allowed: [staging, target].map((p) => p.slice(dirs.kubeletRoot.length + 1)) }),
      ).toEqual([]);

      // a fresh stage finds the filesystem (no reformat) and the data
      await suite.ops.stage(v, staging, capability);
      await suite.ops.publish(v, staging, target, capability, true);
      expect(readFileSync(join(target, 'data')).equals(payload)).toBe(true);
      expect(mountOf(target)?.options).toContain('ro');
      expect(() => writeFileSync(join(target, 'other'), 'x')).toThrow(/EROFS/);
      await suite.ops.unpublish(v, target);
      await suite.ops.unstage(v, staging);
    });
  });

  test('block access: stage maps only, publish binds the device onto a file, bytes survive a fresh stage', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging('pv-block');
    const target = co.blockTarget('pod-b', 'pv-block');
    const capability = cap.block();

    await suite.ops.stage(v, staging, capability);
    expect(mountOf(staging)).toBeUndefined(); // mapped, nothing mounted
    await suite.ops.publish(v, staging, target, capability);
    expect(statSync(target).isBlockDevice()).toBe(true);

    const payload = randomBytes(64 * 1024);
    const fd = openSync(target, 'r+');
    writeSync(fd, payload, 0, payload.length, 1 << 20);
    fsyncSync(fd);
    closeSync(fd);

    await suite.ops.unpublish(v, target);
    expect(() => statSync(target)).toThrow(/ENOENT/);
    await suite.ops.unstage(v, staging);

    await suite.ops.stage(v, staging, capability);
    await suite.ops.publish(v, staging, target, capability, true);
    const back = Buffer.alloc(payload.length);
    const rfd = openSync(target, 'r');
    readSync(rfd, back, 0, back.length, 1 << 20);
    closeSync(rfd);
    expect(back.equals(payload)).toBe(true);
    // read-only: a write through the published device fails
    expect(() => {
      const wfd = openSync(target, 'r+');
      try {
        writeSync(wfd, payload, 0, 4096, 0);
        fsyncSync(wfd);
      } finally {
        closeSync(wfd);
      }
    }).toThrow(/EROFS|EACCES|EPERM|EIO/);
    await suite.ops.unpublish(v, target);
    await suite.ops.unstage(v, staging);
  });
});
