/**
 * Controller benchmarks against deploy/local's real Keystone + Cinder, each beside the raw Cinder
 * operation measured in the same run:
 *   1. CreateVolume latency vs a direct Cinder create polled every 20 ms (goal: CSI p50 < 1.15 × raw)
 *   2. Cinder API calls per CreateVolume, ControllerPublishVolume, DeleteVolume vs the raw flows
 *   3. 50 concurrent CreateVolume vs 50 concurrent raw creates (goal: all succeed, total < 1.3 × raw)
 * Prints one JSON document on stdout and a table on stderr (bench/report.ts). Everything it creates
 * is named bench-<random>- and removed at the end.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import type { Cinder, CinderVolume } from '../src/openstack/cinder.js';
import { directCinder, removeByPrefix, uniquePrefix } from '../harness/cinder.js';
import { startTestDriver } from '../harness/driver.js';
import { percentile, report, round } from './report.js';

const VOLUMES = Number(process.env.BENCH_VOLUMES ?? 20);
const CONCURRENT = Number(process.env.BENCH_CONCURRENT ?? 50);
const RAW_POLL_MS = 20;
const CAP = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

/** Counts API calls by kind ("GET /volumes/{id}"), per phase. */
class CallCounter {
  private counts = new Map<string, number>();
  readonly record = (method: string, url: string) => {
    const path = new URL(url).pathname.replace(/^\/v3\/[0-9a-f]{32}/, '').replace(/[0-9a-f]{8}-[0-9a-f-]{27}/g, '{id}');
    const key = `${method} ${path.replace(/\/v3$/, '/v3')}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
  };
  take(): Record<string, number> {
    const out = Object.fromEntries(this.counts);
    this.counts = new Map();
    return out;
  }
}

const total = (c: Record<string, number>) => Object.values(c).reduce((a, b) => a + b, 0);
const polls = (c: Record<string, number>, key: string) => c[key] ?? 0;
const pct = (xs: number[], p: number) =>
  percentile(
    [...xs].sort((a, b) => a - b),
    p,
  );

/** What a direct Cinder client does: POST, then GET every 20 ms until available. */
async function rawCreate(cinder: Cinder, name: string): Promise<CinderVolume> {
  let v = await cinder.createVolume({ name, size: 1, metadata: {} });
  while (v.status === 'creating') {
    await sleep(RAW_POLL_MS);
    v = await cinder.getVolume(v.id);
  }
  if (v.status !== 'available') throw new Error(`raw create of ${name} ended ${v.status}`);
  return v;
}

async function rawDelete(cinder: Cinder, id: string): Promise<void> {
  await cinder.deleteVolume(id);
  while (await cinder.findVolume(id)) await sleep(RAW_POLL_MS);
}

async function main() {
  const prefix = uniquePrefix('bench');
  const csiCalls = new CallCounter();
  const rawCalls = new CallCounter();
  const driver = await startTestDriver({
    mode: 'controller',
    logLevel: 'warn',
    hooks: { onHttpRequest: csiCalls.record },
  });
  const raw = await directCinder(rawCalls.record);
  const ctl = driver.client.Controller;
  let n = 0;
  const name = (kind: string) => `${prefix}${kind}-${++n}`;
  const result: Record<string, unknown> = {
    cinder: 'deploy/local (Cinder 21, RBD on memstore Ceph)',
    volumes: VOLUMES,
    concurrent: CONCURRENT,
  };

  try {
    // Warm-up: tokens, microversion, connections, and the driver's learned create duration.
    for (let i = 0; i < 3; i++) {
      const v = (await ctl.CreateVolume({ name: name('warm'), volume_capabilities: [CAP] })).volume;
      await ctl.DeleteVolume({ volume_id: v.volume_id });
      await rawDelete(raw.cinder, (await rawCreate(raw.cinder, name('warm'))).id);
    }
    csiCalls.take();
    rawCalls.take();

    // 1. Latency, interleaved so both see the same Cinder.
    const csiMs: number[] = [];
    const rawMs: number[] = [];
    const made: { csi: string[]; raw: string[] } = { csi: [], raw: [] };
    for (let i = 0; i < VOLUMES; i++) {
      let t = performance.now();
      made.raw.push((await rawCreate(raw.cinder, name('raw'))).id);
      rawMs.push(performance.now() - t);
      t = performance.now();
      made.csi.push((await ctl.CreateVolume({ name: name('csi'), volume_capabilities: [CAP] })).volume.volume_id);
      csiMs.push(performance.now() - t);
    }
    const create = { csi: csiCalls.take(), raw: rawCalls.take() };
    const latency = {
      csiP50Ms: round(pct(csiMs, 50), 1),
      csiP90Ms: round(pct(csiMs, 90), 1),
      rawP50Ms: round(pct(rawMs, 50), 1),
      rawP90Ms: round(pct(rawMs, 90), 1),
      ratioP50: round(pct(csiMs, 50) / pct(rawMs, 50), 3),
      goal: '< 1.15',
    };
    result.createLatency = { ...latency, met: latency.ratioP50 < 1.15 };

    // 2. API calls per operation (per volume, averaged over the run).
    const per = (c: Record<string, number>) => round(total(c) / VOLUMES, 2);
    const publishCalls = { csi: {} as Record<string, number>, raw: {} as Record<string, number> };
    for (let i = 0; i < VOLUMES; i++) {
      await ctl.ControllerPublishVolume({ volume_id: made.csi[i], node_id: 'bench-node', volume_capability: CAP });
      const a = await raw.cinder.createAttachment(
        made.raw[i]!,
        {
          host: 'bench-node',
          platform: 'x86_64',
          os_type: 'linux',
          multipath: false,
          initiator: 'iqn.bench',
          mountpoint: 'bench-node',
        },
        'rw',
      );
      await raw.cinder.completeAttachment(a.id);
    }
    publishCalls.csi = csiCalls.take();
    publishCalls.raw = rawCalls.take();
    for (let i = 0; i < VOLUMES; i++) {
      await ctl.ControllerUnpublishVolume({ volume_id: made.csi[i], node_id: 'bench-node' });
      for (const a of await raw.cinder.volumeAttachments(made.raw[i]!)) await raw.cinder.deleteAttachment(a.id);
    }
    csiCalls.take();
    rawCalls.take();
    for (let i = 0; i < VOLUMES; i++) {
      await ctl.DeleteVolume({ volume_id: made.csi[i] });
      await rawDelete(raw.cinder, made.raw[i]!);
    }
    const del = { csi: csiCalls.take(), raw: rawCalls.take() };
    /**
     * Calls per operation; `pollKey` is the call a wait repeats (publish waits for nothing). The goal
     * "no more than the raw flow plus polls" holds when the CSI side makes no more non-poll calls
     * than the raw flow; `extraCalls` says how many it makes beyond (lookups idempotency needs).
     */
    const row = (c: { csi: Record<string, number>; raw: Record<string, number> }, pollKey?: string) => {
      const csiPolls = pollKey ? polls(c.csi, pollKey) : 0;
      const rawPolls = pollKey ? polls(c.raw, pollKey) : 0;
      const extra = (total(c.csi) - csiPolls - (total(c.raw) - rawPolls)) / VOLUMES;
      return {
        csi: per(c.csi),
        csiPolls: round(csiPolls / VOLUMES, 2),
        raw: per(c.raw),
        rawPolls: round(rawPolls / VOLUMES, 2),
        extraCalls: round(extra, 2),
        withinRawFlowPlusPolls: extra <= 0,
        fewerCallsThanRaw: total(c.csi) <= total(c.raw),
        breakdown: c,
      };
    };
    result.apiCallsPerOperation = {
      CreateVolume: row(create, 'GET /volumes/{id}'),
      ControllerPublishVolume: row(publishCalls),
      DeleteVolume: row(del, 'GET /volumes/{id}'),
    };

    // 3. Concurrency: all at once, raw first, then CSI, each batch deleted before the next.
    let t = performance.now();
    const rawBatch = await Promise.allSettled(
      Array.from({ length: CONCURRENT }, () => rawCreate(raw.cinder, name('raw-c'))),
    );
    const rawTotalMs = performance.now() - t;
    const rawConcurrentCalls = total(rawCalls.take());
    await Promise.all(rawBatch.flatMap((r) => (r.status === 'fulfilled' ? [rawDelete(raw.cinder, r.value.id)] : [])));
    t = performance.now();
    const csiBatch = await Promise.allSettled(
      Array.from({ length: CONCURRENT }, () =>
        ctl.CreateVolume({ name: name('csi-c'), volume_capabilities: [CAP] }, { deadlineMs: 300_000 }),
      ),
    );
    const csiTotalMs = performance.now() - t;
    const csiConcurrentCalls = total(csiCalls.take());
    await Promise.all(
      csiBatch.flatMap((r) =>
        r.status === 'fulfilled' ? [ctl.DeleteVolume({ volume_id: r.value.volume.volume_id })] : [],
      ),
    );
    const failures = csiBatch.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : []));
    result.concurrentCreate = {
      csiSucceeded: csiBatch.length - failures.length,
      rawSucceeded: rawBatch.filter((r) => r.status === 'fulfilled').length,
      csiTotalMs: round(csiTotalMs, 1),
      rawTotalMs: round(rawTotalMs, 1),
      ratio: round(csiTotalMs / rawTotalMs, 3),
      csiApiCalls: csiConcurrentCalls,
      rawApiCalls: rawConcurrentCalls,
      goal: 'all succeed, < 1.3',
      met: failures.length === 0 && csiTotalMs / rawTotalMs < 1.3,
      ...(failures.length ? { failures: failures.slice(0, 5) } : {}),
    };
  } finally {
    const left = await removeByPrefix(raw.cinder, prefix, 120_000);
    if (left.length) result.leftBehind = left;
    await raw.close();
    await driver.stop();
  }

  const c = result.createLatency as Record<string, number>;
  const calls = result.apiCallsPerOperation as Record<
    string,
    { csi: number; csiPolls: number; raw: number; rawPolls: number; extraCalls: number }
  >;
  const cc = result.concurrentCreate as Record<string, number>;
  report('controller', result, [
    ['CreateVolume p50 ms (CSI)', c.csiP50Ms!],
    ['CreateVolume p50 ms (raw, 20 ms polls)', c.rawP50Ms!],
    ['CreateVolume p50 CSI / raw', c.ratioP50!, 'goal < 1.15'],
    ['CreateVolume p90 ms (CSI / raw)', `${c.csiP90Ms} / ${c.rawP90Ms}`],
    ...Object.entries(calls).flatMap(([op, r]): [string, string | number, string?][] => [
      [`${op} API calls, CSI (polls)`, `${r.csi} (${r.csiPolls})`],
      [`${op} API calls, raw (polls)`, `${r.raw} (${r.rawPolls})`, `CSI non-poll calls beyond raw: ${r.extraCalls}`],
    ]),
    [
      `${CONCURRENT} concurrent CreateVolume ok (CSI / raw)`,
      `${cc.csiSucceeded} / ${cc.rawSucceeded}`,
      `goal all ${CONCURRENT}`,
    ],
    [`${CONCURRENT} concurrent total ms (CSI / raw)`, `${cc.csiTotalMs} / ${cc.rawTotalMs}`],
    [`${CONCURRENT} concurrent CSI / raw`, cc.ratio!, 'goal < 1.3'],
    [`${CONCURRENT} concurrent API calls (CSI / raw)`, `${cc.csiApiCalls} / ${cc.rawApiCalls}`],
  ]);
}

main().catch((e) => {
  process.stderr.write(`controller benchmark failed: ${(e as Error).stack ?? e}\n`);
  process.exit(1);
});
