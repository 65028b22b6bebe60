import { jest } from '@jest/globals';
import { existsSync, readdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { directVolumeDir, readDirectVolume } from '../../src/node/kata/direct-volume.js';
import { mountAt, parseMountInfo } from '../../src/node/host/mount-commands.js';
import { POD_INFO_KEYS } from '../../src/node/kata/runtime.js';
import type { AttachedVolume } from '../../harness/cinder-volumes.js';
import { expectCode } from '../helpers/csi-client.js';
import { startKubeApi, type KubeApiStandIn } from '../helpers/kube-api.js';
import { scratchDir } from '../../harness/local-stack.js';
import { cap } from '../../harness/node-leaks.js';
import { nodeSuite } from '../integration/node/suite.js';
import { runKataSandbox } from '../../harness/vm/guest.js';

// The passthrough path for real: a Cinder volume (tenant-a) on Ceph, attached through Cinder's
// attachments API, mapped by the node plugin (rbd-fuse + loop), published to "pods" the local
// Kubernetes API stand-in describes — runc pods get a host mount, Kata pods the device through
// Kata's direct-volume file — and a qemu VM playing the Kata runtime boots on that device.

jest.setTimeout(600_000); // VMs boot under TCG where there is no hardware KVM

const KATA_BASE = scratchDir('kata-direct-volumes');
const KATA_ROOT = join(KATA_BASE, 'direct-volumes');
const kubeEnv: NodeJS.ProcessEnv = {};
let api: KubeApiStandIn;
let stopApi: () => Promise<void>;
beforeAll(async () => {
  const s = await startKubeApi({ token: 'e2e-node-plugin-token' });
  api = s.api;
  stopApi = s.cleanup;
  api.addRuntimeClass('kata-qemu', 'kata-qemu');
  api.addPod('team-a', 'runc-app');
  api.addPod('team-a', 'runc-app-2');
  api.addPod('team-a', 'kata-app', 'kata-qemu');
  api.addPod('team-a', 'kata-app-2', 'kata-qemu');
  kubeEnv.KUBECONFIG = api.writeKubeconfig(s.workDir, { auth: 'token' });
});
// registered after the stand-in's beforeAll, so the plugin starts with its KUBECONFIG
const suite = nodeSuite('kata-e2e', { kataDirectVolumeRoot: KATA_ROOT }, kubeEnv);
const { co } = suite;
afterAll(async () => {
  await stopApi?.();
  rmSync(KATA_BASE, { recursive: true, force: true });
});
afterEach(() => expect(existsSync(KATA_ROOT) ? readdirSync(KATA_ROOT) : []).toEqual([]));

const mounts = () => parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8'));
const podContext = (pod: string, attachMode = 'auto') => ({
  attachMode,
  [POD_INFO_KEYS.name]: pod,
  [POD_INFO_KEYS.namespace]: 'team-a',
  [POD_INFO_KEYS.uid]: `uid-team-a-${pod}`,
  [POD_INFO_KEYS.ephemeral]: 'false',
});
const ext4 = cap.mount('ext4');
const publishFor = (
  v: AttachedVolume,
  staging: string,
  target: string,
  pod: string,
  attachMode = 'auto',
  readonly = false,
) => suite.ops.publish(v, staging, target, ext4, readonly, { volume_context: podContext(pod, attachMode) });
const recordOf = (v: AttachedVolume) =>
  JSON.parse(readFileSync(join(suite.dirs.stateDir, 'volumes', `${v.volumeId}.json`), 'utf8')) as {
    phase: string;
    mapping: { device: string };
    targets: Record<string, { kind: string }>;
  };

test('auto: data written through a runc pod’s host mount is read in the Kata VM; the VM’s write is seen by the next runc pod', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-auto');
  const runcTarget = co.target('pod-runc', 'pv-auto');
  const kataTarget = co.target('pod-kata', 'pv-auto');
  await suite.ops.stage(v, staging, ext4, { volume_context: { attachMode: 'auto' } });

  // a runc pod (the API says: no runtimeClassName) gets the host mount
  await publishFor(v, staging, runcTarget, 'runc-app');
  expect(mountAt(mounts(), runcTarget)?.fsType).toBe('ext4');
  const marker = `written-on-host-${Date.now()}`;
  writeFileSync(join(runcTarget, 'marker.txt'), `${marker}\n`);
  await suite.ops.unpublish(v, runcTarget);

  // a Kata pod (RuntimeClass kata-qemu → handler kata-qemu): the idle staging mount is released and
  // the device goes to the VM; the target stays an empty directory
  await publishFor(v, staging, kataTarget, 'kata-app');
  await publishFor(v, staging, kataTarget, 'kata-app'); // idempotent
  const device = recordOf(v).mapping.device;
  expect(mountAt(mounts(), staging)).toBeUndefined();
  expect(mountAt(mounts(), kataTarget)).toBeUndefined();
  expect(readdirSync(kataTarget)).toEqual([]);
  const state = await readDirectVolume(KATA_ROOT, kataTarget);
  expect(state?.info).toEqual({ 'volume-type': 'directvol', device, fstype: 'ext4', metadata: {}, options: ['rw'] });
  expect(statSync(device).isBlockDevice()).toBe(true);
  expect(recordOf(v)).toMatchObject({ phase: 'mapped', targets: { [kataTarget]: { kind: 'passthrough' } } });

  // the Kata runtime's part: the VM gets the device as virtio-blk and mounts it
  const fromGuest = `written-in-vm-${Date.now()}`;
  const run = await runKataSandbox(KATA_ROOT, kataTarget, {
    checks: { 'marker.txt': marker },
    writes: { 'from-guest.txt': fromGuest },
  });
  expect({ failure: run.failure, done: run.done }).toEqual({ failure: undefined, done: true });
  expect(run.disk).toMatchObject({ name: 'vda', bytes: 1024 ** 3, readonly: false });
  expect(run.checks).toEqual({ 'marker.txt': 'ok' });
  expect(run.wrote).toEqual({ 'from-guest.txt': fromGuest });

  // while the VM has it: stats report the device size (no kata-runtime here), healthy
  const stats = await suite.ops.stats(v, kataTarget, staging);
  expect(stats.usage).toEqual([expect.objectContaining({ unit: 'BYTES', total: 1024 ** 3 })]);
  expect(stats.volume_condition).toMatchObject({
    abnormal: false,
    message: expect.stringMatching(/handed to a VM; device size only/),
  });

  await suite.ops.unpublish(v, kataTarget);
  await suite.ops.unpublish(v, kataTarget); // idempotent
  expect(existsSync(kataTarget)).toBe(false);
  expect(existsSync(directVolumeDir(KATA_ROOT, kataTarget))).toBe(false);

  // the next runc pod: the host mounts the device again and sees what the VM wrote
  await publishFor(v, staging, runcTarget, 'runc-app-2');
  expect(readFileSync(join(runcTarget, 'from-guest.txt'), 'utf8')).toBe(`${fromGuest}\n`);
  expect(readFileSync(join(runcTarget, 'marker.txt'), 'utf8')).toBe(`${marker}\n`);
  await suite.ops.unpublish(v, runcTarget);
  await suite.ops.unstage(v, staging);
});

test('one device, one kernel: every conflicting publish is FAILED_PRECONDITION and says why', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-conflict');
  const runcTarget = co.target('pod-c1', 'pv-conflict');
  const kataTarget = co.target('pod-c2', 'pv-conflict');
  const otherTarget = co.target('pod-c3', 'pv-conflict');
  await suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_MULTI_WRITER'), {
    volume_context: { attachMode: 'auto' },
  });
  const multi = cap.mount('ext4', 'SINGLE_NODE_MULTI_WRITER');
  const publish = (target: string, pod: string) =>
    suite.ops.publish(v, staging, target, multi, false, { volume_context: podContext(pod) });

  // host-mounted for a runc pod → not to a VM
  await publish(runcTarget, 'runc-app');
  const toVm = await expectCode(publish(kataTarget, 'kata-app'), status.FAILED_PRECONDITION);
  expect(toVm.details).toMatch(
    new RegExp(
      `cannot be handed to a VM at ${kataTarget}: its filesystem is mounted on the host at ${staging} for ${runcTarget}`,
    ),
  );
  expect(existsSync(directVolumeDir(KATA_ROOT, kataTarget))).toBe(false);
  expect(mountAt(mounts(), runcTarget)).toBeDefined(); // the runc pod is untouched
  await suite.ops.unpublish(v, runcTarget);

  // in a VM → not mounted on the host, not to a second VM
  await publish(kataTarget, 'kata-app');
  const toHost = await expectCode(publish(runcTarget, 'runc-app'), status.FAILED_PRECONDITION);
  expect(toHost.details).toMatch(
    new RegExp(
      `cannot be mounted on the host at ${runcTarget}: its device is handed to a VM \\(published for a hypervisor pod at ${kataTarget}\\)`,
    ),
  );
  expect(mountAt(mounts(), staging)).toBeUndefined();
  const toSecondVm = await expectCode(publish(otherTarget, 'kata-app-2'), status.FAILED_PRECONDITION);
  expect(toSecondVm.details).toMatch(/two VMs cannot mount one filesystem/);
  // unstage while the VM has it: the publish must go first
  await expectCode(suite.ops.unstage(v, staging), status.FAILED_PRECONDITION);
  await suite.ops.unpublish(v, kataTarget);
  await suite.ops.unstage(v, staging);
});

test('attachMode passthrough: stage maps and formats but never mounts; a runc pod is refused; Kata gets it (read-only too)', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-pt');
  const kataTarget = co.target('pod-pt', 'pv-pt');
  const runcTarget = co.target('pod-pt-runc', 'pv-pt');
  await suite.ops.stage(v, staging, ext4, { volume_context: { attachMode: 'passthrough' } });
  expect(mountAt(mounts(), staging)).toBeUndefined();
  expect(recordOf(v)).toMatchObject({ phase: 'mapped', formatted: true, fsType: 'ext4' });

  const refused = await expectCode(
    publishFor(v, staging, runcTarget, 'runc-app', 'passthrough'),
    status.FAILED_PRECONDITION,
  );
  expect(refused.details).toMatch(
    /attachMode is passthrough, but pod team-a\/runc-app runs with the default runtime .*, not in a VM/,
  );
  expect(existsSync(runcTarget)).toBe(false);

  await publishFor(v, staging, kataTarget, 'kata-app', 'passthrough', true);
  expect((await readDirectVolume(KATA_ROOT, kataTarget))?.info.options).toEqual(['ro']);

  // grown while in a VM: the device grows; the filesystem is the guest's (no kata-runtime here)
  await suite.volumes.extend(v.volumeId, 2);
  const from = suite.node.logs.length;
  expect((await suite.ops.expand(v, kataTarget, 2 * 1024 ** 3)).capacity_bytes).toBe(2 * 1024 ** 3);
  expect(suite.node.logs.slice(from).join('')).toMatch(/device grown; the filesystem grows when the guest resizes it/);

  // the VM sees the grown disk and mounts the filesystem the stage made, read-only
  const run = await runKataSandbox(KATA_ROOT, kataTarget, { writes: { 'x.txt': 'nope' } });
  expect({ failure: run.failure, done: run.done, disk: run.disk }).toEqual({
    failure: undefined,
    done: true,
    disk: { name: 'vda', bytes: 2 * 1024 ** 3, readonly: true },
  });
  expect(run.mount).toMatch(/^\/dev\/vda \/vol ext4 ro/);
  expect(run.refused['x.txt']).toMatch(/Read-only file system/);
  await suite.ops.unpublish(v, kataTarget);
  await suite.ops.unstage(v, staging);
});

test('attachMode filesystem: a Kata pod gets a host mount (Kata shares the directory); block volumes need no direct-volume file', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-fs');
  const target = co.target('pod-fs', 'pv-fs');
  await suite.ops.stage(v, staging, ext4, { volume_context: { attachMode: 'filesystem' } });
  const asked = api.requests.length;
  await publishFor(v, staging, target, 'kata-app', 'filesystem');
  expect(api.requests.length).toBe(asked); // nothing to look up
  expect(mountAt(mounts(), target)?.fsType).toBe('ext4');
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);

  const b = await suite.volumes.createAttached('node-test');
  const bStaging = co.staging('pv-blk');
  const bTarget = co.blockTarget('pod-blk', 'pv-blk');
  await suite.ops.stage(b, bStaging, cap.block());
  await suite.ops.publish(b, bStaging, bTarget, cap.block(), false, { volume_context: podContext('kata-app') });
  expect(statSync(bTarget).isBlockDevice()).toBe(true);
  expect(existsSync(directVolumeDir(KATA_ROOT, bTarget))).toBe(false);
  await suite.ops.unpublish(b, bTarget);
  await suite.ops.unstage(b, bStaging);
});

test('auto without pod info: a host mount and one warning naming podInfoOnMount; a bad attachMode is INVALID_ARGUMENT', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-nopod');
  const target = co.target('pod-nopod', 'pv-nopod');
  await suite.ops.stage(v, staging, ext4);
  const from = suite.node.logs.length;
  await suite.ops.publish(v, staging, target, ext4, false, { volume_context: { attachMode: 'auto' } });
  expect(mountAt(mounts(), target)).toBeDefined();
  const warnings = suite.node.logs
    .slice(from)
    .map((l) => JSON.parse(l) as { level: string; msg: string })
    .filter((l) => l.level === 'warn');
  expect(warnings.map((w) => w.msg)).toEqual([
    expect.stringMatching(/attachMode auto: mounting on the host, since .*podInfoOnMount: true/),
  ]);
  const bad = await expectCode(
    suite.ops.publish(v, staging, co.target('pod-bad', 'pv-nopod'), ext4, false, {
      volume_context: { attachMode: 'vm' },
    }),
    status.INVALID_ARGUMENT,
  );
  expect(bad.details).toMatch(/attachMode "vm" must be one of auto, filesystem, passthrough/);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('a restarted plugin takes the device back from the VM by its record; a pod that wrote into the host directory is caught', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-rst');
  const target = co.target('pod-rst', 'pv-rst');
  await suite.ops.stage(v, staging, ext4, { volume_context: { attachMode: 'passthrough' } });
  await publishFor(v, staging, target, 'kata-app', 'passthrough');
  await suite.restart();
  await publishFor(v, staging, target, 'kata-app', 'passthrough'); // still in place: OK

  // what a Kata with disable_block_device_use = true does: the pod writes into the shared host dir
  writeFileSync(join(target, 'lost-write'), 'x');
  const caught = await expectCode(suite.ops.unpublish(v, target), status.INTERNAL);
  expect(caught.details).toMatch(/is not empty after the VM left.*disable_block_device_use = true/);
  rmSync(join(target, 'lost-write'));
  await suite.ops.unpublish(v, target);
  expect(existsSync(directVolumeDir(KATA_ROOT, target))).toBe(false);
  await suite.ops.unstage(v, staging);
});
