import { parseDiffLine } from '../../../src/ceph/rbd.js';
import { DEFAULT_PAGE, extentPages, MAX_PAGE } from '../../../src/csi/controller/changed-blocks.js';

async function* from(extents: [number, number][]) {
  for (const [offset, length] of extents) yield { offset, length };
}
async function collect(extents: [number, number][], startingOffset = 0, maxResults = 0) {
  const out = [];
  for await (const p of extentPages(from(extents), 1000, { startingOffset, maxResults })) out.push(p);
  return out;
}
const flat = (pages: Awaited<ReturnType<typeof collect>>) =>
  pages.flatMap((p) => p.block_metadata.map((e) => [e.byte_offset, e.size_bytes]));

test('adjacent extents (one per RADOS object) are merged; gaps keep them apart', async () => {
  expect(
    flat(
      await collect([
        [0, 10],
        [10, 5],
        [20, 5],
        [25, 1],
      ]),
    ),
  ).toEqual([
    [0, 15],
    [20, 6],
  ]);
});

test('a starting offset drops what ends before it and cuts the extent it falls in', async () => {
  expect(
    flat(
      await collect(
        [
          [0, 10],
          [20, 10],
          [40, 5],
        ],
        25,
      ),
    ),
  ).toEqual([
    [25, 5],
    [40, 5],
  ]);
  expect(flat(await collect([[0, 10]], 10))).toEqual([]);
});

test('pages hold at most max_results; 0 lets the plugin choose; a huge ask is capped', async () => {
  const many = Array.from({ length: 10 }, (_, i) => [i * 10, 5] as [number, number]);
  expect((await collect(many, 0, 3)).map((p) => p.block_metadata.length)).toEqual([3, 3, 3, 1]);
  const lots = Array.from({ length: MAX_PAGE + DEFAULT_PAGE + 1 }, (_, i) => [i * 10, 5] as [number, number]);
  expect((await collect(lots)).map((p) => p.block_metadata.length)).toEqual([
    DEFAULT_PAGE,
    DEFAULT_PAGE,
    DEFAULT_PAGE,
    DEFAULT_PAGE,
    DEFAULT_PAGE,
    1,
  ]);
  expect((await collect(lots, 0, 1_000_000))[0]!.block_metadata).toHaveLength(MAX_PAGE);
});

test('nothing allocated or changed: one empty page, so the client learns the type and the capacity', async () => {
  expect(await collect([])).toEqual([
    { block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: 1000, block_metadata: [] },
  ]);
});

test("rbd diff's lines: data and zero extents; anything else is refused", () => {
  expect(parseDiffLine('536870912000  4096     data', 'rbd diff')).toEqual({ offset: 536870912000, length: 4096 });
  expect(parseDiffLine('0 4194304 zero', 'rbd diff')).toEqual({ offset: 0, length: 4194304 });
  for (const bad of ['0 0 data', '-1 5 data', 'x 5 data', '0 5 hole', '0 5 data extra', '1e400 5 data', ''])
    expect(() => parseDiffLine(bad, 'rbd diff')).toThrow(/not an extent/);
});
