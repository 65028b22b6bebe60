/**
 * Changed block tracking (issue 24) on deploy/local's real Cinder + Ceph, each beside the raw rbd command
 * run as the same read-only Ceph identity in the same run:
 *   1. GetMetadataDelta of a 10 GiB volume with 1 % changed (512 MiB written before snapshot A, then 400
 *      scattered 256 KiB rewrites of it before B) vs `rbd diff --from-snap A img@B`; the full read of B a backup
 *      would do without it (`rbd export img@B -`, discarded), for scale;
 *   2. GetMetadataAllocated of a 1 TiB thin volume with a few written ranges vs `rbd diff --whole-object`
 *      (what the driver runs) and the byte-exact `rbd diff` for scale.
 * Time, extents and bytes named, and peak RSS: of the rbd process (sampled from /proc) and the driver's
 * own growth (it runs in this process). Prints one JSON document on stdout and a table on stderr.
 */
import { readFile } from 'node:fs/promises';
import { execa } from 'execa';
import { directCinder, removeByPrefix, uniquePrefix } from '../harness/cinder.js';
import { startTestDriver } from '../harness/driver.js';
import { CEPH_CONF, CEPH_CONTROLLER_ID, STACK } from '../harness/local-stack.js';
import { imageOf, writeImage, type RbdWrite } from '../harness/rbd-image.js';
import { report, round } from './report.js';

const GiB = 1024 ** 3;
const MiB = 1024 ** 2;
const CAP = { block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } };
const RBD = ['-c', CEPH_CONF, '--id', CEPH_CONTROLLER_ID];

/** Peak RSS (MiB) of the rbd processes working on `image`, sampled every 10 ms while `work` runs. */
async function withPeakRss<T>(
  image: string,
  work: () => Promise<T>,
): Promise<{ value: T; ms: number; rbdMiB: number; selfMiB: number }> {
  let rbd = 0;
  let self = 0;
  const base = process.memoryUsage().rss;
  let sampling = true;
  const sampler = (async () => {
    while (sampling) {
      self = Math.max(self, process.memoryUsage().rss - base);
      const { stdout } = await execa('pgrep', ['-f', `rbd .*${image}`], { reject: false });
      for (const pid of stdout.split('\n').filter(Boolean)) {
        const status = await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
        const kb = Number(/VmRSS:\s+(\d+)/.exec(status)?.[1] ?? 0);
        rbd = Math.max(rbd, kb / 1024);
      }
      await new Promise((r) => setTimeout(r, 10));
    }
  })();
  const t0 = performance.now();
  try {
    const value = await work();
    return { value, ms: round(performance.now() - t0, 1), rbdMiB: round(rbd, 1), selfMiB: round(self / MiB, 1) };
  } finally {
    sampling = false;
    await sampler;
  }
}

interface Page {
  block_metadata: { byte_offset: number; size_bytes: number }[];
}
async function streamed(messages: AsyncIterable<Page>) {
  let extents = 0;
  let bytes = 0;
  for await (const p of messages) {
    extents += p.block_metadata.length;
    for (const e of p.block_metadata) bytes += e.size_bytes;
  }
  return { extents, bytes };
}

async function rawDiff(args: string[]) {
  const { stdout } = await execa('rbd', [...RBD, 'diff', ...args], { maxBuffer: 1 << 30 });
  const lines = stdout.split('\n').slice(1).filter(Boolean);
  return { extents: lines.length, bytes: lines.reduce((n, l) => n + Number(l.trim().split(/\s+/)[1]), 0) };
}

async function main() {
  const prefix = uniquePrefix('bench-cbt');
  const driver = await startTestDriver({
    mode: 'controller',
    logLevel: 'warn',
    options: { controllerCephConf: CEPH_CONF },
  });
  const { cinder, close } = await directCinder();
  const ctl = driver.client.Controller;
  const sm = driver.client.SnapshotMetadata;
  const pool = STACK.CEPH_POOL!;
  let n = 0;
  const create = async (bytes: number) =>
    (
      await ctl.CreateVolume({
        name: `${prefix}v${++n}`,
        capacity_range: { required_bytes: bytes },
        volume_capabilities: [CAP],
      })
    ).volume.volume_id as string;
  const snap = async (volumeId: string) =>
    (await ctl.CreateSnapshot({ name: `${prefix}s${++n}`, source_volume_id: volumeId })).snapshot.snapshot_id as string;
  try {
    // 1. a 10 GiB volume, 1 % changed between two snapshots
    const v = await create(10 * GiB);
    const image = imageOf(v);
    await writeImage(
      v,
      Array.from({ length: 64 }, (_, i) => ({ offset: i * 8 * MiB, length: 8 * MiB, byte: 0x30 + (i % 40) })),
    );
    const a = await snap(v);
    // 400 writes of 256 KiB (~1 % of 10 GiB) scattered over the data written before A, as a volume in use
    // rewrites its own data; each lands on a distinct 256 KiB slot (7919 is odd, so i·7919 mod 2048 never repeats)
    const changes: RbdWrite[] = Array.from({ length: 400 }, (_, i) => ({
      offset: ((i * 7919) % 2048) * 256 * 1024,
      length: 256 * 1024,
      byte: 0x61 + (i % 26),
    }));
    await writeImage(v, changes);
    const b = await snap(v);
    const spec = `${pool}/${image}@snapshot-${b}`;
    // warm-up: a token, the snapshot list
    await streamed(sm.GetMetadataDelta({ base_snapshot_id: a, target_snapshot_id: b, max_results: 1 }).messages);
    const delta = await withPeakRss(image, () =>
      streamed(sm.GetMetadataDelta({ base_snapshot_id: a, target_snapshot_id: b }).messages),
    );
    const deltaRaw = await withPeakRss(image, () => rawDiff(['--from-snap', `snapshot-${a}`, spec]));
    const fullRead = await withPeakRss(image, () =>
      execa('rbd', [...RBD, 'export', '--no-progress', spec, '-'], { stdout: 'ignore' }).then(() => ({
        bytes: 10 * GiB,
      })),
    );

    // 2. a 1 TiB thin volume with a few written ranges
    const big = await create(1024 * GiB);
    const bigImage = imageOf(big);
    await writeImage(big, [
      { offset: 0, length: 4 * MiB, byte: 1 },
      { offset: 300 * GiB, length: 16 * MiB, byte: 2 },
      { offset: 1024 * GiB - MiB, length: MiB, byte: 3 },
    ]);
    const s = await snap(big);
    const bigSpec = `${pool}/${bigImage}@snapshot-${s}`;
    const alloc = await withPeakRss(bigImage, () => streamed(sm.GetMetadataAllocated({ snapshot_id: s }).messages));
    const allocRaw = await withPeakRss(bigImage, () => rawDiff(['--whole-object', bigSpec]));
    const allocExact = await withPeakRss(bigImage, () => rawDiff([bigSpec]));

    const results = {
      delta10GiB1pct: {
        changedBytesWritten: changes.length * 256 * 1024,
        driver: delta,
        rawRbdDiff: deltaRaw,
        fullRead,
      },
      allocated1TiB: { driver: alloc, rawWholeObject: allocRaw, rawExact: allocExact },
    };
    report('changed-blocks', results, [
      ['delta 10 GiB, 1 % changed: driver (ms)', delta.ms],
      ['  raw rbd diff --from-snap (ms)', deltaRaw.ms],
      ['  driver / raw', round(delta.ms / deltaRaw.ms, 2)],
      ['  extents, MiB named (driver)', `${delta.value.extents}, ${round(delta.value.bytes / MiB, 1)}`],
      ['  extents, MiB named (raw, per object)', `${deltaRaw.value.extents}, ${round(deltaRaw.value.bytes / MiB, 1)}`],
      ['  peak RSS rbd / driver growth (MiB)', `${delta.rbdMiB} / ${delta.selfMiB}`],
      ['  raw rbd peak RSS (MiB)', deltaRaw.rbdMiB],
      ['  full read of B, for scale (ms)', fullRead.ms],
      ['allocated 1 TiB thin: driver (ms)', alloc.ms],
      ['  raw rbd diff --whole-object (ms)', allocRaw.ms],
      ['  driver / raw', round(alloc.ms / allocRaw.ms, 2)],
      ['  byte-exact rbd diff, for scale (ms)', allocExact.ms],
      ['  extents, MiB named (driver)', `${alloc.value.extents}, ${round(alloc.value.bytes / MiB, 1)}`],
      ['  peak RSS rbd / driver growth (MiB)', `${alloc.rbdMiB} / ${alloc.selfMiB}`],
    ]);
  } finally {
    await removeByPrefix(cinder, prefix, 300_000);
    await close();
    await driver.stop();
  }
}

await main();
