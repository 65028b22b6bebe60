import { jest } from '@jest/globals';
import { mkdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { readDirectVolume, removeDirectVolume, writeDirectVolume } from '../../src/node/kata/direct-volume.js';
import { scratchDir } from '../../harness/local-stack.js';
import { runKataSandbox } from '../../harness/vm/guest.js';

// The harness proven on a plain loop device holding ext4: the driver's direct-volume file for a
// target path → a VM that gets the device as virtio-blk → what the guest wrote is on the device.

jest.setTimeout(600_000); // each test boots a VM (TCG where there is no hardware KVM)

let dir: string;
let device: string;
const mountPoint = () => join(dir, 'host-mount');
const root = () => join(dir, 'direct-volumes');
const TARGET = '/var/lib/kubelet/pods/5e1c0b9a/volumes/kubernetes.io~csi/pvc-e2e/mount';
const marker = `marker-${process.pid}-${Date.now()}`;

async function hostMount(ro: boolean, fn: () => void): Promise<void> {
  mkdirSync(mountPoint(), { recursive: true });
  await execa('mount', ['-t', 'ext4', ...(ro ? ['-o', 'ro'] : []), device, mountPoint()]);
  try {
    fn();
  } finally {
    await execa('umount', [mountPoint()]);
  }
}

beforeAll(async () => {
  dir = scratchDir('kata-e2e-loop');
  const img = join(dir, 'vol.img');
  await execa('truncate', ['-s', '256M', img]);
  await execa('mkfs.ext4', ['-q', '-F', '-L', 'csivol', img]);
  device = (await execa('losetup', ['--find', '--show', img])).stdout.trim();
  await hostMount(false, () => writeFileSync(join(mountPoint(), 'marker.txt'), `${marker}\n`));
});

afterAll(async () => {
  if (device) await execa('losetup', ['-d', device], { reject: false });
  rmSync(dir, { recursive: true, force: true });
});

test('the VM mounts the device named in mountInfo.json, reads the host’s data, writes its own; the host sees it after', async () => {
  await writeDirectVolume(root(), TARGET, { device, fsType: 'ext4', readonly: false });
  const fromGuest = `guest-wrote-${Date.now()}`;
  const run = await runKataSandbox(root(), TARGET, {
    checks: { 'marker.txt': marker },
    writes: { 'from-guest.txt': fromGuest },
  });
  expect({ failure: run.failure, done: run.done }).toEqual({ failure: undefined, done: true });
  expect(run.disk).toEqual({ name: 'vda', bytes: 256 * 1024 ** 2, readonly: false });
  expect(run.mount).toMatch(/^\/dev\/vda \/vol ext4 rw/);
  expect(run.checks).toEqual({ 'marker.txt': 'ok' });
  expect(run.wrote).toEqual({ 'from-guest.txt': fromGuest });
  // the runtime's part: the sandbox id recorded beside mountInfo.json
  expect((await readDirectVolume(root(), TARGET))?.sandboxIds).toEqual([`e2e-sandbox-${process.pid}`]);

  const fsck = await execa('e2fsck', ['-fn', device], { reject: false });
  expect(fsck.exitCode).toBe(0);
  await hostMount(true, () =>
    expect(readFileSync(join(mountPoint(), 'from-guest.txt'), 'utf8')).toBe(`${fromGuest}\n`),
  );
  await removeDirectVolume(root(), TARGET, device);
});

test('options ["ro"]: the VM gets a read-only disk and a read-only mount; its write is refused', async () => {
  await writeDirectVolume(root(), TARGET, { device, fsType: 'ext4', readonly: true });
  const run = await runKataSandbox(root(), TARGET, {
    checks: { 'marker.txt': marker },
    writes: { 'ro-attempt.txt': 'nope' },
  });
  expect({ failure: run.failure, done: run.done }).toEqual({ failure: undefined, done: true });
  expect(run.disk?.readonly).toBe(true);
  expect(run.mount).toMatch(/^\/dev\/vda \/vol ext4 ro/);
  expect(run.checks).toEqual({ 'marker.txt': 'ok' });
  expect(run.refused['ro-attempt.txt']).toMatch(/Read-only file system/);
  await hostMount(true, () => expect(() => readFileSync(join(mountPoint(), 'ro-attempt.txt'))).toThrow(/ENOENT/));
  await removeDirectVolume(root(), TARGET, device);
});

test('a check that does not hold is reported as a mismatch (the harness can fail)', async () => {
  await writeDirectVolume(root(), TARGET, { device, fsType: 'ext4', readonly: true });
  const run = await runKataSandbox(root(), TARGET, { checks: { 'marker.txt': 'something-else', 'absent.txt': 'x' } });
  expect(run.done).toBe(true);
  expect(run.checks['marker.txt']).toBe(`mismatch got=${marker}`);
  expect(run.checks['absent.txt']).toMatch(/^mismatch got=cat: can't open '\/vol\/absent.txt': No such file/);
  await removeDirectVolume(root(), TARGET, device);
});

test('no mountInfo.json for the target: refused, as the pod would get an empty directory', async () => {
  await expect(runKataSandbox(root(), '/var/lib/kubelet/pods/none/mount', {})).rejects.toThrow(
    /no direct-volume mountInfo.json .*: Kata would share the \(empty\) target directory/,
  );
});
