import { existsSync, readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { directVolumeDir } from '../src/node/kata/direct-volume.js';
import { parseMountInfo } from '../src/node/host/mount-commands.js';
import { TestVolumes } from '../harness/cinder-volumes.js';

export interface DemoTraces {
  /** The demo's volumes: their snapshots are looked for too. */
  volumeIds: string[];
  /** The RBD image the node mapped (volume-<id>). */
  image: string;
  /** The kubelet paths the demo used (staging, targets). */
  kubeletDirs: string[];
  stateDir?: string;
  kataRoot: string;
}

const procs = () =>
  readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .flatMap((pid) => {
      try {
        return [{ pid, argv: readFileSync(`/proc/${pid}/cmdline`, 'utf8').split('\0').filter(Boolean) }];
      } catch {
        return [];
      }
    });

/**
 * What of the demo's volume is still anywhere: in Cinder (asked directly with tenant-a's credential:
 * the volumes, their attachments and snapshots; a deletion still in progress is waited for) and on
 * this node (stage record, mounts, loop devices, rbd-fuse daemons, Kata direct-volume files). []
 * when nothing is. Only the demo's own traces count: other volumes on a shared stack are not its business.
 */
export async function leftovers(t: DemoTraces): Promise<string[]> {
  const left: string[] = [];
  const cinder = TestVolumes.open('demo-check');
  try {
    for (const id of t.volumeIds) {
      const until = Date.now() + 60_000;
      let r = await cinder.cinder.call<{ volume: { status: string } }>('GET', `/volumes/${id}`, { expect: [200, 404] });
      while (r.status === 200 && r.body.volume.status === 'deleting' && Date.now() < until) {
        await sleep(250);
        r = await cinder.cinder.call('GET', `/volumes/${id}`, { expect: [200, 404] });
      }
      if (r.status === 200) left.push(`volume ${id} (${r.body.volume.status})`);
      const snaps = (
        await cinder.cinder.call<{ snapshots: { id: string; status: string }[] }>('GET', `/snapshots?volume_id=${id}`)
      ).body.snapshots;
      for (const s of snaps) left.push(`snapshot ${s.id} of ${id} (${s.status})`);
      const attachments = (
        await cinder.cinder.call<{ attachments: { id: string }[] }>('GET', `/attachments?volume_id=${id}`)
      ).body.attachments;
      for (const a of attachments) left.push(`attachment ${a.id} of ${id}`);
    }
  } finally {
    await cinder.cleanup();
  }
  if (t.stateDir)
    for (const id of t.volumeIds)
      if (existsSync(join(t.stateDir, 'volumes', `${id}.json`)))
        left.push(`stage record ${join(t.stateDir, 'volumes', `${id}.json`)}`);
  const mine = (s: string) =>
    (!!t.image && s.includes(t.image)) || t.kubeletDirs.some((d) => s === d || s.startsWith(`${d}/`));
  for (const m of parseMountInfo(readFileSync('/proc/self/mountinfo', 'utf8')))
    if (mine(m.mountpoint) || mine(m.source)) left.push(`mount at ${m.mountpoint}`);
  for (const n of readdirSync('/sys/block').filter((b) => b.startsWith('loop'))) {
    const file = join('/sys/block', n, 'loop', 'backing_file');
    if (existsSync(file) && mine(readFileSync(file, 'utf8').trim())) left.push(`loop device /dev/${n}`);
  }
  for (const p of procs())
    if (/rbd-(fuse|nbd)$/.test(p.argv[0] ?? '') && p.argv.some(mine)) left.push(`${p.argv[0]} process ${p.pid}`);
  for (const d of t.kubeletDirs) if (existsSync(d)) left.push(`directory ${d}`);
  for (const d of t.kubeletDirs)
    if (existsSync(directVolumeDir(t.kataRoot, d))) left.push(`Kata direct-volume file for ${d} under ${t.kataRoot}`);
  return left;
}
