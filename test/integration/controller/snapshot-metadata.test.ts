// Changed block tracking (issue 24): the SnapshotMetadata service on the real Keystone + Cinder + Ceph.
// Restoring the base snapshot's bytes and then only the extents GetMetadataDelta names must rebuild the
// target exactly; tenants see only their own snapshots, and nothing reaches Ceph before Cinder said so.
import { createHash } from 'node:crypto';
import { createReadStream } from 'node:fs';
import { open, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import { execa } from 'execa';
import { expectCode, until } from '../../helpers/csi-client.js';
import { CEPH_CONF, localSecret, scratchDir, STACK } from '../../../harness/local-stack.js';
import { exportSnapshot, imageOf, writeImage, type RbdWrite } from '../../../harness/rbd-image.js';
import { controllerEnv, GiB } from './fixtures.js';

const MiB = 1024 ** 2;
const cephCommands: string[][] = [];
const env = controllerEnv('cbt', {
  options: { controllerCephConf: CEPH_CONF },
  hooks: { onCephCommand: (args) => cephCommands.push(args) },
});
const scratch = scratchDir('cbt');
afterAll(() => rm(scratch, { recursive: true, force: true }));

interface Extent {
  byte_offset: number;
  size_bytes: number;
}
interface Page {
  block_metadata_type: string;
  volume_capacity_bytes: number;
  block_metadata: Extent[];
}

const sm = () => env.driver.client.SnapshotMetadata;

/** Every message of one stream, or its error. */
async function read(stream: { messages: AsyncIterable<Page> }): Promise<Page[]> {
  const pages: Page[] = [];
  for await (const p of stream.messages) pages.push(p);
  return pages;
}
const extentsOf = (pages: Page[]) => pages.flatMap((p) => p.block_metadata).map((e) => ({ ...e }));
const delta = (req: object) => read(sm().GetMetadataDelta(req));
const allocated = (req: object) => read(sm().GetMetadataAllocated(req));
/** The error a stream ended with, naming the case when it is not the one expected. */
async function streamError(p: Promise<unknown>, code: number, what = ''): Promise<ServiceError> {
  return expectCode(p, code).catch((e: Error) => Promise.reject(new Error(`${what}: ${e.message}`)));
}

async function snapshot(volumeId: string): Promise<string> {
  return (await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: volumeId })).snapshot.snapshot_id;
}

const sha = async (file: string) => {
  const h = createHash('sha256');
  for await (const chunk of createReadStream(file)) h.update(chunk as Buffer);
  return h.digest('hex');
};
const covers = (extents: Extent[], from: number, length: number) =>
  extents.some((e) => e.byte_offset <= from && from + length <= e.byte_offset + e.size_bytes) ||
  // a range may span extents that meet
  extents
    .filter((e) => e.byte_offset < from + length && from < e.byte_offset + e.size_bytes)
    .reduce((n, e) => n + Math.min(from + length, e.byte_offset + e.size_bytes) - Math.max(from, e.byte_offset), 0) ===
    length;

function expectOrdered(extents: Extent[]) {
  for (const [i, e] of extents.entries()) {
    expect(e.size_bytes).toBeGreaterThan(0);
    if (i) expect(e.byte_offset).toBeGreaterThanOrEqual(extents[i - 1]!.byte_offset + extents[i - 1]!.size_bytes);
  }
}

describe('a volume with a known pattern, snapshot A, scattered writes, snapshot B', () => {
  let volumeId: string;
  let a: string;
  let b: string;
  const before: RbdWrite[] = [
    { offset: 0, length: 1 * MiB, byte: 0x41 },
    { offset: 100 * MiB, length: 8 * MiB, byte: 0x42 },
  ];
  const scattered: RbdWrite[] = [
    { offset: 4 * MiB + 4096, length: 512, byte: 0x61 }, // inside one RADOS object
    { offset: 8 * MiB - 1000, length: 3000, byte: 0x62 }, // across an object boundary
    { offset: GiB - 4096, length: 4096, byte: 0x63 }, // at the very end
    { offset: 300 * MiB + 12345, length: 7, byte: 0x64 }, // a few bytes in the middle of nothing
    { offset: 104 * MiB, length: 1 * MiB, discard: true }, // part of A's data discarded
  ];

  beforeAll(async () => {
    volumeId = (await env.create()).volume_id;
    await writeImage(volumeId, before);
    a = await snapshot(volumeId);
    await writeImage(volumeId, scattered);
    b = await snapshot(volumeId);
  });

  test("restore proves it: A's bytes plus the delta's extents copied from B are B, byte for byte", async () => {
    const pages = await delta({ base_snapshot_id: a, target_snapshot_id: b });
    for (const p of pages)
      expect(p).toMatchObject({ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: GiB });
    const extents = extentsOf(pages);
    expectOrdered(extents);
    for (const w of scattered) expect(covers(extents, w.offset, w.length)).toBe(true);
    // only what changed: byte-exact where the object was there in A, up to the end of what was written in a new
    // object (the two new objects at 4 MiB and at the end), the discarded MiB
    const total = extents.reduce((n, e) => n + e.size_bytes, 0);
    expect(total).toBeLessThan(10 * MiB);

    const fileA = join(scratch, 'a.raw');
    const fileB = join(scratch, 'b.raw');
    await exportSnapshot(volumeId, a, fileA);
    await exportSnapshot(volumeId, b, fileB);
    const shaB = await sha(fileB);
    expect(await sha(fileA)).not.toBe(shaB);
    const [from, to] = await Promise.all([open(fileB, 'r'), open(fileA, 'r+')]);
    try {
      for (const e of extents) {
        const buf = Buffer.alloc(e.size_bytes);
        await from.read(buf, 0, e.size_bytes, e.byte_offset);
        await to.write(buf, 0, e.size_bytes, e.byte_offset);
      }
    } finally {
      await from.close();
      await to.close();
    }
    expect(await sha(fileA)).toBe(shaB);
  });

  test('allocated: covers every written byte, omits the large unwritten ranges', async () => {
    const pages = await allocated({ snapshot_id: b });
    expect(pages[0]).toMatchObject({ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: GiB });
    const extents = extentsOf(pages);
    expectOrdered(extents);
    for (const w of [...before, ...scattered].filter((w) => !w.discard))
      expect(covers(extents, w.offset, w.length)).toBe(true);
    const total = extents.reduce((n, e) => n + e.size_bytes, 0);
    // whole 4 MiB objects: the two ranges of A and the four written ones, never the unwritten gigabyte
    expect(total).toBeLessThanOrEqual(32 * MiB);
  });

  test('paging: one stream, small pages, and a stream resumed from each page end all say the same', async () => {
    const whole = extentsOf(await delta({ base_snapshot_id: a, target_snapshot_id: b }));
    expect(whole.length).toBeGreaterThanOrEqual(4);
    const small = await delta({ base_snapshot_id: a, target_snapshot_id: b, max_results: 2 });
    expect(small.every((p) => p.block_metadata.length <= 2)).toBe(true);
    expect(extentsOf(small)).toEqual(whole);

    const resumed: Extent[] = [];
    let offset = 0;
    for (let i = 0; i < whole.length + 2; i++) {
      const stream = sm().GetMetadataDelta({
        base_snapshot_id: a,
        target_snapshot_id: b,
        starting_offset: offset,
        max_results: 1,
      });
      // the first page only, as a client that was cut off after it would have
      const first = (await stream.messages[Symbol.asyncIterator]().next()).value as Page;
      stream.cancel();
      const [e] = first.block_metadata;
      if (!e) break;
      resumed.push(e);
      offset = e.byte_offset + e.size_bytes;
      if (offset >= GiB) break;
    }
    expect(resumed).toEqual(whole);

    // an offset inside an extent: the stream starts exactly there
    const mid = whole[1]!;
    const cut = extentsOf(
      await delta({ base_snapshot_id: a, target_snapshot_id: b, starting_offset: mid.byte_offset + 1 }),
    );
    expect(cut[0]).toEqual({ byte_offset: mid.byte_offset + 1, size_bytes: mid.size_bytes - 1 });
    expect(cut.slice(1)).toEqual(whole.slice(2));
  });

  test('errors: each its code, and nothing reaches Ceph before Cinder says the tenant sees both', async () => {
    const other = await env.create();
    const otherSnap = await snapshot(other.volume_id);
    const gone = await snapshot(volumeId);
    await env.ctl.DeleteSnapshot({ snapshot_id: gone });
    const tenantB = localSecret('tenant-b');
    cephCommands.length = 0;

    const cases: [string, () => Promise<unknown>, number][] = [
      [
        "another tenant's snapshots",
        () => delta({ base_snapshot_id: a, target_snapshot_id: b, secrets: tenantB }),
        status.NOT_FOUND,
      ],
      ["another tenant's snapshot", () => allocated({ snapshot_id: b, secrets: tenantB }), status.NOT_FOUND],
      ['a deleted snapshot', () => allocated({ snapshot_id: gone }), status.NOT_FOUND],
      ['a deleted base', () => delta({ base_snapshot_id: gone, target_snapshot_id: b }), status.NOT_FOUND],
      ['no snapshot id', () => allocated({}), status.INVALID_ARGUMENT],
      ['no target', () => delta({ base_snapshot_id: a }), status.INVALID_ARGUMENT],
      [
        'snapshots of two volumes',
        () => delta({ base_snapshot_id: a, target_snapshot_id: otherSnap }),
        status.INVALID_ARGUMENT,
      ],
      ['a negative offset', () => allocated({ snapshot_id: b, starting_offset: -1 }), status.INVALID_ARGUMENT],
      ['a negative page size', () => allocated({ snapshot_id: b, max_results: -5 }), status.INVALID_ARGUMENT],
      ['an id with a NUL', () => allocated({ snapshot_id: 'a\0b' }), status.INVALID_ARGUMENT],
      ['an offset at the end', () => allocated({ snapshot_id: b, starting_offset: GiB }), status.OUT_OF_RANGE],
    ];
    for (const [what, call, code] of cases) {
      const err = await streamError(call(), code, what);
      expect(err.details.length).toBeLessThan(400);
    }
    expect(cephCommands).toEqual([]);

    // these read the snapshot list of the image first: known only once Ceph has answered
    await streamError(delta({ base_snapshot_id: b, target_snapshot_id: a }), status.INVALID_ARGUMENT);
    await streamError(delta({ base_snapshot_id: b, target_snapshot_id: b }), status.INVALID_ARGUMENT);
    const past = await streamError(
      delta({ base_snapshot_id: a, target_snapshot_id: b, starting_offset: GiB }),
      status.OUT_OF_RANGE,
    );
    expect(past.details).toContain(String(GiB));
    await streamError(
      delta({ base_snapshot_id: a, target_snapshot_id: b, starting_offset: 5 * GiB }),
      status.OUT_OF_RANGE,
    );
    // snapshot listings only: no diff ran for a refused request
    expect(cephCommands.filter((c) => c[0] === 'diff')).toEqual([]);
  });

  test('a Cinder snapshot with no RBD snapshot behind it → FAILED_PRECONDITION (take a full backup)', async () => {
    const c = await snapshot(volumeId);
    const image = `${STACK.CEPH_POOL}/${imageOf(volumeId)}`;
    // Cinder protects its RBD snapshots: renamed away for the test, and back so Cinder can delete it
    const rename = (from: string, to: string) =>
      execa('rbd', ['-c', CEPH_CONF, '--id', 'cinder', 'snap', 'rename', `${image}@${from}`, `${image}@${to}`]);
    await rename(`snapshot-${c}`, `moved-${c}`);
    try {
      for (const call of [
        () => allocated({ snapshot_id: c }),
        () => delta({ base_snapshot_id: a, target_snapshot_id: c }),
      ]) {
        const err = await streamError(call(), status.FAILED_PRECONDITION);
        expect(err.details).toMatch(/not an RBD snapshot.*full backup/);
      }
    } finally {
      await rename(`moved-${c}`, `snapshot-${c}`);
    }
  });
});

test('a client that cancels mid-stream leaves no rbd process behind', async () => {
  // a large thin volume: rbd diff asks each of its 51,200 objects, so it is still running when the client goes
  const big = await env.create({ capacity_range: { required_bytes: 200 * GiB } });
  const a = await snapshot(big.volume_id);
  await writeImage(big.volume_id, [{ offset: 0, length: 4096, byte: 1 }]);
  const b = await snapshot(big.volume_id);
  const rbdOf = async () =>
    (await execa('pgrep', ['-f', `diff.*${imageOf(big.volume_id)}`], { reject: false })).stdout
      .split('\n')
      .filter(Boolean);

  const stream = sm().GetMetadataDelta({ base_snapshot_id: a, target_snapshot_id: b });
  const running = await until(rbdOf, (pids) => pids.length > 0);
  expect(running.length).toBeGreaterThan(0);
  stream.cancel();
  await expectCode(read(stream), status.CANCELLED);
  expect(await until(rbdOf, (pids) => pids.length === 0)).toEqual([]);
  // logged and counted as the client's cancel, not as a failure of the driver's (the line comes once the server
  // has seen the cancel, which on a loaded machine may be after rbd is gone)
  const cancelled = () =>
    env.driver.logs.lines().filter((l) => l.rpc === 'GetMetadataDelta' && l.volumeId === b && l.code === 'CANCELLED');
  expect(
    await until(
      async () => cancelled(),
      (lines) => lines.length > 0,
    ),
  ).toContainEqual(expect.objectContaining({ code: 'CANCELLED' }));
  // and the driver goes on serving
  expect((await read(sm().GetMetadataAllocated({ snapshot_id: a })))[0]!.volume_capacity_bytes).toBe(200 * GiB);
});

test('the plugin says it serves SnapshotMetadata', async () => {
  const caps = await env.driver.client.Identity.GetPluginCapabilities({});
  expect(caps.capabilities).toContainEqual(expect.objectContaining({ service: { type: 'SNAPSHOT_METADATA_SERVICE' } }));
});
