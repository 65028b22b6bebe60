// ListVolumes over many volumes (BENCH_LIST_VOLUMES, 1,000 by default) against the raw Cinder list in the same
// run: every page of max_entries 100 and 500 (and all at once, max_entries 0) through the driver, beside
// GET /volumes/detail with the same metadata filter, page size and marker, one after the other (alternating
// which goes first). The volumes are made empty and thin through Cinder itself, tagged as the driver tags its
// own, and removed at the end. Prints one JSON line on stdout and a table on stderr.
import { setTimeout as sleep } from 'node:timers/promises';
import { META } from '../src/csi/controller/parameters.js';
import { directCinder, removeByPrefix, uniquePrefix } from '../harness/cinder.js';
import { startTestDriver } from '../harness/driver.js';
import { percentile, report, round } from './report.js';

const VOLUMES = Number(process.env.BENCH_LIST_VOLUMES ?? 1000);
const ROUNDS = Number(process.env.BENCH_ROUNDS ?? 9);
const AT_ONCE = 16;
const median = (xs: number[]) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    50,
  );

/** Run `fn` over 0..n-1, `AT_ONCE` at a time. */
async function inParallel(n: number, fn: (i: number) => Promise<unknown>): Promise<void> {
  let next = 0;
  await Promise.all(
    Array.from({ length: AT_ONCE }, async () => {
      while (next < n) await fn(next++);
    }),
  );
}

async function main(): Promise<void> {
  const driver = await startTestDriver({ mode: 'controller', logLevel: 'warn' });
  const { cinder, close } = await directCinder();
  const prefix = uniquePrefix('bench-list');
  const metadata = { [META.cluster]: driver.config.clusterId };
  const ctl = driver.client.Controller as Required<typeof driver.client.Controller>;
  try {
    /** Every volume so tagged, page by page (one list answers at most Cinder's osapi_max_limit, 1,000). */
    const everyVolume = async () => {
      const all: Awaited<ReturnType<typeof cinder.listVolumes>> = [];
      for (;;) {
        const batch = await cinder.listVolumes({ metadata, limit: 500, marker: all.at(-1)?.id });
        all.push(...batch);
        if (batch.length < 500) return all;
      }
    };
    const made = performance.now();
    await inParallel(VOLUMES, (i) => cinder.createVolume({ name: `${prefix}${i}`, size: 1, metadata }));
    for (;;) {
      const mine = (await everyVolume()).filter((v) => v.name?.startsWith(prefix));
      const errored = mine.filter((v) => v.status === 'error');
      if (errored.length) throw new Error(`${errored.length} of the volumes went to error (quota? capacity?)`);
      if (mine.filter((v) => v.status === 'available').length === VOLUMES) break;
      await sleep(1000);
    }
    const makeMs = performance.now() - made;

    /** Every page through the driver; returns the time and how many it listed. */
    const viaDriver = async (maxEntries: number) => {
      const t0 = performance.now();
      let token = '';
      let listed = 0;
      let pages = 0;
      do {
        const r = await ctl.ListVolumes({ max_entries: maxEntries, starting_token: token });
        listed += r.entries.length;
        pages++;
        token = r.next_token;
      } while (token);
      return { ms: performance.now() - t0, listed, pages };
    };
    /** The same pages straight from Cinder (a page of 0 is Cinder's own default page size, followed by markers). */
    const raw = async (limit: number) => {
      const t0 = performance.now();
      let marker: string | undefined;
      let listed = 0;
      let pages = 0;
      for (;;) {
        const batch = await cinder.listVolumes({ metadata, limit: limit || undefined, marker });
        listed += batch.length;
        pages++;
        if (!batch.length || (limit && batch.length < limit)) break;
        marker = batch.at(-1)!.id;
      }
      return { ms: performance.now() - t0, listed, pages };
    };

    const rows: Record<string, unknown>[] = [];
    const table: [string, string | number, string?][] = [
      [`${VOLUMES} volumes made through Cinder, ${AT_ONCE} at a time (s)`, round(makeMs / 1000, 1)],
    ];
    for (const size of [100, 500, 0]) {
      const d: number[] = [];
      const r: number[] = [];
      let shape = { listed: 0, pages: 0, rawPages: 0 };
      for (let i = 0; i < ROUNDS; i++) {
        const [a, b] = i % 2 ? [raw, viaDriver] : [viaDriver, raw];
        const first = await a(size);
        const second = await b(size);
        const [dr, rr] = i % 2 ? [second, first] : [first, second];
        d.push(dr.ms);
        r.push(rr.ms);
        shape = { listed: dr.listed, pages: dr.pages, rawPages: rr.pages };
        if (dr.listed !== rr.listed) throw new Error(`the driver listed ${dr.listed} volumes, Cinder ${rr.listed}`);
      }
      const ratio = round(median(d) / median(r), 2);
      rows.push({ maxEntries: size, ...shape, driverMs: median(d), rawMs: median(r), ratio, driver: d, raw: r });
      table.push([
        `ListVolumes of ${shape.listed}, max_entries ${size || '0 (all)'}: driver / raw (ms)`,
        `${round(median(d), 0)} / ${round(median(r), 0)}`,
        `ratio ${ratio}; ${shape.pages} / ${shape.rawPages} pages`,
      ]);
    }
    const left = await removeByPrefix(cinder, prefix, 600_000);
    table.push(['volumes left after the run', left.length, 'goal 0']);
    report('list-volumes', { volumes: VOLUMES, listings: rows, makeMs: round(makeMs, 0), left }, table);
  } finally {
    await removeByPrefix(cinder, prefix, 600_000).catch(() => undefined);
    await close();
    await driver.stop();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`list-volumes benchmark failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
