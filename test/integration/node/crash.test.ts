import { randomBytes } from 'node:crypto';
import { closeSync, fsyncSync, openSync, readdirSync, readFileSync, writeFileSync, writeSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { FORMAT_INTENTS_OBJECT } from '../../../src/node/ceph/format-intents.js';
import { TestVolumes } from '../../../harness/cinder-volumes.js';
import { nodeDirs, nodeOps } from '../../../harness/node-driver.js';
import { CEPH_CONF } from '../../../harness/local-stack.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../../../harness/node-leaks.js';
import { startPluginProcess, type PluginProcess } from '../../helpers/plugin-process.js';

/**
 * The node plugin SIGKILLed (with the mkfs or mount it was running) at each named point inside
 * NodeStage, NodeUnstage, NodePublish and NodeUnpublish — before, during and after mkfs, mount and bind —
 * then started again: the repeated RPC converges, data written before the kill is intact, and after the
 * unstage nothing is left (mounts, loop devices, rbd-fuse processes, records, keyrings, format intents).
 */
const dirs = nodeDirs('node-crash');
const co = new CoPaths(dirs.kubeletRoot);
let volumes: TestVolumes;
let plugin: PluginProcess | undefined;

beforeAll(() => {
  volumes = TestVolumes.open('node-crash');
});
afterEach(async () => {
  await plugin?.stop();
  plugin = undefined;
  expect([...co.release(), ...nodeLeaks(dirs)]).toEqual([]);
});
afterAll(async () => {
  forceCleanup(dirs.base);
  await volumes?.cleanup();
});

/** A plugin armed at `failpoint`; `rpc` is expected to kill it there. Then a clean plugin. */
async function killedDuring(
  failpoint: string,
  rpc: (ops: ReturnType<typeof nodeOps>) => Promise<unknown>,
): Promise<ReturnType<typeof nodeOps>> {
  plugin = await startPluginProcess(dirs, failpoint);
  const outcome = await rpc(nodeOps(plugin.csi)).then(
    () => 'answered',
    (e: { code: number }) => e.code,
  );
  const how = await plugin.ended;
  plugin.csi.close();
  expect({ failpoint, how }).toEqual({ failpoint, how: 'SIGKILL' });
  expect(outcome).not.toBe('answered');
  plugin = await startPluginProcess(dirs);
  return nodeOps(plugin.csi);
}

const MOUNT = cap.mount('ext4');

/** Whether the running plugin's log comes to say this (its lines are written asynchronously). */
async function logSays(re: RegExp): Promise<boolean> {
  for (let i = 0; i < 250 && !re.test(plugin!.logs()); i++) await sleep(20);
  return re.test(plugin!.logs());
}

/** Stage and publish the volume again: the data written before is there; then take it down again. */
async function expectDataAfterRestage(
  ops: ReturnType<typeof nodeOps>,
  at: { v: Awaited<ReturnType<TestVolumes['createAttached']>>; staging: string; target: string },
  payload: Buffer,
): Promise<void> {
  await ops.stage(at.v, at.staging, MOUNT);
  await ops.publish(at.v, at.staging, at.target, MOUNT);
  expect(readFileSync(join(at.target, 'data')).equals(payload)).toBe(true);
  await ops.unpublish(at.v, at.target);
  await ops.unstage(at.v, at.staging);
}

/** A volume attached to the node and staged by a clean plugin process (and published, unless told not to). */
async function stagedVolume(name: string, publish = true) {
  const v = await volumes.createAttached('node-test');
  const staging = co.staging(`pv-${name}`);
  const target = co.target(`pod-${name}`, `pv-${name}`);
  plugin = await startPluginProcess(dirs);
  const ops = nodeOps(plugin.csi);
  await ops.stage(v, staging, MOUNT);
  if (publish) await ops.publish(v, staging, target, MOUNT);
  return { v, staging, target, ops };
}

describe.each([
  'state:written=kill', // the first atomic write (the record before the map) cut before its rename: a .tmp the restart sweeps
  'stage:recorded=kill',
  'stage:mapped=kill',
  'format:begun=kill',
  // mkfs running: it takes ~20 ms on a 1 GiB volume here, mount and records ~20 ms more (a later kill finds the
  // stage done)
  'format:begun=kill-in-5',
  'format:begun=kill-in-15',
  'format:done=kill',
  'stage:mounted=kill',
])('NodeStageVolume of a new blank volume killed at %s', (failpoint) => {
  test('the next NodeStageVolume converges; the filesystem works and keeps data', async () => {
    const v = await volumes.createAttached('node-test');
    const staging = co.staging('pv-crash');
    const target = co.target('pod-crash', 'pv-crash');
    let ops = await killedDuring(failpoint, (o) => o.stage(v, staging, MOUNT));
    expect(readdirSync(join(dirs.stateDir, 'volumes')).filter((f) => f.endsWith('.tmp'))).toEqual([]); // swept at the restart
    if (failpoint.startsWith('state:written'))
      await expect(logSays(/"interrupted write [^"]*\.tmp"/)).resolves.toBe(true);
    await ops.stage(v, staging, MOUNT);
    await ops.publish(v, staging, target, MOUNT);
    const payload = randomBytes(128 * 1024);
    writeFileSync(join(target, 'data'), payload);
    await ops.unpublish(v, target);
    await ops.unstage(v, staging);
    // a fresh plugin and a fresh stage: the data is there, nothing was reformatted
    await plugin!.stop();
    plugin = await startPluginProcess(dirs);
    ops = nodeOps(plugin.csi);
    await expectDataAfterRestage(ops, { v, staging, target }, payload);
  }, 120_000);
});

describe.each(['unstage:unmounted=kill', 'unstage:unmapped=kill'])('NodeUnstageVolume killed at %s', (failpoint) => {
  test('the next NodeUnstageVolume finishes; the data survives a new stage', async () => {
    const { v, staging, target, ...first } = await stagedVolume('crash-u');
    let ops = first.ops;
    const payload = randomBytes(64 * 1024);
    writeFileSync(join(target, 'data'), payload);
    await ops.unpublish(v, target);
    await plugin!.stop();
    ops = await killedDuring(failpoint, (o) => o.unstage(v, staging));
    await ops.unstage(v, staging);
    await expectDataAfterRestage(ops, { v, staging, target }, payload);
  }, 120_000);
});

describe.each([
  ['NodePublishVolume', 'publish:recorded=kill'],
  ['NodePublishVolume', 'publish:mounted=kill'],
  ['NodeUnpublishVolume', 'unpublish:unmounted=kill'],
])('%s killed at %s', (rpc, failpoint) => {
  test('the repeated call converges; the data is intact', async () => {
    const { v, staging, target, ...first } = await stagedVolume('crash-p', false);
    let ops = first.ops;
    const payload = randomBytes(64 * 1024);
    if (rpc === 'NodeUnpublishVolume') {
      await ops.publish(v, staging, target, MOUNT);
      writeFileSync(join(target, 'data'), payload);
      await plugin!.stop();
      ops = await killedDuring(failpoint, (o) => o.unpublish(v, target));
      await ops.unpublish(v, target);
      await ops.publish(v, staging, target, MOUNT);
    } else {
      await plugin!.stop();
      ops = await killedDuring(failpoint, (o) => o.publish(v, staging, target, MOUNT));
      await ops.publish(v, staging, target, MOUNT);
      writeFileSync(join(target, 'data'), payload);
    }
    expect(readFileSync(join(target, 'data')).equals(payload)).toBe(true);
    await ops.unpublish(v, target);
    await ops.unstage(v, staging);
  }, 120_000);
});

describe('a format cut short (its intent stands in the pool): the next stage finishes it', () => {
  /** Killed before mkfs; then what an mkfs in progress leaves on the device, written through the mapping. */
  async function cutShort(leaves: 'some blocks' | 'a whole filesystem') {
    const v = await volumes.createAttached('node-test');
    const staging = co.staging('pv-half');
    const target = co.target('pod-half', 'pv-half');
    const ops = await killedDuring('format:begun=kill', (o) => o.stage(v, staging, MOUNT));
    // rbd-fuse and the loop device outlived the plugin (own session): write through the device the record names
    const record = JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${v.volumeId}.json`), 'utf8')) as {
      mapping: { device: string };
    };
    if (leaves === 'a whole filesystem') await execa('mkfs.ext4', ['-F', '-q', record.mapping.device]);
    else {
      const fd = openSync(record.mapping.device, 'r+');
      writeSync(fd, randomBytes(8192), 0, 8192, 4096);
      fsyncSync(fd);
      closeSync(fd);
    }
    expect(await intentOf(v)).toMatch(/"fsType":"ext4"/);
    return { v, staging, target, ops };
  }

  test.each([
    ['blocks but no filesystem signature yet', 'some blocks' as const],
    ['a superblock blkid knows (half a filesystem is never mounted)', 'a whole filesystem' as const],
  ])(
    'the device holds %s',
    async (_what, leaves) => {
      const { v, staging, target, ops } = await cutShort(leaves);
      await ops.stage(v, staging, MOUNT);
      expect(plugin!.logs()).toMatch(/finishing a format that was begun and cut short/);
      expect(await intentOf(v)).toBeUndefined();
      await ops.publish(v, staging, target, MOUNT);
      writeFileSync(join(target, 'data'), 'ok');
      await ops.unpublish(v, target);
      await ops.unstage(v, staging);
    },
    120_000,
  );

  test("a raw block stage gives the format up: the device is its user's from then on", async () => {
    const { v, staging, ops } = await cutShort('some blocks');
    // the kill left a filesystem stage half done: undone first, then staged for raw block access
    await ops.unstage(v, staging);
    await ops.stage(v, staging, cap.block());
    expect(await intentOf(v)).toBeUndefined();
    expect(plugin!.logs()).toMatch(/a format of this volume was begun and cut short; it is given up/);
    await ops.unstage(v, staging);
  }, 120_000);

  test("a stage that reports done leaves no intent: the filesystem is the tenant's from then on", async () => {
    const { v, staging, target, ops } = await stagedVolume('intent');
    expect(await intentOf(v)).toBeUndefined();
    writeFileSync(join(target, 'data'), 'tenant data');
    await ops.unpublish(v, target);
    await ops.unstage(v, staging);
    await ops.stage(v, staging, MOUNT);
    await ops.publish(v, staging, target, MOUNT);
    expect(readFileSync(join(target, 'data'), 'utf8')).toBe('tenant data');
    await ops.unpublish(v, target);
    await ops.unstage(v, staging);
  }, 120_000);
});

/** The format intent the pool holds for the volume's image, as read by Ceph's own tool. */
async function intentOf(v: { publishContext: Record<string, string> }): Promise<string | undefined> {
  const pc = v.publishContext;
  const r = await execa(
    'rados',
    ['-c', CEPH_CONF, '--id', 'cinder', '-p', pc.rbdPool!, 'getomapval', FORMAT_INTENTS_OBJECT, pc.rbdImage!, '-'],
    { reject: false },
  );
  return r.exitCode === 0 ? r.stdout : undefined;
}
