import { spawn } from 'node:child_process';
import { mkdirSync, rmdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import type { AttachedVolume } from './cinder-volumes.js';
import { CEPH_CONF, CEPH_KEYRING } from './local-stack.js';

// What a node plugin does for one volume, done by hand: the baseline the stage benchmark and the
// demo put beside NodeStageVolume + NodePublishVolume.

/** The raw commands a node plugin runs for one volume, timed, and their undo (not timed). */
export async function rawStagePublish(
  v: AttachedVolume,
  base: string,
): Promise<{ ms: number; undo: () => Promise<void> }> {
  const pc = v.publishContext;
  const mp = join(base, `raw-fuse-${v.volumeId}`);
  const staging = join(base, `raw-staging-${v.volumeId}`);
  const target = join(base, `raw-target-${v.volumeId}`);
  mkdirSync(mp);
  mkdirSync(staging);
  const t0 = performance.now();
  const child = spawn('rbd-fuse', ['-f', '-c', CEPH_CONF, '-p', pc.rbdPool!, '-r', pc.rbdImage!, mp], {
    env: {
      ...process.env,
      CEPH_ARGS: `--id ${pc.rbdUser} --keyring ${CEPH_KEYRING} -m ${pc.rbdMonitors} --client_mount_timeout 30`,
    },
    detached: true,
    stdio: 'ignore',
  });
  child.unref();
  const file = join(mp, pc.rbdImage!);
  for (;;) {
    try {
      statSync(file);
      break;
    } catch {
      await sleep(5);
    }
  }
  const loop = (await execa('losetup', ['--find', '--show', '--direct-io=on', file])).stdout.trim();
  await execa('mkfs.ext4', ['-F', '-q', '-m0', '-E', 'nodiscard,lazy_itable_init=1,lazy_journal_init=1', loop]);
  await execa('mount', ['-t', 'ext4', loop, staging]);
  mkdirSync(target);
  await execa('mount', ['-o', 'bind', staging, target]);
  const elapsed = performance.now() - t0;
  return {
    ms: elapsed,
    undo: async () => {
      await execa('umount', [target]);
      await execa('umount', [staging]);
      await execa('losetup', ['-d', loop]);
      // the kernel lets go of a detached loop's file a moment later: "busy" until then (the mapper waits so too)
      for (let i = 1; ; i++) {
        const r = await execa('umount', [mp], { reject: false });
        if (r.exitCode === 0) break;
        if (i === 10 || !/busy/.test(r.stderr)) throw new Error(`umount ${mp}: ${r.stderr}`);
        await sleep(50 * i);
      }
      while (child.exitCode === null && child.signalCode === null) await sleep(5);
      for (const d of [target, staging, mp]) rmdirSync(d);
    },
  };
}
