import { existsSync, readdirSync, readFileSync, rmdirSync, rmSync } from 'node:fs';
import { dirname, join } from 'node:path';
import type { CsiClient } from '../src/client/csi-client.js';
import { TestVolumes } from '../harness/cinder-volumes.js';
import { LOCAL } from '../harness/local-stack.js';
import { forceCleanup, kubeletLayout } from '../harness/node-leaks.js';
import { DEMO_NAME, demoNames, RUNS_DIR } from './story.js';

interface CinderVolume {
  id: string;
  name: string | null;
  snapshot_id: string | null;
}

/** rmdir `dir` and its parents below `root` while they are empty; never deletes into anything. */
function removeEmptyUp(dir: string, root: string): void {
  for (let d = dir; d.startsWith(`${root}/`); d = dirname(d)) {
    try {
      rmdirSync(d);
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ENOENT') return; // not empty: something else lives there
    }
  }
}

/** Whether the run of that name is still going: its pid file names a live demo process. */
function running(run: string): boolean {
  try {
    const pid = Number(readFileSync(join(RUNS_DIR, run), 'utf8'));
    return pid !== process.pid && readFileSync(`/proc/${pid}/cmdline`, 'utf8').includes('demo');
  } catch {
    return false; // no pid file, or its process is gone
  }
}

/**
 * What earlier demo runs left when they could not clean up (killed, or a second Ctrl-C): their node
 * state (targets, staging, the hand-made raw mapping), attachments, snapshots and volumes, found by
 * the demo's names in tenant-a's project and taken down as a CO would, through the driver. Returns
 * the runs swept. Touches nothing not named demo-<6 hex>, nor a run whose demo is still going.
 */
export async function sweepEarlierRuns(
  csi: CsiClient,
  kubeletRoot: string,
  nodeId: string,
  secrets: Record<string, string>,
): Promise<string[]> {
  // the raw baseline's rbd-fuse, loop and mounts live in scratch dirs of their own
  const scratch = join(LOCAL, 'test-scratch');
  for (const d of existsSync(scratch) ? readdirSync(scratch).filter((n) => n.startsWith('demo-raw-')) : [])
    forceCleanup(join(scratch, d));

  const cinder = TestVolumes.open('demo-sweep');
  try {
    const named = new RegExp(`^(${DEMO_NAME.source})(-clone|-raw-.*)?$`);
    // a demo running beside this one is not swept: only runs whose process is gone
    const ours = (await cinder.cinder.call<{ volumes: CinderVolume[] }>('GET', '/volumes/detail')).body.volumes.filter(
      (v) => named.test(v.name ?? '') && !running(named.exec(v.name!)![1]!),
    );
    const runs = [...new Set(ours.map((v) => named.exec(v.name!)![1]!))];
    for (const run of runs) {
      const n = demoNames(run);
      const staging = kubeletLayout.staging(kubeletRoot, n.pv);
      const targetDirs = [
        kubeletLayout.targetDir(kubeletRoot, n.kataPod, n.pv),
        kubeletLayout.targetDir(kubeletRoot, n.runcPod, n.pv),
      ];
      const volume = ours.find((v) => v.name === run);
      if (volume) {
        for (const d of targetDirs)
          await csi.Node.NodeUnpublishVolume({ volume_id: volume.id, target_path: join(d, 'mount') });
        await csi.Node.NodeUnstageVolume({ volume_id: volume.id, staging_target_path: staging });
        await csi.Controller.ControllerUnpublishVolume({ volume_id: volume.id, node_id: nodeId, secrets });
      }
      for (const d of [...targetDirs, staging]) removeEmptyUp(d, kubeletRoot);
      rmSync(join(RUNS_DIR, run), { force: true });
    }
    // clones before the snapshots they come from (RBD keeps a parent snapshot busy), snapshots before their volumes
    for (const v of ours.filter((x) => x.snapshot_id)) await cinder.removeFound(v.id);
    for (const v of ours) {
      const snapshots = (
        await cinder.cinder.call<{ snapshots: { id: string }[] }>('GET', `/snapshots?volume_id=${v.id}`)
      ).body.snapshots;
      for (const s of snapshots) await cinder.removeSnapshot(s.id);
    }
    for (const v of ours.filter((x) => !x.snapshot_id)) await cinder.removeFound(v.id);
    return runs;
  } finally {
    await cinder.cleanup();
  }
}
