// Passthrough vs a shared directory: the I/O a Kata pod gets from the raw device handed to its VM
// (what this driver does) against the same volume mounted on the host and shared into the VM over
// virtio-9p with qemu's and the kernel's defaults (what a VM runtime does with a host mount).
//
// One real volume: a Cinder volume on the local Ceph, staged by the node plugin (rbd-fuse + loop
// with direct I/O, ext4 made by the stage). Three paths to it, measured in the same run:
// - host: a filesystem-mode NodePublish, randio on the host mount (the raw baseline);
// - 9p: that host mount shared into a qemu VM (-virtfs local,security_model=none; default msize);
// - passthrough: a passthrough NodePublish, the VM booted from the mountInfo.json it wrote, the
//   device as virtio-blk (cache=none), ext4 mounted in the guest.
// randio (test/e2e/vm/randio.c) runs four patterns on a file: sequential 1 MiB write (+fsync) and
// read, random 4 KiB reads and writes (+fsync), O_DIRECT where the filesystem takes it. Before each
// read the guest drops its page cache and, on the host and 9p paths, the host drops the file's pages
// (cold reads everywhere). Under TCG (no hardware KVM here) every guest I/O also pays for emulation.
import { rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../src/package-info.js';
import { TestVolumes } from '../harness/cinder-volumes.js';
import { nodeDirs, nodeOps, startNodeDriver } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup } from '../harness/node-leaks.js';
import { bootGuest, parseRandio, runKataSandbox, type BenchLine, type GuestRun } from '../harness/vm/guest.js';
import { report, round } from './report.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SEQ_MIB = Number(process.env.BENCH_SEQ_MIB ?? 64);
const RAND_OPS = Number(process.env.BENCH_RAND_OPS ?? 2000);
const NODE = 'bench-kata';
const MODES = ['seqwrite', 'seqread', 'randread', 'randwrite'] as const;
type Mode = (typeof MODES)[number];
type Rates = Record<Mode, { rate: number; direct: boolean }>;

/** MiB/s for sequential patterns, IOPS for random ones. */
const rate = (b: BenchLine) => (b.mode.startsWith('seq') ? b.bytes / 2 ** 20 : b.ops) / (b.ns / 1e9);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;
const unit = (m: Mode) => (m.startsWith('seq') ? 'MiB/s' : 'IOPS');

function collect(runs: BenchLine[][]): Rates {
  return Object.fromEntries(
    MODES.map((m) => {
      const lines = runs.map((r) => r.find((b) => b.mode === m)).filter((b): b is BenchLine => !!b);
      if (lines.length !== runs.length) throw new Error(`a run reported no ${m}`);
      return [m, { rate: median(lines.map(rate)), direct: lines.every((l) => l.direct) }];
    }),
  ) as Rates;
}

function guestOk(run: GuestRun, what: string): BenchLine[] {
  if (!run.done || run.failure)
    throw new Error(
      `${what}: the guest did not finish (${run.failure ?? 'no CSI-DONE'}):\n${run.console.slice(-15).join('\n')}`,
    );
  return run.bench;
}

/** Drop the host's cached pages of one file (GNU dd: nocache with count=0 advises the whole file). */
const dropHostCache = (file: string) =>
  execa('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { reject: false }).then(() => undefined);

async function main() {
  const dirs = nodeDirs('bench-kata');
  const kataRoot = join(dirs.base, 'direct-volumes');
  const co = new CoPaths(dirs.kubeletRoot);
  const volumes = TestVolumes.open('bench-kata');
  const node = await startNodeDriver(dirs, { logLevel: 'warn', nodeId: NODE, kataDirectVolumeRoot: kataRoot });
  const ops = nodeOps(node.csi);
  const c = cap.mount('ext4');
  try {
    const v = await volumes.createAttached(NODE, 1);
    const staging = co.staging('pv-bench');
    const hostTarget = co.target('pod-runc', 'pv-bench');
    const vmTarget = co.target('pod-kata', 'pv-bench');
    await ops.stage(v, staging, c, { volume_context: { attachMode: 'auto' } });

    // host: a filesystem-mode publish, the patterns run by this host
    const hostRandio = join(dirs.base, 'randio');
    await execa('gcc', ['-static', '-O2', '-o', hostRandio, join(PACKAGE_ROOT, 'test/e2e/vm/randio.c')]);
    await ops.publish(v, staging, hostTarget, c, false, { volume_context: { attachMode: 'filesystem' } });
    const file = join(hostTarget, 'bench.bin');
    const host: BenchLine[][] = [];
    for (let i = 0; i < RUNS; i++) {
      const lines: BenchLine[] = [];
      for (const m of MODES) {
        if (m.endsWith('read')) await dropHostCache(file);
        lines.push(
          parseRandio(
            (await execa(hostRandio, [m, file, String(SEQ_MIB), ...(m.startsWith('rand') ? [String(RAND_OPS)] : [])]))
              .stdout,
          ),
        );
      }
      rmSync(file, { force: true });
      host.push(lines);
    }

    // 9p: the same host mount shared into the VM
    const shared: BenchLine[][] = [];
    let mountLine = '';
    let accel = '';
    for (let i = 0; i < RUNS; i++) {
      const run = await bootGuest({
        share: { path: hostTarget, tag: 'vol' },
        args: { 'csi.9p': 'vol', 'csi.bench': `${SEQ_MIB}:${RAND_OPS}`, 'csi.sync': '1' },
        onSync: () => dropHostCache(file),
      });
      shared.push(guestOk(run, '9p'));
      mountLine = run.mount ?? '';
      accel = run.accel;
    }
    await ops.unpublish(v, hostTarget);

    // passthrough: the driver's publish for a VM pod (the idle staging mount is released), the VM
    // booted from the mountInfo.json it wrote
    await ops.publish(v, staging, vmTarget, c, false, { volume_context: { attachMode: 'passthrough' } });
    const passthrough: BenchLine[][] = [];
    for (let i = 0; i < RUNS; i++)
      passthrough.push(
        guestOk(await runKataSandbox(kataRoot, vmTarget, { bench: { mib: SEQ_MIB, ops: RAND_OPS } }), 'passthrough'),
      );
    await ops.unpublish(v, vmTarget);
    await ops.unstage(v, staging);

    const r = { host: collect(host), ninep: collect(shared), passthrough: collect(passthrough) };
    const results = {
      node: process.version,
      accel,
      volume: 'Cinder 1 GiB on Ceph (rbd-fuse + loop, direct I/O), ext4',
      runs: RUNS,
      seq_mib: SEQ_MIB,
      rand_ops: RAND_OPS,
      // no msize option: the guest kernel's default (128 KiB in Linux 6.1), which /proc/mounts does not show
      ninep: { virtfs: 'local,security_model=none', guest_mount: mountLine },
      patterns: Object.fromEntries(
        MODES.map((m) => [
          m,
          {
            unit: unit(m),
            passthrough: round(r.passthrough[m].rate, 1),
            ninep: round(r.ninep[m].rate, 1),
            host: round(r.host[m].rate, 1),
            passthrough_over_9p: round(r.passthrough[m].rate / r.ninep[m].rate, 2),
            passthrough_over_host: round(r.passthrough[m].rate / r.host[m].rate, 2),
            o_direct: { passthrough: r.passthrough[m].direct, ninep: r.ninep[m].direct, host: r.host[m].direct },
          },
        ]),
      ),
    };
    report(
      'passthrough-io',
      results,
      MODES.map((m) => [
        `${m} (${unit(m)}): passthrough / 9p`,
        `${round(r.passthrough[m].rate, 1)} / ${round(r.ninep[m].rate, 1)}`,
        `×${round(r.passthrough[m].rate / r.ninep[m].rate, 2)}; host ${round(r.host[m].rate, 1)}`,
      ]),
    );
  } finally {
    await node.stop();
    co.release();
    forceCleanup(dirs.base);
    await volumes.cleanup();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
