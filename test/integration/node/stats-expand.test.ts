import { randomBytes } from 'node:crypto';
import { readFileSync, statfsSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { execa } from 'execa';
import type { AttachedVolume } from '../../../harness/cinder-volumes.js';
import { expectCode, until } from '../../helpers/csi-client.js';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

const GiB = 1024 ** 3;
const METRICS = '127.0.0.1:19841';
const suite = nodeSuite('node-sx', { metricsAddress: METRICS });
/** The value of one series of the node plugin's /metrics (0 when it is not there). */
const metric = async (series: string) => {
  const text = await (await fetch(`http://${METRICS}/metrics`)).text();
  const line = text.split('\n').find((l) => l.startsWith(`${series} `));
  return line ? Number(line.slice(series.length + 1)) : 0;
};
const { dirs, co } = suite;

/** Whether this process may resize a mounted ext4 (online resize2fs needs CAP_SYS_RESOURCE, bit 24). */
const hasSysResource = () =>
  (BigInt(`0x${/CapEff:\s*([0-9a-f]+)/.exec(readFileSync('/proc/self/status', 'utf8'))![1]}`) >> 24n) & 1n;

const recordOf = (v: AttachedVolume) =>
  JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${v.volumeId}.json`), 'utf8')) as {
    mapping: { pid: number; device: string };
  };

test('NodeGetCapabilities advertises exactly what works', async () => {
  const r = await suite.node.csi.Node.NodeGetCapabilities({});
  expect(r.capabilities.map((c: { rpc: { type: string } }) => c.rpc.type).sort()).toEqual(
    [
      'EXPAND_VOLUME',
      'GET_VOLUME_STATS',
      'SINGLE_NODE_MULTI_WRITER',
      'STAGE_UNSTAGE_VOLUME',
      'VOLUME_CONDITION',
      'VOLUME_MOUNT_GROUP',
    ].sort(),
  );
  const info = await suite.node.csi.Node.NodeGetInfo({});
  expect(info).toMatchObject({
    node_id: 'node-test',
    max_volumes_per_node: 128,
    accessible_topology: { segments: { 'topology.cinder.csi.stackube.io/zone': 'nova' } },
  });
});

test('filesystem stats: bytes and inodes as the filesystem reports them, at the staging path and the target', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-st');
  const target = co.target('pod-st', 'pv-st');
  const c = cap.mount('ext4');
  await suite.ops.stage(v, staging, c);
  await suite.ops.publish(v, staging, target, c);
  writeFileSync(join(target, 'f'), randomBytes(4 << 20));
  for (const path of [staging, target]) {
    const r = await suite.ops.stats(v, path, staging);
    const bytes = r.usage.find((u: { unit: string }) => u.unit === 'BYTES');
    const inodes = r.usage.find((u: { unit: string }) => u.unit === 'INODES');
    const fs = statfsSync(path);
    expect(bytes.total).toBe(fs.blocks * fs.bsize);
    expect(bytes.total).toBeGreaterThan(0.9 * GiB);
    expect(bytes.used).toBeGreaterThanOrEqual(4 << 20);
    expect(bytes.available).toBeLessThanOrEqual(bytes.total - bytes.used);
    expect(inodes).toMatchObject({ total: fs.files });
    expect(inodes.used).toBeGreaterThanOrEqual(12);
    expect(r.volume_condition).toMatchObject({
      abnormal: false,
      message: expect.stringMatching(/^healthy: volumes\/volume-.* on \/dev\/loop\d+ \(fuse\)$/),
    });
  }
  // the target's mount gone behind the plugin's back: abnormal, and unpublish still cleans up
  await execa('umount', [target]);
  expect((await suite.ops.stats(v, target, staging)).volume_condition).toEqual({
    abnormal: true,
    message: `${target} is no longer mounted`,
  });
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('block stats: the device size', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-bst');
  const target = co.blockTarget('pod-bst', 'pv-bst');
  await suite.ops.stage(v, staging, cap.block());
  await suite.ops.publish(v, staging, target, cap.block());
  const r = await suite.ops.stats(v, target, staging);
  expect(r.usage).toEqual([{ unit: 'BYTES', total: GiB, used: 0, available: 0 }]);
  expect(r.volume_condition.abnormal).toBe(false);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('a dead rbd-fuse: stats say abnormal and why; unpublish and unstage still clean up everything', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-dead');
  const target = co.target('pod-dead', 'pv-dead');
  const c = cap.mount('ext4');
  await suite.ops.stage(v, staging, c);
  await suite.ops.publish(v, staging, target, c);
  process.kill(recordOf(v).mapping.pid, 'SIGKILL');
  const r = await until(
    () => suite.ops.stats(v, target, staging),
    (x) => x.volume_condition.abnormal,
  );
  expect(r.volume_condition).toMatchObject({
    abnormal: true,
    message: expect.stringMatching(/rbd-fuse \(pid \d+\) serving .* has exited/),
  });
  // the CO re-sends the stage: it cannot be redone while published, and says so
  await expectCode(suite.ops.stage(v, staging, c), status.FAILED_PRECONDITION);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('a dead rbd-fuse behind a volume that is only staged: NodeStageVolume again restores it; the metrics count it', async () => {
  const maps = 'stackube_csi_mapper_operation_duration_seconds_count{mapper="fuse",operation="map",outcome="ok"}';
  const unmaps = 'stackube_csi_mapper_operation_duration_seconds_count{mapper="fuse",operation="unmap",outcome="ok"}';
  const restarts = 'stackube_csi_mapper_daemon_restarts_total{mapper="fuse"}';
  const before = { maps: await metric(maps), unmaps: await metric(unmaps), restarts: await metric(restarts) };
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-revive');
  const c = cap.mount('xfs');
  await suite.ops.stage(v, staging, c);
  expect(await metric('stackube_csi_mappings{mapper="fuse"}')).toBe(1);
  writeFileSync(join(staging, 'kept'), 'still here');
  await suite.ops.unstage(v, staging);
  expect(await metric('stackube_csi_mappings{mapper="fuse"}')).toBe(0);
  await suite.ops.stage(v, staging, c);
  process.kill(recordOf(v).mapping.pid, 'SIGKILL');
  expect(
    (
      await until(
        () => suite.ops.stats(v, staging),
        (x) => x.volume_condition.abnormal,
      )
    ).volume_condition.abnormal,
  ).toBe(true);
  await suite.ops.stage(v, staging, c);
  expect((await suite.ops.stats(v, staging)).volume_condition.abnormal).toBe(false);
  expect(readFileSync(join(staging, 'kept'), 'utf8')).toBe('still here');
  await suite.ops.unstage(v, staging);
  // three maps (the last one anew after the restart) and three unmaps, one of the dead mapping
  expect({ maps: await metric(maps), unmaps: await metric(unmaps), restarts: await metric(restarts) }).toEqual({
    maps: before.maps + 3,
    unmaps: before.unmaps + 3,
    restarts: before.restarts + 1,
  });
});

test('xfs grows online while published; the data stays', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-gx');
  const target = co.target('pod-gx', 'pv-gx');
  const c = cap.mount('xfs');
  await suite.ops.stage(v, staging, c);
  await suite.ops.publish(v, staging, target, c);
  const payload = randomBytes(2 << 20);
  writeFileSync(join(target, 'data'), payload);
  const before = statfsSync(target);

  await expectCode(suite.ops.expand(v, target, 2 * GiB, c), status.FAILED_PRECONDITION); // the image has not grown yet
  await suite.volumes.extend(v.volumeId, 2);
  const r = await suite.ops.expand(v, target, 2 * GiB, c);
  expect(r.capacity_bytes).toBe(2 * GiB);
  await suite.ops.expand(v, target, 2 * GiB, c); // again: nothing to do, OK
  const after = statfsSync(target);
  expect(after.blocks * after.bsize).toBeGreaterThan(before.blocks * before.bsize + 0.9 * GiB);
  expect(readFileSync(join(target, 'data')).equals(payload)).toBe(true);
  await expectCode(suite.ops.expand(v, target, 2 * GiB, cap.block()), status.INVALID_ARGUMENT);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('ext4 grows: online where the plugin may (CAP_SYS_RESOURCE), else once only staged; the data stays', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-ge');
  const target = co.target('pod-ge', 'pv-ge');
  const c = cap.mount('ext4');
  await suite.ops.stage(v, staging, c);
  await suite.ops.publish(v, staging, target, c);
  const payload = randomBytes(2 << 20);
  writeFileSync(join(target, 'data'), payload);
  await suite.volumes.extend(v.volumeId, 2);
  if (hasSysResource()) {
    expect((await suite.ops.expand(v, target, 2 * GiB, c)).capacity_bytes).toBe(2 * GiB);
  } else {
    const err = await expectCode(suite.ops.expand(v, target, 2 * GiB, c), status.FAILED_PRECONDITION);
    expect(err.details).toMatch(/CAP_SYS_RESOURCE/);
    await suite.ops.unpublish(v, target);
    expect((await suite.ops.expand(v, staging, 2 * GiB, c)).capacity_bytes).toBe(2 * GiB);
    await suite.ops.publish(v, staging, target, c);
  }
  const fs = statfsSync(target);
  expect(fs.blocks * fs.bsize).toBeGreaterThan(1.8 * GiB);
  expect(readFileSync(join(target, 'data')).equals(payload)).toBe(true);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('block volumes need nothing but the new size', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-gb');
  const target = co.blockTarget('pod-gb', 'pv-gb');
  await suite.ops.stage(v, staging, cap.block());
  await suite.ops.publish(v, staging, target, cap.block());
  await suite.volumes.extend(v.volumeId, 3);
  expect((await suite.ops.expand(v, target, 3 * GiB)).capacity_bytes).toBe(3 * GiB);
  expect((await suite.ops.stats(v, target)).usage[0].total).toBe(3 * GiB);
  expect(statSync(target).isBlockDevice()).toBe(true);
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});

test('VOLUME_MOUNT_GROUP: the volume is given to the pod group (g+rw, setgid dirs), as kubelet would', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-grp');
  const target = co.target('pod-grp', 'pv-grp');
  await suite.ops.stage(v, staging, cap.mount('ext4'));
  writeFileSync(join(staging, 'before'), 'x', { mode: 0o600 });
  const c = cap.mount('ext4', 'SINGLE_NODE_WRITER', [], '4321');
  await suite.ops.publish(v, staging, target, c);
  const root = statSync(target);
  expect(root.gid).toBe(4321);
  expect(root.mode & 0o2070).toBe(0o2070);
  const file = statSync(join(target, 'before'));
  expect(file.gid).toBe(4321);
  expect(file.mode & 0o060).toBe(0o060);
  writeFileSync(join(target, 'after'), 'y');
  expect(statSync(join(target, 'after')).gid).toBe(4321); // setgid: new files inherit the group
  await suite.ops.unpublish(v, target);
  await suite.ops.unstage(v, staging);
});
