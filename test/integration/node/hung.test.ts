import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

/**
 * A hung device (its rbd-fuse stopped with SIGSTOP: every read of it waits for ever) must cost the calls
 * about it a timeout and nothing more: more stats calls of it than libuv has I/O threads, and meanwhile
 * Probe, a whole lifecycle of another volume and a stats of it answer in time; the hung one's stats say
 * what is wrong; and once the device answers again it unpublishes and unstages as usual.
 */
const suite = nodeSuite('node-hung');
const { dirs, co } = suite;
const recordOf = (volumeId: string) =>
  JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${volumeId}.json`), 'utf8')) as { mapping: { pid: number } };
const within = async <T>(ms: number, what: string, p: Promise<T>): Promise<T> => {
  const t0 = Date.now();
  const v = await p;
  expect({ what, ms: Date.now() - t0 < ms }).toEqual({ what, ms: true });
  return v;
};

test('a hung device blocks nothing but the calls about it, and those answer within their timeouts', async () => {
  const c = cap.mount('ext4');
  const hung = await suite.volumes.createAttached('node-test');
  const other = await suite.volumes.createAttached('node-test');
  const hs = co.staging('pv-hung');
  const ht = co.target('pod-hung', 'pv-hung');
  await suite.ops.stage(hung, hs, c);
  await suite.ops.publish(hung, hs, ht, c);
  const pid = recordOf(hung.volumeId).mapping.pid;
  process.kill(pid, 'SIGSTOP');
  try {
    // six at once: more than libuv's four I/O threads, which would all be stuck if the reads ran there
    const stats = Promise.all(Array.from({ length: 6 }, () => suite.ops.stats(hung, ht)));
    await within(5000, 'Probe', suite.node.csi.Identity.Probe({}));
    const os = co.staging('pv-ok');
    const ot = co.target('pod-ok', 'pv-ok');
    await within(30_000, 'stage of another volume', suite.ops.stage(other, os, c));
    await within(10_000, 'publish of another volume', suite.ops.publish(other, os, ot, c));
    expect(
      (await within(10_000, 'stats of another volume', suite.ops.stats(other, ot))).volume_condition.abnormal,
    ).toBe(false);
    await within(10_000, 'unpublish of another volume', suite.ops.unpublish(other, ot));
    await within(10_000, 'unstage of another volume', suite.ops.unstage(other, os));
    for (const s of await within(30_000, 'stats of the hung volume', stats))
      expect(s.volume_condition).toEqual({ abnormal: true, message: expect.stringMatching(/cannot be read/) });
  } finally {
    process.kill(pid, 'SIGCONT');
  }
  await suite.ops.unpublish(hung, ht);
  await suite.ops.unstage(hung, hs);
}, 180_000);
