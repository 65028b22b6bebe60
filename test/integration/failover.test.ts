import { type ChildProcess, spawn } from 'node:child_process';
import { createHash, randomBytes } from 'node:crypto';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { startTestDriver, type TestDriver } from '../../harness/driver.js';
import { CEPH_CONF, CEPH_FENCING_ID, CEPH_KEYRING, CLOUD_CONF } from '../../harness/local-stack.js';
import { nodeDirs, nodeOps, type NodeDirs } from '../../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../harness/node-leaks.js';
import { blocklisted, fencingRecords, imageOf, readImage, removeFencingRecords } from '../../harness/rbd-image.js';
import { NODE_FLAGS, PACKAGE_ROOT } from '../../src/package-info.js';
import { asCo } from '../helpers/csi-client.js';
import { makePki, KubeApiStandIn } from '../helpers/kube-api.js';
import { startDriverProcess, startPluginProcess, type PluginProcess } from '../helpers/plugin-process.js';

/**
 * Two nodes on one machine (own node ids, kubelet roots, state dirs; each plugin its own process) and a
 * controller with the fencing identity. Node A stages a block volume and a writer on it keeps writing a
 * counter into block 0; A is lost (frozen: plugin, rbd-fuse and writer SIGSTOPped); the volume moves to
 * B, which writes its own pattern; A is thawed. Fenced, A's writes fail and the image holds exactly B's
 * bytes; without the fence (the control) A's counter lands after B took over.
 */
const BLOCK = cap.block();
const PATTERN_BYTES = 1024 * 1024;
const fencingEnv = { CONTROLLER_CEPH_CONF: CEPH_CONF, FENCING_CEPH_ID: CEPH_FENCING_ID };

interface Node {
  id: string;
  dirs: NodeDirs;
  co: CoPaths;
  plugin: PluginProcess;
}

let controller: TestDriver;
const nodes: Node[] = [];
const volumes: string[] = [];
/** Node ids of this run (a run's fencing records are its own). */
const run = randomBytes(3).toString('hex');
const A = `node-a-${run}`;
const B = `node-b-${run}`;

async function startNode(id: string, dirs = nodeDirs(`failover-${id}`)): Promise<Node> {
  const plugin = await startPluginProcess(dirs, '', { env: { NODE_ID: id } });
  const node = { id, dirs, co: new CoPaths(dirs.kubeletRoot), plugin };
  nodes.push(node);
  return node;
}

beforeAll(async () => {
  controller = await startTestDriver({
    options: { controllerCephConf: CEPH_CONF, fencingCephId: CEPH_FENCING_ID },
  });
});
afterAll(async () => {
  for (const n of nodes) {
    // a test that failed with the node frozen or fenced: its rbd-fuse goes first (a fenced one answers no unmount)
    try {
      process.kill(-n.plugin.child.pid!, 'SIGCONT');
    } catch {
      // already gone
    }
    for (const pid of mapperPids(n)) process.kill(pid, 'SIGKILL');
    await n.plugin.stop().catch(() => undefined);
    forceCleanup(n.dirs.base);
    await removeFencingRecords(n.id);
  }
  for (const id of volumes) {
    await controller.client.Controller.ControllerUnpublishVolume({ volume_id: id, node_id: '' }).catch(() => undefined);
    await controller.client.Controller.DeleteVolume({ volume_id: id }).catch(() => undefined);
  }
  await controller.stop();
});

const ctl = () => controller.client.Controller as Required<typeof controller.client.Controller>;

async function createVolume(name: string): Promise<string> {
  const r = await ctl().CreateVolume({
    name: `failover-${name}-${randomBytes(3).toString('hex')}`,
    capacity_range: { required_bytes: 1 << 30 },
    volume_capabilities: [BLOCK],
  });
  volumes.push(r.volume!.volume_id);
  return r.volume!.volume_id;
}

/** ControllerPublish to the node, then stage and publish there as kubelet would; returns the block target. */
async function attach(volumeId: string, node: Node, pod: string): Promise<string> {
  const { publish_context } = await ctl().ControllerPublishVolume({
    volume_id: volumeId,
    node_id: node.id,
    volume_capability: BLOCK,
    readonly: false,
  });
  const v = { volumeId, publishContext: publish_context! };
  const staging = node.co.staging(volumeId);
  const target = node.co.blockTarget(pod, volumeId);
  const ops = nodeOps(node.plugin.csi);
  await ops.stage(v, staging, BLOCK);
  await ops.publish(v, staging, target, BLOCK);
  return target;
}

async function detach(volumeId: string, node: Node, target: string): Promise<void> {
  const ops = nodeOps(node.plugin.csi);
  const v = { volumeId, publishContext: {} };
  await ops.unpublish(v, target);
  await ops.unstage(v, node.co.staging(volumeId));
  await ctl().ControllerUnpublishVolume({ volume_id: volumeId, node_id: node.id });
}

/** A pod's writer: block 0 gets "A<counter>" with O_DIRECT|O_SYNC every 20 ms; it prints each counter written. */
const WRITER = `
import mmap, os, sys, time
fd = os.open(sys.argv[1], os.O_WRONLY | os.O_DIRECT | os.O_SYNC)
buf = mmap.mmap(-1, 4096)
i = 0
while True:
    i += 1
    buf.seek(0); buf.write(b'A%010d' % i)
    try:
        os.pwrite(fd, buf, 0)
    except OSError as e:
        print('error', e.errno, flush=True); sys.exit(3)
    print(i, flush=True)
    time.sleep(0.02)
`;

interface Writer {
  child: ChildProcess;
  lines: () => string[];
  exited: Promise<number | null>;
}

function startWriter(target: string): Writer {
  const child = spawn('/usr/bin/python3', ['-c', WRITER, target], { stdio: ['ignore', 'pipe', 'pipe'] });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)));
  return { child, lines: () => out.split('\n').filter(Boolean), exited };
}

/** The rbd-fuse processes serving a node's mappings (their argv names its state dir). */
function mapperPids(n: Node): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        const argv = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
        return /rbd-fuse$/.test(argv[0]!) && argv.some((a) => a.startsWith(`${n.dirs.stateDir}/`));
      } catch {
        return false;
      }
    })
    .map(Number);
}

/** Freeze (or thaw) a node: its plugin's process group, its rbd-fuse daemons and (unless left out) the pod's writer. */
function signalNode(n: Node, writer: Writer | undefined, sig: 'SIGSTOP' | 'SIGCONT'): void {
  process.kill(-n.plugin.child.pid!, sig);
  for (const pid of mapperPids(n)) process.kill(pid, sig);
  writer?.child.kill(sig);
}

/** B's bytes over the first MiB, written with O_DIRECT through its block target. */
async function writePattern(target: string): Promise<{ hash: string; done: Promise<unknown> }> {
  const pattern = randomBytes(PATTERN_BYTES);
  const file = join(nodes[1]!.dirs.base, 'pattern');
  writeFileSync(file, pattern);
  const done = execa('dd', [`if=${file}`, `of=${target}`, 'bs=1M', 'count=1', 'oflag=direct,sync'], {
    timeout: 120_000,
  });
  return { hash: createHash('sha256').update(pattern).digest('hex'), done };
}

const hashOfImage = async (volumeId: string) =>
  createHash('sha256')
    .update(await readImage(volumeId, 0, PATTERN_BYTES))
    .digest('hex');

/** The stackube-csi CLI (the shipped bundle), as an operator runs it. */
const cli = (...args: string[]) =>
  execa(process.execPath, [...NODE_FLAGS, join(PACKAGE_ROOT, 'dist/bundle/main.js'), ...args], {
    // the node's keyring in the environment (as in --mode all): librados would take it over the conf's
    env: { PATH: process.env.PATH, CEPH_KEYRING, ...fencingEnv },
    extendEnv: false,
  });

test("a lost node, fenced: its writes fail, the image holds exactly the new node's bytes, and it comes back clean", async () => {
  const a = await startNode(A);
  const b = await startNode(B);
  const volumeId = await createVolume('fenced');
  const targetA = await attach(volumeId, a, 'pod-a');
  const writer = startWriter(targetA);
  while (writer.lines().length < 5) await sleep(20);
  const [clientA = ''] = ((await fencingRecords(A))[`mapper/${imageOf(volumeId)}`] as { clients: string[] }).clients;
  expect(clientA).toMatch(/^127\.0\.0\.1:0\/\d+$/);

  signalNode(a, writer, 'SIGSTOP');
  const counterAtFreeze = writer.lines().length;
  const fenced = JSON.parse((await cli('fence', A, '--reason', 'test: frozen')).stdout) as {
    fenced: { image: string; clients: string[] }[];
  };
  expect(fenced.fenced).toEqual([{ image: `volumes/${imageOf(volumeId)}`, clients: [clientA] }]);
  expect(await blocklisted()).toContain(clientA);
  await ctl().ControllerUnpublishVolume({ volume_id: volumeId, node_id: A });
  const targetB = await attach(volumeId, b, 'pod-b');
  const { hash, done } = await writePattern(targetB);
  await done; // at once: A's lock was broken, nobody has to answer for it

  signalNode(a, writer, 'SIGCONT');
  // A's plugin restarts (as after the node's reboot or its container's): the fenced stage goes, without a write
  a.plugin.child.kill('SIGKILL');
  await a.plugin.ended;
  a.plugin = await startPluginProcess(a.dirs, '', { env: { NODE_ID: A } });
  expect(await writer.exited).toBe(3);
  // EIO in the pod, never a hang; no write of A's after the freeze got through
  // (a write that returned just before the freeze may print its counter after it: that one predates the fence)
  const afterFreeze = writer.lines().slice(counterAtFreeze);
  expect(afterFreeze.at(-1)).toBe('error 5');
  expect(afterFreeze.length).toBeLessThanOrEqual(2);
  expect(await hashOfImage(volumeId)).toBe(hash);
  // kubelet's unpublish and unstage on A after its restart: whatever the start-up left (the writer held the
  // device then) goes, without a write. The start-up's teardown runs while the plugin serves: as kubelet does, a
  // call that meets it (ABORTED) is retried
  await asCo(() => nodeOps(a.plugin.csi).unpublish({ volumeId, publishContext: {} }, targetA));
  await asCo(() => nodeOps(a.plugin.csi).unstage({ volumeId, publishContext: {} }, a.co.staging(volumeId)));
  expect(nodeLeaks({ ...a.dirs, allowed: allowedOf(a) })).toEqual([]);
  expect(mapperPids(a)).toEqual([]);
  expect((await fencingRecords(A))[`fence/${imageOf(volumeId)}`]).toMatchObject({
    state: 'released',
    clients: [clientA],
  });
  expect(await hashOfImage(volumeId)).toBe(hash);

  // the volume comes back to A: that publish lifts the fence A released (in the background), and A writes again
  await detach(volumeId, b, targetB);
  const again = await attach(volumeId, a, 'pod-a2');
  for (let i = 0; i < 100 && (await blocklisted()).includes(clientA); i++) await sleep(100);
  expect(await blocklisted()).not.toContain(clientA);
  expect(await fencingRecords(A)).not.toHaveProperty(`fence/${imageOf(volumeId)}`);
  await cli('unfence', A); // the operator's word that A is back: its lost mark goes
  await execa('dd', ['if=/dev/zero', `of=${again}`, 'bs=4096', 'count=1', 'oflag=direct']);
  await detach(volumeId, a, again);
  expect(nodeLeaks({ ...b.dirs, allowed: allowedOf(b) })).toEqual([]);
});

test('the control, unfenced: a node that is not lost is never fenced, and its counter lands after the new node took over', async () => {
  const a = nodes.find((n) => n.id === A) ?? (await startNode(A));
  const b = nodes.find((n) => n.id === B) ?? (await startNode(B));
  const volumeId = await createVolume('control');
  const targetA = await attach(volumeId, a, 'pod-c');
  const writer = startWriter(targetA);
  while (writer.lines().length < 5) await sleep(20);
  signalNode(a, writer, 'SIGSTOP');
  await ctl().ControllerUnpublishVolume({ volume_id: volumeId, node_id: A }); // not lost: released as is
  expect(await fencingRecords(A)).not.toHaveProperty(`fence/${imageOf(volumeId)}`);
  // A was only slow (frozen for less than its watch's 30 s: else librbd itself would blocklist it when B
  // breaks its lock); its mapper answers again, its pod's writer is still stopped
  signalNode(a, undefined, 'SIGCONT');
  const targetB = await attach(volumeId, b, 'pod-d');
  const { hash, done } = await writePattern(targetB); // A's mapper hands B the lock
  await done;
  const after = writer.lines().length;
  writer.child.kill('SIGCONT'); // A's pod writes on: its mapper takes the lock back
  while (writer.lines().length < after + 10) await sleep(20);
  writer.child.kill('SIGKILL');
  await writer.exited;
  const block0 = await readImage(volumeId, 0, 11);
  expect(block0.toString()).toMatch(/^A\d{10}$/); // A's counter, written after B's bytes
  expect(await hashOfImage(volumeId)).not.toBe(hash);
  await detach(volumeId, b, targetB);
  const ops = nodeOps(a.plugin.csi);
  await ops.unpublish({ volumeId, publishContext: {} }, targetA);
  await ops.unstage({ volumeId, publishContext: {} }, a.co.staging(volumeId));
});

/** What the test's CO made under a node's kubelet root (its staging and target dirs). */
function allowedOf(n: Node): string[] {
  return readdirSync(n.dirs.kubeletRoot, { recursive: true }).map(String);
}

describe('a controller killed at every step of fence and release', () => {
  let kube: KubeApiStandIn;
  let kubeconfig: string;
  const controllerSocket = nodeDirs('failover-controller').socket;
  beforeAll(async () => {
    kube = await new KubeApiStandIn(await makePki(), { token: 'fencing-test' }).start();
    kube.addNode(A, [{ key: 'node.kubernetes.io/out-of-service', effect: 'NoExecute' }]);
    kube.addNode(B);
    kubeconfig = kube.writeKubeconfig(kube.pki.dir);
  });
  afterAll(async () => {
    await kube.stop();
    rmSync(dirname(controllerSocket), { recursive: true, force: true });
  });

  const startController = (failpoints = '') =>
    startDriverProcess(
      controllerSocket,
      {
        CSI_MODE: 'controller',
        CSI_CONFIG: CLOUD_CONF,
        ALLOW_DEFAULT_CREDENTIAL: 'true',
        KUBECONFIG: kubeconfig,
        ...fencingEnv,
      },
      failpoints,
    );

  test.each(['fence:recorded', 'fence:blocklisted', 'fence:locks-broken', 'fence:done'])(
    'killed at %s, the retry converges: A fenced, its attachment gone, one attachment once B has it',
    async (failpoint) => {
      const a = nodes.find((n) => n.id === A) ?? (await startNode(A));
      const volumeId = await createVolume('kill');
      const targetA = await attach(volumeId, a, 'pod-k'); // tainted: A is lost from the controller's view
      const { clients } = (await fencingRecords(A))[`mapper/${imageOf(volumeId)}`] as { clients: string[] };
      const killed = await startController(`${failpoint}=kill`);
      const outcome = await (killed.csi.Controller as Required<typeof killed.csi.Controller>)
        .ControllerUnpublishVolume({ volume_id: volumeId, node_id: A })
        .then(
          () => 'answered',
          () => 'failed',
        );
      expect({ failpoint, outcome, how: await killed.ended }).toEqual({ failpoint, outcome: 'failed', how: 'SIGKILL' });
      killed.csi.close();
      const fresh = await startController();
      try {
        const c = fresh.csi.Controller as Required<typeof fresh.csi.Controller>;
        await c.ControllerUnpublishVolume({ volume_id: volumeId, node_id: A });
        await c.ControllerUnpublishVolume({ volume_id: volumeId, node_id: A }); // and again: idempotent
        expect((await fencingRecords(A))[`fence/${imageOf(volumeId)}`]).toMatchObject({
          state: 'fenced',
          clients,
        });
        expect(await blocklisted()).toEqual(expect.arrayContaining(clients));
        const published = await c.ControllerGetVolume({ volume_id: volumeId });
        expect(published.status?.published_node_ids).toEqual([]);
        await c.ControllerPublishVolume({ volume_id: volumeId, node_id: B, volume_capability: BLOCK });
        expect((await c.ControllerGetVolume({ volume_id: volumeId })).status?.published_node_ids).toEqual([B]);
        await c.ControllerUnpublishVolume({ volume_id: volumeId, node_id: B });
      } finally {
        await fresh.stop();
      }
      // A's plugin sees the fence at its next RPC and tears its stage down; the operator lifts the fence
      await nodeOps(a.plugin.csi).unpublish({ volumeId, publishContext: {} }, targetA);
      expect(mapperPids(a)).toEqual([]);
      await cli('unfence', A);
      expect(await blocklisted()).not.toEqual(expect.arrayContaining(clients));
    },
  );
});
