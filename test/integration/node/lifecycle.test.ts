import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readFileSync, readSync, statSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { TestVolumes } from '../../helpers/cinder-volumes.js';
import { nodeDirs, nodeOps, startNodeDriver, type NodeDriver } from '../../helpers/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../helpers/node-leaks.js';
import { mountAt, parseMountInfo } from '../../../src/node/mount.js';

const dirs = nodeDirs('node-lifecycle');
const co = new CoPaths(dirs.kubeletRoot);
let node: NodeDriver;
let volumes: TestVolumes;

beforeAll(async () => {
  node = await startNodeDriver(dirs);
  volumes = TestVolumes.open('node-life');
});
afterAll(async () => {
  await node?.stop();
  await volumes?.cleanup();
  forceCleanup(dirs.base);
});
afterEach(() => {
  expect([...co.release(), ...nodeLeaks(dirs)]).toEqual([]);
});

const stage = (...a: Parameters<ReturnType<typeof nodeOps>['stage']>) => nodeOps(node.csi).stage(...a);
const publish = (...a: Parameters<ReturnType<typeof nodeOps>['publish']>) => nodeOps(node.csi).publish(...a);
const unpublish = (...a: Parameters<ReturnType<typeof nodeOps>['unpublish']>) => nodeOps(node.csi).unpublish(...a);
const unstage = (...a: Parameters<ReturnType<typeof nodeOps>['unstage']>) => nodeOps(node.csi).unstage(...a);

const mountOf = (path: string) => mountAt(parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')), path);

describe.each(['ext4', 'xfs'])('mount access, %s', (fsType) => {
  test('stage formats a blank volume, publish binds it, data survives unstage and a fresh stage', async () => {
    const v = await volumes.createAttached('node-test');
    const staging = co.staging(`pv-${fsType}`);
    const target = co.target('pod-a', `pv-${fsType}`);
    const capability = cap.mount(fsType);

    await stage(v, staging, capability);
    await stage(v, staging, capability); // idempotent
    const staged = mountOf(staging);
    expect(staged?.fsType).toBe(fsType);
    if (fsType === 'xfs') expect(staged?.superOptions).toContain('nouuid');

    await publish(v, staging, target, capability);
    await publish(v, staging, target, capability); // idempotent
    const payload = randomBytes(1 << 20);
    writeFileSync(join(target, 'data'), payload);

    await unpublish(v, target);
    await unpublish(v, target); // idempotent
    expect(() => statSync(target)).toThrow(/ENOENT/);
    await unstage(v, staging);
    await unstage(v, staging); // idempotent
    expect(mountOf(staging)).toBeUndefined();
    expect(nodeLeaks({ ...dirs, allowed: [staging, target].map((p) => p.slice(dirs.kubeletRoot.length + 1)) })).toEqual([]);

    // a fresh stage finds the filesystem (no reformat) and the data
    await stage(v, staging, capability);
    await publish(v, staging, target, capability, true);
    expect(readFileSync(join(target, 'data')).equals(payload)).toBe(true);
    expect(mountOf(target)?.options).toContain('ro');
    expect(() => writeFileSync(join(target, 'other'), 'x')).toThrow(/EROFS/);
    await unpublish(v, target);
    await unstage(v, staging);
  });
});

test('block access: stage maps only, publish binds the device onto a file, bytes survive a fresh stage', async () => {
  const v = await volumes.createAttached('node-test');
  const staging = co.staging('pv-block');
  const target = co.blockTarget('pod-b', 'pv-block');
  const capability = cap.block();

  await stage(v, staging, capability);
  expect(mountOf(staging)).toBeUndefined(); // mapped, nothing mounted
  await publish(v, staging, target, capability);
  expect(statSync(target).isBlockDevice()).toBe(true);

  const payload = randomBytes(64 * 1024);
  const fd = openSync(target, 'r+');
  writeSync(fd, payload, 0, payload.length, 1 << 20);
  fsyncSync(fd);
  closeSync(fd);

  await unpublish(v, target);
  expect(() => statSync(target)).toThrow(/ENOENT/);
  await unstage(v, staging);

  await stage(v, staging, capability);
  await publish(v, staging, target, capability, true);
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
  await unpublish(v, target);
  await unstage(v, staging);
});
