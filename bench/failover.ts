/**
 * Failover of a lost node (issue 25) on deploy/local's real Cinder + Ceph, two node plugins in this
 * process (node ids, kubelet roots and state dirs of their own) and a controller with the fencing identity:
 * from ControllerUnpublishVolume(A, lost) to the first 4 KiB written on B — the driver's part (fence, release,
 * publish, stage, publish, write) — against the same steps by hand in the same run: `ceph osd blocklist add`
 * and `rbd lock rm` as the fencing identity, the Cinder attachment deleted and one made for B, rbd-fuse +
 * losetup, the write. A's mapper holds the image's lock each time (it wrote last). Prints JSON and a table.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { directCinder } from '../harness/cinder.js';
import { startTestDriver } from '../harness/driver.js';
import { CEPH_CONF, CEPH_FENCING_ID, CEPH_KEYRING, STACK } from '../harness/local-stack.js';
import { nodeDirs, nodeOps, startNodeDriver, type NodeDriver } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup } from '../harness/node-leaks.js';
import { fencingRecords, imageOf, removeFencingRecords } from '../harness/rbd-image.js';
import { connectorFor } from '../src/csi/controller/nodes.js';
import { percentile, report, round } from './report.js';

const ROUNDS = Number(process.env.ROUNDS ?? 3);
const BLOCK = cap.block();
const POOL = STACK.CEPH_POOL!;
const FENCING = ['-c', CEPH_CONF, '--id', CEPH_FENCING_ID];
const run = Math.random().toString(16).slice(2, 8);
const ms = (n: number) => round(n, 1);
const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

const controller = await startTestDriver({
  options: { controllerCephConf: CEPH_CONF, fencingCephId: CEPH_FENCING_ID },
});
const ctl = controller.client.Controller as Required<typeof controller.client.Controller>;
const { cinder, close } = await directCinder();
const nodes: { id: string; driver: NodeDriver; co: CoPaths; base: string }[] = [];
for (const name of ['a', 'b']) {
  const id = `bench-${name}-${run}`;
  const dirs = nodeDirs(`bench-failover-${name}`);
  nodes.push({
    id,
    driver: await startNodeDriver(dirs, { nodeId: id }),
    co: new CoPaths(dirs.kubeletRoot),
    base: dirs.base,
  });
}
const [A, B] = nodes as [(typeof nodes)[0], (typeof nodes)[0]];
const write4k = (path: string) => execa('dd', ['if=/dev/urandom', `of=${path}`, 'bs=4096', 'count=1', 'oflag=direct']);

/** A block volume published, staged and written on A (A's mapper holds its lock), A marked lost. */
async function onA(tag: string) {
  const v = await ctl.CreateVolume({
    name: `bench-failover-${run}-${tag}`,
    capacity_range: { required_bytes: 1 << 30 },
    volume_capabilities: [BLOCK],
  });
  const volumeId = v.volume!.volume_id;
  const { publish_context } = await ctl.ControllerPublishVolume({
    volume_id: volumeId,
    node_id: A.id,
    volume_capability: BLOCK,
  });
  const ref = { volumeId, publishContext: publish_context! };
  const ops = nodeOps(A.driver.csi);
  await ops.stage(ref, A.co.staging(volumeId), BLOCK);
  const target = A.co.blockTarget(`pod-${tag}`, volumeId);
  await ops.publish(ref, A.co.staging(volumeId), target, BLOCK);
  await write4k(target);
  return { volumeId, publishContext: publish_context!, target };
}

/** Release what A holds (its mapper is fenced: the stage goes without a write) and delete the volume. */
async function cleanup(volumeId: string, targets: { node: (typeof nodes)[0]; target: string }[]) {
  for (const { node, target } of targets) {
    const ops = nodeOps(node.driver.csi);
    await ops.unpublish({ volumeId, publishContext: {} }, target);
    await ops.unstage({ volumeId, publishContext: {} }, node.co.staging(volumeId));
  }
  await ctl.ControllerUnpublishVolume({ volume_id: volumeId, node_id: '' });
  await ctl.DeleteVolume({ volume_id: volumeId });
}

const driver: number[] = [];
const raw: number[] = [];
const fenceOnly: number[] = [];
await execa(process.execPath, ['dist/bundle/main.js', 'fence', A.id, '--reason', 'benchmark'], {
  env: { ...process.env, CONTROLLER_CEPH_CONF: CEPH_CONF, FENCING_CEPH_ID: CEPH_FENCING_ID },
});
for (let round_ = 0; round_ < ROUNDS; round_++) {
  // the driver: unpublish from the lost node (fence + release), then B takes it and writes
  const d = await onA(`d${round_}`);
  const t0 = performance.now();
  await ctl.ControllerUnpublishVolume({ volume_id: d.volumeId, node_id: A.id });
  const t1 = performance.now();
  const { publish_context } = await ctl.ControllerPublishVolume({
    volume_id: d.volumeId,
    node_id: B.id,
    volume_capability: BLOCK,
  });
  const ref = { volumeId: d.volumeId, publishContext: publish_context! };
  const opsB = nodeOps(B.driver.csi);
  await opsB.stage(ref, B.co.staging(d.volumeId), BLOCK);
  const targetB = B.co.blockTarget(`pod-d${round_}`, d.volumeId);
  await opsB.publish(ref, B.co.staging(d.volumeId), targetB, BLOCK);
  await write4k(targetB);
  driver.push(performance.now() - t0);
  fenceOnly.push(t1 - t0);
  await cleanup(d.volumeId, [
    { node: A, target: d.target },
    { node: B, target: targetB },
  ]);

  // by hand: the same steps with the tools
  const r = await onA(`r${round_}`);
  const image = imageOf(r.volumeId);
  const { clients } = (await fencingRecords(A.id))[`mapper/${image}`] as { clients: string[] };
  const mp = join(B.base, `raw-${r.volumeId}`);
  mkdirSync(mp);
  const t2 = performance.now();
  for (const c of clients) await execa('ceph', [...FENCING, 'osd', 'blocklist', 'add', c, '3600']);
  const locks = JSON.parse(
    (await execa('rbd', [...FENCING, 'lock', 'ls', '--format', 'json', `${POOL}/${image}`])).stdout,
  ) as {
    id: string;
    locker: string;
  }[];
  for (const l of locks) await execa('rbd', [...FENCING, 'lock', 'rm', `${POOL}/${image}`, l.id, l.locker]);
  const vol = await cinder.getVolume(r.volumeId);
  for (const a of vol.attachments) await cinder.deleteAttachment(a.attachment_id);
  const att = await cinder.createAttachment(r.volumeId, connectorFor(B.id), 'rw');
  await cinder.completeAttachment(att.id);
  const child = spawn('rbd-fuse', ['-f', '-c', CEPH_CONF, '-p', POOL, '-r', image, mp], {
    env: { ...process.env, CEPH_ARGS: `--id cinder --keyring ${CEPH_KEYRING}` },
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  for (;;) {
    try {
      statSync(join(mp, image));
      break;
    } catch {
      await sleep(5);
    }
  }
  const loop = (await execa('losetup', ['--find', '--show', '--direct-io=on', join(mp, image)])).stdout.trim();
  await write4k(loop);
  raw.push(performance.now() - t2);
  await execa('losetup', ['-d', loop]);
  await execa('umount', [mp]);
  while (child.exitCode === null && child.signalCode === null) await sleep(5);
  await cinder.deleteAttachment(att.id);
  await cleanup(r.volumeId, [{ node: A, target: r.target }]);
  for (const c of clients) await execa('ceph', [...FENCING, 'osd', 'blocklist', 'rm', c]);
}
await execa(process.execPath, ['dist/bundle/main.js', 'unfence', A.id], {
  env: { ...process.env, CONTROLLER_CEPH_CONF: CEPH_CONF, FENCING_CEPH_ID: CEPH_FENCING_ID },
});
for (const n of nodes) {
  await n.driver.stop();
  forceCleanup(n.base);
  await removeFencingRecords(n.id);
}
await controller.stop();
await close();
const leftovers = readdirSync(join(STACK.SCRATCH!)).filter((d) => d.startsWith('bench-failover-'));

const result = {
  rounds: ROUNDS,
  driverMs: { median: ms(median(driver)), all: driver.map(ms) },
  rawMs: { median: ms(median(raw)), all: raw.map(ms) },
  ratio: round(median(driver) / median(raw), 2),
  unpublishLostMs: { median: ms(median(fenceOnly)), all: fenceOnly.map(ms) },
  leftovers,
};
report('failover', result, [
  ['ControllerUnpublish(lost A) → first write on B, median (ms)', result.driverMs.median],
  ['  of it ControllerUnpublish (fence + release), median (ms)', result.unpublishLostMs.median],
  ['by hand: blocklist + lock rm + attachments + rbd-fuse + write (ms)', result.rawMs.median],
  ['ratio', result.ratio],
]);
