import type { CephFencer, FencedImage } from '../../ceph/fencing.js';
import { failpoint } from '../../failpoints.js';
import { type FenceRecord, OUT_OF_SERVICE_TAINT } from '../../fencing-records.js';
import type { KubeClient } from '../../kube/client.js';
import type { Logger } from '../../log.js';
import { unavailable } from '../../server/errors.js';
import { SharedFlights } from '../../shared-flight.js';

export interface NodeFencingOptions {
  ceph: CephFencer;
  /** The Kubernetes API: a Node with the out-of-service taint, or none at all, is lost. */
  kube?: Pick<KubeClient, 'getNode'>;
  log: Logger;
  /** Client instances blocklisted (+n) and taken off the blocklist (-n). */
  onFenced?: (delta: number) => void;
}

/**
 * Fencing a lost node before its volumes move: its mappers' Ceph client instances (recorded at stage)
 * are blocklisted and their image locks broken, so a partitioned node that comes back cannot write a
 * byte on an image another node has taken over. Each fence is a write-ahead transaction on its record
 * (fencing → fenced), so a kill at any step is finished by the next call; the node marks it released
 * once its stage is gone, and the next publish to that node lifts it.
 */
export class NodeFencing {
  /** One look per node at a time, however many publishes to it come meanwhile. */
  private readonly unfencing = new SharedFlights<string, void>({ timeoutMs: 120_000 });
  constructor(private readonly o: NodeFencingOptions) {}

  /** Why `node` is lost (its volumes may be taken from it by force), or undefined while it is not. */
  async lostReason(node: string, signal?: AbortSignal): Promise<string | undefined> {
    const mark = await this.o.ceph.nodeMark(node, signal);
    if (mark) return `fenced by an operator (stackube-csi fence, ${mark.at}): ${mark.reason}`;
    if (!this.o.kube) return undefined;
    try {
      const n = await this.o.kube.getNode(node, signal);
      if (n.spec?.taints?.some((t) => t.key === OUT_OF_SERVICE_TAINT))
        return `its Node has the ${OUT_OF_SERVICE_TAINT} taint`;
      return undefined;
    } catch (e) {
      if ((e as { kind?: string }).kind === 'not-found') return 'its Node object is gone';
      throw unavailable(`cannot tell whether node ${node} is lost (and must be fenced first): ${(e as Error).message}`);
    }
  }

  /**
   * Make the node's clients unable to write on the image: record the fence, blocklist each client,
   * break the locks they hold, mark it fenced. Idempotent; returns the clients fenced.
   */
  async fenceImage(node: string, ref: FencedImage, reason: string, signal?: AbortSignal): Promise<string[]> {
    const { ceph, log } = this.o;
    const [existing, recorded] = await Promise.all([
      ceph.fence(ref, node, signal),
      ceph.mapperClients(ref, node, signal),
    ]);
    const held = existing && existing.state !== 'released' ? existing.clients : [];
    const clients = [...new Set([...held, ...recorded])];
    if (!clients.length) {
      log.warn(
        { node, pool: ref.pool, image: ref.image, reason },
        'lost node: no Ceph client of it is recorded for this image (staged by an older driver, or never mapped); nothing to fence',
      );
      return [];
    }
    if (existing?.state === 'fenced' && clients.every((c) => existing.clients.includes(c))) return clients;
    const record: FenceRecord = {
      clients,
      state: 'fencing',
      reason: reason.slice(0, 200),
      at: new Date().toISOString(),
    };
    await ceph.writeFence(ref, node, record, signal);
    await failpoint('fence:recorded');
    for (const c of clients) await ceph.blocklist(c, signal);
    await failpoint('fence:blocklisted');
    const broken = await ceph.breakLocks(ref, clients, signal);
    await failpoint('fence:locks-broken');
    await ceph.writeFence(ref, node, { ...record, state: 'fenced' }, signal);
    await failpoint('fence:done');
    if (existing?.state !== 'fencing') this.o.onFenced?.(clients.length);
    log.warn(
      { node, pool: ref.pool, image: ref.image, clients, locksBroken: broken, reason },
      'fenced a lost node: its Ceph clients are blocklisted and can no longer write this image',
    );
    return clients;
  }

  /**
   * Lift the fences the node has released (its stages torn down, its fenced clients gone), in the
   * background of a publish to it (one `rados listomapkeys` when there are none); failures only logged.
   */
  unfenceReleased(node: string): void {
    this.unfencing
      .get(node, (signal) => this.unfence(node, { onlyReleased: true }, signal).then(() => undefined))
      .catch((e: Error) => this.o.log.warn({ node, error: e.message }, 'could not lift the fences a node released'));
  }

  /**
   * Take the node's fences off the blocklist and remove their records (all of them, or those the node
   * released); returns the clients unfenced. The operator's `unfence` also removes its node mark.
   */
  async unfence(node: string, o: { onlyReleased: boolean }, signal?: AbortSignal): Promise<string[]> {
    const { ceph, log } = this.o;
    const lifted: string[] = [];
    for (const ref of await ceph.fencedImages(node, signal)) {
      const record = await ceph.fence(ref, node, signal);
      if (o.onlyReleased && record?.state !== 'released') continue;
      for (const c of record?.clients ?? []) await ceph.unblocklist(c, signal);
      await ceph.removeFence(ref, node, signal);
      lifted.push(...(record?.clients ?? []));
      log.info({ node, pool: ref.pool, image: ref.image, clients: record?.clients }, 'unfenced');
    }
    if (!o.onlyReleased) await ceph.unmarkNode(node, signal);
    if (lifted.length) this.o.onFenced?.(-lifted.length);
    return lifted;
  }

  /** The operator's `fence NODE`: mark it lost and fence every image its mappers hold, at once. */
  async fenceNode(node: string, reason: string, signal?: AbortSignal): Promise<{ image: string; clients: string[] }[]> {
    await this.o.ceph.markNode(node, reason, signal);
    const out = [];
    for (const ref of await this.o.ceph.mappedImages(node, signal))
      out.push({ image: `${ref.pool}/${ref.image}`, clients: await this.fenceImage(node, ref, reason, signal) });
    return out;
  }
}
