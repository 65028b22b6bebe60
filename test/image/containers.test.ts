import { existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { execa } from 'execa';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NODE_FLAGS } from '../../src/package-info.js';
import { csiClient, type CsiClient, until } from '../helpers/csi-client.js';
import {
  controllerRunArgs,
  containerMemoryBytes,
  IMAGE,
  imageBuilt,
  nodePodRunArgs,
  podman,
  shareMount,
  ulimits,
} from '../helpers/containers.js';
import { localSecret, scratchDir } from '../../harness/local-stack.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../harness/node-leaks.js';
import { directCinder, removeByPrefix, uniquePrefix } from '../../harness/cinder.js';
import { execFileSync } from 'node:child_process';

/**
 * The image, for real: built by `npm run setup` (npm run image) with podman, run the way the manifests
 * run it — the node plugin privileged on the host network with kubelet's and the state directory
 * propagating mounts both ways, the controller as its non-root user with a read-only root — against
 * deploy/local, through a whole volume lifecycle.
 */
const base = scratchDir('image');
const dirs = {
  kubeletRoot: join(base, 'kubelet'),
  stateDir: join(base, 'state'),
  kataRoot: join(base, 'kata'),
  podDir: join(base, 'pod'),
};
const POD = `stackube-node-${process.pid}`;
const NODE = `${POD}-stackube-csi`;
const MAPPER = `${POD}-mapper`;
const CONTROLLER = `stackube-controller-${process.pid}`;
const NODE_ID = 'image-node';
const prefix = uniquePrefix('image');
let node: CsiClient;
let ctl: CsiClient;
/** The manifests' controller acts only for tenants: every call carries tenant-a's Secret, as the sidecars pass it. */
const tenant = () => localSecret('tenant-a');

/** Until the container's driver answers Probe on its socket (a restarted one leaves the old socket file behind). */
async function waitForSocket(path: string, container: string): Promise<void> {
  for (let i = 0; i < 300; i++) {
    if (existsSync(path)) {
      const probe = csiClient(`unix://${path}`);
      const up = await probe.Identity.Probe({}, { deadlineMs: 1000 }).then(
        () => true,
        () => false,
      );
      probe.close();
      if (up) return;
    }
    await sleep(100);
  }
  throw new Error(`${container} does not answer on ${path}: ${(await podman('logs', '--tail', '20', container)).all}`);
}

beforeAll(async () => {
  if (!(await imageBuilt())) throw new Error(`image ${IMAGE} is not built: npm run setup builds it (npm run image)`);
  shareMount(dirs.kubeletRoot);
  shareMount(dirs.stateDir);
  mkdirSync(dirs.kataRoot, { recursive: true });
  for (const c of nodePodRunArgs(POD, NODE_ID, dirs, 19820)) {
    const started = await podman(...c.args);
    if (started.exitCode !== 0) throw new Error(`podman run (${c.name}): ${started.all}`);
  }
  const c = await podman(...controllerRunArgs(CONTROLLER, base, 19830));
  if (c.exitCode !== 0) throw new Error(`podman run (controller): ${c.all}`);
  const nodeSock = join(dirs.kubeletRoot, 'plugins/cinder.csi.stackube.io/csi.sock');
  const ctlSock = join(base, 'controller-csi/csi.sock');
  await waitForSocket(nodeSock, NODE);
  await waitForSocket(ctlSock, CONTROLLER);
  node = csiClient(`unix://${nodeSock}`);
  ctl = csiClient(`unix://${ctlSock}`);
}, 120_000);

afterAll(async () => {
  node?.close();
  ctl?.close();
  // the plugin first: it shares the mapper's PID namespace
  for (const c of [NODE, MAPPER, CONTROLLER]) await podman('rm', '-f', '-t', '5', c);
  const direct = await directCinder();
  try {
    expect(await removeByPrefix(direct.cinder, prefix)).toEqual([]);
  } finally {
    await direct.close();
  }
  for (const d of [dirs.stateDir, dirs.kubeletRoot]) execFileSync('umount', ['-R', '-l', d]);
  forceCleanup(base);
  expect((await podman('ps', '-a', '--filter', `name=${process.pid}`, '--format', '{{.Names}}')).stdout.trim()).toBe(
    '',
  );
}, 120_000);

/**
 * What a CO does when the pod and the PVC are gone: unpublish, unstage, detach, delete; the CO's dirs come out empty.
 */
async function tearDown(volumeId: string, staging: string, target: string, co: CoPaths): Promise<void> {
  await node.Node.NodeUnpublishVolume({ volume_id: volumeId, target_path: target });
  await node.Node.NodeUnstageVolume({ volume_id: volumeId, staging_target_path: staging });
  await ctl.Controller.ControllerUnpublishVolume({ volume_id: volumeId, node_id: NODE_ID, secrets: tenant() });
  await ctl.Controller.DeleteVolume({ volume_id: volumeId, secrets: tenant() });
  expect(co.release()).toEqual([]);
}

test('the image runs `version` and `doctor`, through a launcher with the V8 flags of package.json and no source maps', async () => {
  const v = await podman('run', '--rm', ...ulimits(), IMAGE, 'version');
  expect({ out: v.all }).toEqual({ out: expect.stringMatching(/^\d+\.\d+\.\d+/) });
  const launcher = (
    await podman('run', '--rm', ...ulimits(), '--entrypoint', 'cat', IMAGE, '/usr/local/bin/stackube-csi')
  ).all;
  expect(launcher).toContain(`exec /usr/local/bin/node ${NODE_FLAGS.join(' ')} /app/dist/bundle/main.js "$@"`);
  expect(launcher).not.toContain('--enable-source-maps');
  const d = await podman(
    'run',
    '--rm',
    '--privileged',
    ...ulimits(),
    '--user',
    '0',
    '-v',
    '/dev:/dev',
    '-v',
    `${dirs.kubeletRoot}:/var/lib/kubelet`,
    IMAGE,
    'doctor',
    '--mode',
    'node',
    '--rbd-mapper',
    'fuse',
  );
  expect({ code: d.exitCode, out: d.all }).toMatchObject({ code: 0 });
  expect(d.stdout).toMatch(/rbd-fuse/);
}, 120_000);

test("max_volumes_per_node comes from the mapper container's memory (2Gi: ~50 rbd-fuse mappings), not the plugin's (256Mi)", async () => {
  const { max_volumes_per_node: max } = await node.Node.NodeGetInfo({});
  expect(Number(max)).toBeGreaterThanOrEqual(40);
  expect(Number(max)).toBeLessThanOrEqual(52);
});

test('a volume goes through the containers: create → publish → stage → publish → write → unpublish → unstage → delete', async () => {
  const { volume } = await ctl.Controller.CreateVolume({
    name: `${prefix}life`,
    capacity_range: { required_bytes: 1 << 30 },
    volume_capabilities: [cap.mount('ext4')],
    secrets: tenant(),
  });
  const { publish_context } = await ctl.Controller.ControllerPublishVolume({
    volume_id: volume.volume_id,
    node_id: NODE_ID,
    volume_capability: cap.mount('ext4'),
    secrets: tenant(),
  });
  const co = new CoPaths(dirs.kubeletRoot); // the directories kubelet would make
  const staging = co.staging('pv-image');
  const target = co.target('pod-image', 'pv-image');
  await node.Node.NodeStageVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    volume_capability: cap.mount('ext4'),
  });
  await node.Node.NodePublishVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    target_path: target,
    volume_capability: cap.mount('ext4'),
  });
  // the container made these mounts in its own mount namespace: the host sees them (Bidirectional
  // propagation), and what is written into the volume there is on the volume
  expect(readFileSync('/proc/self/mountinfo', 'utf8')).toContain(` ${target} `);
  writeFileSync(join(target, 'proof'), 'written into the mount the container made\n');
  await node.Node.NodeUnpublishVolume({ volume_id: volume.volume_id, target_path: target });
  await node.Node.NodePublishVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    target_path: target,
    volume_capability: cap.mount('ext4'),
    readonly: true,
  });
  expect(readFileSync(join(target, 'proof'), 'utf8')).toBe('written into the mount the container made\n');
  await tearDown(volume.volume_id, staging, target, co);
}, 240_000);

test("restarts of the plugin's container (podman restart, podman kill + start) leave the mapping and a running writer alone", async () => {
  const { volume } = await ctl.Controller.CreateVolume({
    name: `${prefix}restart`,
    capacity_range: { required_bytes: 1 << 30 },
    volume_capabilities: [cap.mount('ext4')],
    secrets: tenant(),
  });
  const { publish_context } = await ctl.Controller.ControllerPublishVolume({
    volume_id: volume.volume_id,
    node_id: NODE_ID,
    volume_capability: cap.mount('ext4'),
    secrets: tenant(),
  });
  const co = new CoPaths(dirs.kubeletRoot);
  const staging = co.staging('pv-restart');
  const target = co.target('pod-restart', 'pv-restart');
  await node.Node.NodeStageVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    volume_capability: cap.mount('ext4'),
  });
  await node.Node.NodePublishVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    target_path: target,
    volume_capability: cap.mount('ext4'),
  });
  // a pod's writer: numbered 4 KiB records, each fsynced, every 20 ms, until told to stop
  const stop = join(base, 'stop-writer');
  const writer = execa(process.execPath, ['-e', WRITER, join(target, 'log'), stop], { reject: false });
  // the pod writes before, and goes on writing after, each restart: wait for its records, not for a time
  const logSize = () => Promise.resolve(existsSync(join(target, 'log')) ? statSync(join(target, 'log')).size : 0);
  const grown = async (beyond: number) => until(logSize, (n) => n >= beyond + 10 * 4096, 60_000);
  let size = await grown(0);
  const nodeSock = join(dirs.kubeletRoot, 'plugins/cinder.csi.stackube.io/csi.sock');
  const healthy = async () =>
    (await node.Node.NodeGetVolumeStats({ volume_id: volume.volume_id, volume_path: target })).volume_condition;
  const restarts: [string, () => Promise<unknown>][] = [
    ['podman restart', () => podman('restart', '-t', '2', NODE)],
    ['podman kill + start', async () => (await podman('kill', NODE), await podman('start', NODE))],
  ];
  for (const [how, restart] of restarts) {
    node.close();
    expect({ how, r: ((await restart()) as { exitCode: number }).exitCode }).toEqual({ how, r: 0 });
    await waitForSocket(nodeSock, NODE);
    node = csiClient(`unix://${nodeSock}`);
    expect({ how, c: await healthy() }).toEqual({
      how,
      c: { abnormal: false, message: expect.stringMatching(/^healthy/) },
    });
    size = await grown(size);
  }
  writeFileSync(stop, '');
  const w = await writer;
  expect({ exit: w.exitCode, err: w.stderr }).toEqual({ exit: 0, err: '' });
  const written = Number(w.stdout.trim());
  const log = readFileSync(join(target, 'log'));
  expect(log.length).toBe(written * 4096);
  for (let i = 0; i < written; i++)
    expect(
      log
        .subarray(i * 4096, i * 4096 + 12)
        .toString()
        .trim(),
    ).toBe(String(i));
  process.stdout.write(`${JSON.stringify({ bench: 'container-restarts', writes: written, writerErrors: 0 })}\n`);
  await tearDown(volume.volume_id, staging, target, co);
}, 240_000);

test("a read-only block publish made before a restart of the plugin's container is undone after it: its loop device is detached", async () => {
  const { volume } = await ctl.Controller.CreateVolume({
    name: `${prefix}roblock`,
    capacity_range: { required_bytes: 1 << 30 },
    volume_capabilities: [cap.block()],
    secrets: tenant(),
  });
  const { publish_context } = await ctl.Controller.ControllerPublishVolume({
    volume_id: volume.volume_id,
    node_id: NODE_ID,
    volume_capability: cap.block(),
    secrets: tenant(),
  });
  const co = new CoPaths(dirs.kubeletRoot);
  const staging = co.staging('pv-roblock');
  const target = co.blockTarget('pod-roblock', 'pv-roblock');
  await node.Node.NodeStageVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    volume_capability: cap.block(),
  });
  await node.Node.NodePublishVolume({
    volume_id: volume.volume_id,
    publish_context,
    staging_target_path: staging,
    target_path: target,
    volume_capability: cap.block(),
    readonly: true,
  });
  const record = JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${volume.volume_id}.json`), 'utf8')) as {
    mapping: { device: string };
    targets: Record<string, { device?: string }>;
  };
  const roLoop = record.targets[target]?.device;
  expect(roLoop).toMatch(/^\/dev\/loop\d+$/);
  expect(roLoop).not.toBe(record.mapping.device);
  const attached = (loop: string) => existsSync(`/sys/block/${loop.slice('/dev/'.length)}/loop/backing_file`);
  expect(attached(roLoop!)).toBe(true);
  node.close();
  expect((await podman('restart', '-t', '2', NODE)).exitCode).toBe(0);
  const nodeSock = join(dirs.kubeletRoot, 'plugins/cinder.csi.stackube.io/csi.sock');
  await waitForSocket(nodeSock, NODE);
  node = csiClient(`unix://${nodeSock}`);
  await node.Node.NodeUnpublishVolume({ volume_id: volume.volume_id, target_path: target });
  expect({ roLoop, attached: attached(roLoop!) }).toEqual({ roLoop, attached: false });
  await node.Node.NodeUnstageVolume({ volume_id: volume.volume_id, staging_target_path: staging });
  expect({ device: record.mapping.device, attached: attached(record.mapping.device) }).toEqual({
    device: record.mapping.device,
    attached: false,
  });
  await ctl.Controller.ControllerUnpublishVolume({ volume_id: volume.volume_id, node_id: NODE_ID, secrets: tenant() });
  await ctl.Controller.DeleteVolume({ volume_id: volume.volume_id, secrets: tenant() });
  expect(co.release()).toEqual([]);
}, 240_000);

/** argv: file, stop file. Prints how many records it wrote; any failed write is on stderr and exit 1. */
const WRITER = `
const fs = require('node:fs');
const [file, stop] = process.argv.slice(1);
const fd = fs.openSync(file, 'a');
let i = 0;
const tick = () => {
  if (fs.existsSync(stop)) { fs.closeSync(fd); process.stdout.write(String(i)); return; }
  try {
    const rec = Buffer.alloc(4096, 32); rec.write(String(i));
    fs.writeSync(fd, rec); fs.fsyncSync(fd); i++;
  } catch (e) { process.stderr.write('write ' + i + ': ' + e.message); process.exit(1); }
  setTimeout(tick, 20);
};
tick();
`;

test('footprint: the image size, and the node container idle in memory (its cgroup, as podman counts it)', async () => {
  const size = Number((await podman('image', 'inspect', '--format', '{{.Size}}', IMAGE)).stdout.trim());
  const idle = await containerMemoryBytes(NODE);
  const mapper = await containerMemoryBytes(MAPPER);
  process.stdout.write(
    `${JSON.stringify({ bench: 'image-footprint', image: IMAGE, imageBytes: size, nodeContainerIdleBytes: idle, mapperContainerIdleBytes: mapper })}\n`,
  );
  expect(size).toBeGreaterThan(50 << 20);
  expect(idle).toBeGreaterThan(10 << 20);
  expect(
    nodeLeaks({
      stateDir: dirs.stateDir,
      kubeletRoot: dirs.kubeletRoot,
      allowed: ['plugins', 'plugins/cinder.csi.stackube.io', 'plugins/cinder.csi.stackube.io/csi.sock'],
    }),
  ).toEqual([]);
});
