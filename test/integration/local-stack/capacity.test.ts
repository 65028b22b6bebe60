import { setTimeout as sleep } from 'node:timers/promises';
import { directCinder, removeByPrefix, uniquePrefix } from '../../../harness/cinder.js';

/**
 * deploy/local holds at least 300 thin one-GiB volumes at once (csi-sanity's attach-limit spec alone
 * makes 129): its Ceph backend over-subscribes its memstore, as thin RBD images allow.
 */
const COUNT = 300;
const AT_ONCE = 16;

test(`${COUNT} thin one-GiB volumes exist at once, then all are deleted`, async () => {
  const { cinder, close } = await directCinder();
  const prefix = uniquePrefix('cap300');
  try {
    const ids: string[] = [];
    for (let i = 0; i < COUNT; i += AT_ONCE) {
      const batch = await Promise.all(
        Array.from({ length: Math.min(AT_ONCE, COUNT - i) }, (_, j) =>
          cinder.createVolume({ name: `${prefix}${i + j}`, size: 1, metadata: {} }),
        ),
      );
      ids.push(...batch.map((v) => v.id));
    }
    const deadline = Date.now() + 240_000;
    let states: Record<string, number> = {};
    for (;;) {
      const mine = [];
      for (let marker: string | undefined, page = 0; page < 5; page++) {
        const vs = await cinder.listVolumes({ limit: 1000, marker });
        mine.push(...vs.filter((v) => v.name?.startsWith(prefix)));
        if (vs.length < 1000) break;
        marker = vs.at(-1)!.id;
      }
      states = mine.reduce<Record<string, number>>((m, v) => ({ ...m, [v.status]: (m[v.status] ?? 0) + 1 }), {});
      if (states.available === COUNT || states.error || Date.now() > deadline) break;
      await sleep(1000);
    }
    expect(states).toEqual({ available: COUNT });
    expect(ids).toHaveLength(COUNT);
  } finally {
    expect(await removeByPrefix(cinder, prefix, 300_000)).toEqual([]);
    await close();
  }
}, 600_000);
