/**
 * Concurrent volume lifecycles against deploy/local, each beside the same work done raw in the same run:
 *   controller: CreateVolume → ControllerPublish → ControllerUnpublish → DeleteVolume, against Cinder's
 *               create (polled) → attachment create + complete → attachment delete → delete (polled until gone);
 *   full:       the same with NodeStage + NodePublish + NodeUnpublish + NodeUnstage (ext4) in the middle, against
 *               rbd-fuse + losetup + mkfs + mount + bind and their undo by hand.
 * At 10 and 40 at once (BENCH_LIFECYCLES="10,40"). What Cinder's RBD backend allows at once bounds every figure:
 * the raw column is that bound. Prints one JSON line on stdout and a table on stderr.
 */
import { setTimeout as sleep } from 'node:timers/promises';
import { directCinder, uniquePrefix } from '../harness/cinder.js';
import type { AttachedVolume } from '../harness/cinder-volumes.js';
import { startTestDriver } from '../harness/driver.js';
import { nodeDirs, nodeOps, startNodeDriver } from '../harness/node-driver.js';
import { cap, CoPaths, forceCleanup, nodeLeaks } from '../harness/node-leaks.js';
import { rawStagePublish } from '../harness/raw-node.js';
import { publishContextFromConnection } from '../src/csi/volume-context.js';
import type { Cinder } from '../src/openstack/cinder.js';
import { percentile, report, round } from './report.js';

const SIZES = (process.env.BENCH_LIFECYCLES ?? '10,40').split(',').map(Number);
const NODE = 'bench-lifecycles';
const POLL_MS = 20;
const MOUNT = cap.mount('ext4');

interface Batch {
  ok: number;
  failed: string[];
  totalMs: number;
  p50Ms: number;
  p95Ms: number;
  /** Median milliseconds of each phase of a lifecycle (where a batch's time goes). */
  phasesP50Ms: Record<string, number>;
}

/** Milliseconds per phase of the lifecycles of the batch being run. */
let phases: Record<string, number[]> = {};

async function phase<T>(name: string, fn: () => Promise<T>): Promise<T> {
  const t = performance.now();
  try {
    return await fn();
  } finally {
    (phases[name] ??= []).push(performance.now() - t);
  }
}

async function batch(n: number, one: (i: number) => Promise<void>): Promise<Batch> {
  phases = {};
  const each: number[] = [];
  const t0 = performance.now();
  const settled = await Promise.allSettled(
    Array.from({ length: n }, async (_, i) => {
      const t = performance.now();
      await one(i);
      each.push(performance.now() - t);
    }),
  );
  const totalMs = performance.now() - t0;
  const failed = settled.flatMap((r) => (r.status === 'rejected' ? [String((r.reason as Error).message)] : []));
  const sorted = each.sort((a, b) => a - b);
  return {
    ok: n - failed.length,
    failed: [...new Set(failed)].slice(0, 3),
    totalMs: round(totalMs, 0),
    p50Ms: round(percentile(sorted, 50), 0),
    p95Ms: round(percentile(sorted, 95), 0),
    phasesP50Ms: Object.fromEntries(
      Object.entries(phases).map(([k, v]) => [
        k,
        round(
          percentile(
            v.sort((a, b) => a - b),
            50,
          ),
          0,
        ),
      ]),
    ),
  };
}

/** A direct Cinder client's lifecycle: every wait is a poll every 20 ms; `middle` runs while attached. */
async function rawLifecycle(
  cinder: Cinder,
  name: string,
  middle?: (v: AttachedVolume) => Promise<void>,
): Promise<void> {
  const v = await phase('create', async () => {
    let created = await cinder.createVolume({ name, size: 1, metadata: {} });
    while (created.status === 'creating') {
      await sleep(POLL_MS);
      created = await cinder.getVolume(created.id);
    }
    return created;
  });
  if (v.status !== 'available') throw new Error(`raw create of ${name} ended ${v.status}`);
  const connector = {
    host: NODE,
    platform: 'x86_64',
    os_type: 'linux',
    multipath: false,
    initiator: `iqn.${NODE}`,
    mountpoint: NODE,
  };
  const a = await phase('publish', async () => {
    const made = await cinder.createAttachment(v.id, connector, 'rw');
    await cinder.completeAttachment(made.id);
    return made;
  });
  if (middle) {
    const ci = a.connection_info as Record<string, unknown>;
    const nested = 'data' in ci ? ci : { driver_volume_type: ci.driver_volume_type, data: ci };
    await phase('node', () =>
      middle({
        volumeId: v.id,
        attachmentId: a.id,
        publishContext: publishContextFromConnection(nested, a.id, 'rw', v.id),
      }),
    );
  }
  await phase('unpublish', () => cinder.deleteAttachment(a.id));
  await phase('delete', async () => {
    await cinder.deleteVolume(v.id);
    while (await cinder.findVolume(v.id)) await sleep(POLL_MS);
  });
}

async function main(): Promise<void> {
  const prefix = uniquePrefix('bench-lc');
  const dirs = nodeDirs('bench-lifecycles');
  const co = new CoPaths(dirs.kubeletRoot);
  const controller = await startTestDriver({ mode: 'controller', logLevel: 'warn' });
  const node = await startNodeDriver(dirs, { logLevel: 'warn', nodeId: NODE });
  const raw = await directCinder();
  const ctl = controller.client.Controller;
  const ops = nodeOps(node.csi);
  let n = 0;

  const csiLifecycle = async (withNode: boolean) => {
    const i = ++n;
    const created = await phase('create', () =>
      ctl.CreateVolume({ name: `${prefix}csi-${i}`, volume_capabilities: [MOUNT] }, { deadlineMs: 600_000 }),
    );
    const volumeId = created.volume.volume_id;
    const published = await phase('publish', () =>
      ctl.ControllerPublishVolume(
        { volume_id: volumeId, node_id: NODE, volume_capability: MOUNT },
        { deadlineMs: 600_000 },
      ),
    );
    if (withNode) {
      const v = { volumeId, publishContext: published.publish_context };
      const staging = co.staging(`pv-${i}`);
      const target = co.target(`pod-${i}`, `pv-${i}`);
      await phase('node', async () => {
        await ops.stage(v, staging, MOUNT);
        await ops.publish(v, staging, target, MOUNT);
        await ops.unpublish(v, target);
        await ops.unstage(v, staging);
      });
    }
    await phase('unpublish', () =>
      ctl.ControllerUnpublishVolume({ volume_id: volumeId, node_id: NODE }, { deadlineMs: 600_000 }),
    );
    await phase('delete', () => ctl.DeleteVolume({ volume_id: volumeId }, { deadlineMs: 600_000 }));
  };
  const rawFull = async (v: AttachedVolume) => {
    const r = await rawStagePublish(v, dirs.base);
    await r.undo();
  };

  const rows: Record<string, unknown>[] = [];
  const table: [string, string | number, string?][] = [];
  try {
    // warm-up: tokens, microversion, connections, page cache for the node's binaries
    await rawLifecycle(raw.cinder, `${prefix}warm-raw`, rawFull);
    await csiLifecycle(true);
    for (const size of SIZES) {
      for (const withNode of [false, true]) {
        const kind = withNode ? 'full' : 'controller';
        const rawBatch = await batch(size, (i) =>
          rawLifecycle(raw.cinder, `${prefix}raw-${kind}-${size}-${i}`, withNode ? rawFull : undefined),
        );
        const csiBatch = await batch(size, () => csiLifecycle(withNode));
        const ratio = round(csiBatch.totalMs / rawBatch.totalMs, 2);
        rows.push({ kind, concurrent: size, driver: csiBatch, raw: rawBatch, ratio });
        table.push([
          `${size} ${kind} lifecycles at once: driver / raw (s)`,
          `${round(csiBatch.totalMs / 1000, 1)} / ${round(rawBatch.totalMs / 1000, 1)}`,
          `ratio ${ratio}; ok ${csiBatch.ok}/${size} and ${rawBatch.ok}/${size}`,
        ]);
      }
    }
    const leftovers = [...co.release(), ...nodeLeaks(dirs)];
    table.push(['leftovers after the run', leftovers.length, 'goal 0']);
    report('lifecycles', { cinder: 'deploy/local', lifecycles: rows, leftovers }, table);
  } finally {
    await node.stop();
    await controller.stop();
    forceCleanup(dirs.base);
    await raw.close();
  }
}

main().catch((e: Error) => {
  process.stderr.write(`lifecycles benchmark failed: ${e.stack ?? e.message}\n`);
  process.exit(1);
});
