import { randomBytes } from 'node:crypto';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

const suite = nodeSuite('node-rst');
const { dirs, co } = suite;

/** The session id of a process (field 6 of /proc/<pid>/stat). */
const sessionOf = (pid: number | string) => readFileSync(`/proc/${pid}/stat`, 'utf8').split(') ')[1]!.split(' ')[3];

test('volumes staged before a restart are published, unpublished and unstaged by the new plugin', async () => {
  const ops = () => suite.ops;
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-r');
  const t1 = co.target('pod-r1', 'pv-r');
  const t2 = co.target('pod-r2', 'pv-r');
  const c = cap.mount('ext4', 'SINGLE_NODE_MULTI_WRITER');
  await ops().stage(v, staging, c);
  await ops().publish(v, staging, t1, c);
  const payload = randomBytes(256 * 1024);
  writeFileSync(join(t1, 'data'), payload);

  const record = JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${v.volumeId}.json`), 'utf8')) as {
    mapping: { pid: number };
  };
  // rbd-fuse runs in a session of its own: the plugin's exit cannot take it down
  expect(sessionOf(record.mapping.pid)).not.toBe(sessionOf('self'));

  await suite.restart();
  expect(suite.node.logs.join('\n')).toMatch(/volumes staged before this start/);
  expect((await ops().stats(v, t1)).volume_condition).toMatchObject({ abnormal: false });
  await ops().stage(v, staging, c); // the CO re-sends it: still OK
  await ops().publish(v, staging, t1, c);
  await ops().publish(v, staging, t2, c);
  expect(readFileSync(join(t2, 'data')).equals(payload)).toBe(true);
  await ops().unpublish(v, t1);

  await suite.restart();
  await ops().unpublish(v, t2);
  await ops().unstage(v, staging);
});

/**
 * A block volume staged, then its record put back to what it says when the plugin dies between
 * starting the map and finishing it (rbd-fuse and the loop device exist, the record does not
 * know them), then a restart.
 */
async function stageCutShort(pv: string) {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging(pv);
  await suite.ops.stage(v, staging, cap.block());
  const file = join(dirs.stateDir, 'volumes', `${v.volumeId}.json`);
  const record = JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  writeFileSync(file, JSON.stringify({ ...record, phase: 'mapping', mapping: undefined }));
  await suite.restart();
  return { v, staging };
}

test('a stage cut short (the plugin died before it finished) is redone by the next NodeStageVolume', async () => {
  const { v, staging } = await stageCutShort('pv-cut');
  expect((await suite.ops.stats(v, staging)).volume_condition).toMatchObject({
    abnormal: true,
    message: expect.stringMatching(/never finished/),
  });
  await suite.ops.stage(v, staging, cap.block());
  expect((await suite.ops.stats(v, staging)).volume_condition).toMatchObject({ abnormal: false });
  await suite.ops.unstage(v, staging);
});

test('unstage of a stage cut short cleans up what it left (rbd-fuse, loop) from the volume key alone', async () => {
  const { v, staging } = await stageCutShort('pv-cut2');
  await suite.ops.unstage(v, staging);
});
