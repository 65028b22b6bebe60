// Passthrough vs a shared directory: the I/O a Kata pod gets from the raw device handed to its VM
// (what this driver does) against the same volume mounted on the host and shared into the VM over
// virtio-9p with qemu's and the kernel's defaults (what a VM runtime does with a host mount).
//
// One ext4 volume (a file on the host behind a loop device, with direct I/O so the host page cache
// does not serve the passthrough path). Inside the guest, randio (test/e2e/vm/randio.c) runs the same
// four patterns on a file on each path: sequential 1 MiB write (+fsync) and read, random 4 KiB
// reads and writes (+fsync), O_DIRECT where the filesystem takes it. Before each read the guest drops
// its page cache and, on the 9p path, the host drops the file's pages too (cold reads on both).
// The same patterns on the host's own mount are the raw baseline of this run.
import { mkdirSync, mkdtempSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { execa } from 'execa';
import { removeDirectVolume, writeDirectVolume } from '../src/node/kata.js';
import { PACKAGE_ROOT } from '../src/package-info.js';
import { bootGuest, parseRandio, runKataSandbox, type BenchLine, type GuestRun } from '../test/e2e/vm/guest.js';
import { report, round } from './report.js';

const RUNS = Number(process.env.BENCH_RUNS ?? 3);
const SEQ_MIB = Number(process.env.BENCH_SEQ_MIB ?? 64);
const RAND_OPS = Number(process.env.BENCH_RAND_OPS ?? 2000);
const BASE = process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube';
const TARGET = '/var/lib/kubelet/pods/bench/volumes/kubernetes.io~csi/pvc-bench/mount';
const MODES = ['seqwrite', 'seqread', 'randread', 'randwrite'] as const;
type Mode = (typeof MODES)[number];

/** MiB/s for sequential patterns, IOPS for random ones. */
const rate = (b: BenchLine) => (b.mode.startsWith('seq') ? b.bytes / 2 ** 20 : b.ops) / (b.ns / 1e9);
const median = (xs: number[]) => [...xs].sort((a, b) => a - b)[Math.floor(xs.length / 2)]!;

function collect(runs: BenchLine[][]): Record<Mode, { rate: number; direct: boolean }> {
  return Object.fromEntries(
    MODES.map((m) => {
      const lines = runs.map((r) => r.find((b) => b.mode === m)).filter((b): b is BenchLine => !!b);
      if (lines.length !== runs.length) throw new Error(`a run reported no ${m}`);
      return [m, { rate: median(lines.map(rate)), direct: lines.every((l) => l.direct) }];
    }),
  ) as Record<Mode, { rate: number; direct: boolean }>;
}

function guestOk(run: GuestRun, what: string): BenchLine[] {
  if (!run.done || run.failure) throw new Error(`${what}: the guest did not finish (${run.failure ?? 'no CSI-DONE'}):\n${run.console.slice(-15).join('\n')}`);
  return run.bench;
}

/** Drop the host's cached pages of one file (GNU dd: nocache with count=0 advises the whole file). */
const dropHostCache = (file: string) => execa('dd', [`if=${file}`, 'iflag=nocache', 'count=0'], { reject: false }).then(() => undefined);

async function main() {
  const dir = mkdtempSync(join(BASE, 'bench-passthrough-'));
  const img = join(dir, 'vol.img');
  const hostMount = join(dir, 'host-mount');
  let loop: string | undefined;
  let mounted = false;
  try {
    await execa('truncate', ['-s', `${Math.max(1024, SEQ_MIB * 4)}M`, img]);
    await execa('mkfs.ext4', ['-q', '-F', img]);
    loop = (await execa('losetup', ['--find', '--show', '--direct-io=on', img])).stdout.trim();

    const hostRandio = join(dir, 'randio');
    await execa('gcc', ['-static', '-O2', '-o', hostRandio, join(PACKAGE_ROOT, 'test/e2e/vm/randio.c')]);
    mkdirSync(hostMount);
    const mountHost = async () => {
      await execa('mount', ['-t', 'ext4', loop!, hostMount]);
      mounted = true;
    };
    const unmountHost = async () => {
      await execa('umount', [hostMount]);
      mounted = false;
    };

    // raw: the patterns on the host's own mount of the volume
    const raw: BenchLine[][] = [];
    await mountHost();
    for (let i = 0; i < RUNS; i++) {
      const lines: BenchLine[] = [];
      const file = join(hostMount, 'bench.bin');
      for (const m of MODES) {
        if (m === 'seqread' || m === 'randread') await dropHostCache(file);
        const { stdout } = await execa(hostRandio, [m, file, String(SEQ_MIB), ...(m.startsWith('rand') ? [String(RAND_OPS)] : [])]);
        lines.push(parseRandio(stdout));
      }
      rmSync(file, { force: true });
      raw.push(lines);
    }

    // 9p: the host mount shared into the VM (defaults: -virtfs local,security_model=none; no msize option)
    const shared: BenchLine[][] = [];
    let mountLine = '';
    let accel = '';
    for (let i = 0; i < RUNS; i++) {
      const run = await bootGuest({
        share: { path: hostMount, tag: 'vol' },
        args: { 'csi.9p': 'vol', 'csi.bench': `${SEQ_MIB}:${RAND_OPS}`, 'csi.sync': '1' },
        onSync: () => dropHostCache(join(hostMount, 'bench.bin')),
      });
      shared.push(guestOk(run, '9p'));
      mountLine = run.mount ?? '';
      accel = run.accel;
    }
    await unmountHost();

    // passthrough: the driver's direct-volume file → the device as virtio-blk, mounted in the VM
    const root = join(dir, 'direct-volumes');
    await writeDirectVolume(root, TARGET, { device: loop, fsType: 'ext4', readonly: false });
    const passthrough: BenchLine[][] = [];
    for (let i = 0; i < RUNS; i++) passthrough.push(guestOk(await runKataSandbox(root, TARGET, { bench: { mib: SEQ_MIB, ops: RAND_OPS } }), 'passthrough'));
    await removeDirectVolume(root, TARGET);

    const r = { raw: collect(raw), ninep: collect(shared), passthrough: collect(passthrough) };
    const unit = (m: Mode) => (m.startsWith('seq') ? 'MiB/s' : 'IOPS');
    const results = {
      node: process.version,
      accel,
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
            host_raw: round(r.raw[m].rate, 1),
            passthrough_over_9p: round(r.passthrough[m].rate / r.ninep[m].rate, 2),
            o_direct: { passthrough: r.passthrough[m].direct, ninep: r.ninep[m].direct, host_raw: r.raw[m].direct },
          },
        ]),
      ),
    };
    report(
      'passthrough-io',
      results,
      MODES.map((m) => [`${m} (${unit(m)}): passthrough / 9p`, `${round(r.passthrough[m].rate, 1)} / ${round(r.ninep[m].rate, 1)}`, `×${round(r.passthrough[m].rate / r.ninep[m].rate, 2)}; host ${round(r.raw[m].rate, 1)}`]),
    );
  } finally {
    if (mounted) await execa('umount', [hostMount], { reject: false });
    if (loop) await execa('losetup', ['-d', loop], { reject: false });
    rmSync(dir, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
