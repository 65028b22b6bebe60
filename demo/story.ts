import { randomBytes } from 'node:crypto';
import { mkdir, readFile, rm, rmdir, writeFile } from 'node:fs/promises';
import { statfsSync } from 'node:fs';
import { join } from 'node:path';
import { status, type ServiceError } from '@grpc/grpc-js';
import type { CsiClient } from '../src/client/csi-client.js';
import { readDirectVolume } from '../src/node/kata/direct-volume.js';
import { mountAt, parseMountInfo } from '../src/node/host/mount-commands.js';
import { POD_INFO_KEYS } from '../src/node/kata/runtime.js';
import { statusName } from '../src/server/errors.js';
import { TestVolumes } from '../harness/cinder-volumes.js';
import { LOCAL, localSecret, scratchDir } from '../harness/local-stack.js';
import { cap, CoPaths } from '../harness/node-leaks.js';
import { runKataSandbox } from '../harness/vm/guest.js';
import { rawStagePublish } from '../harness/raw-node.js';
import { leftovers } from './leftovers.js';
import { Progress, type StepHandle } from './progress.js';

/** Where the node plugin being shown keeps things (its --kubelet-root, --kata-direct-volume-root, --state-dir). */
export interface DemoPaths {
  kubeletRoot: string;
  kataRoot: string;
  stateDir?: string;
}

const GiB = 1 << 30;
const CAP = cap.mount('ext4');
const mounts = async () => parseMountInfo(await readFile('/proc/self/mountinfo', 'utf8'));
const timed = async <T>(work: () => Promise<T>): Promise<[T, number]> => {
  const t = performance.now();
  const v = await work();
  return [v, performance.now() - t];
};

/** The demo's names: each run's volumes, snapshots, pods and PV dirs carry demo-<6 hex>. */
export const DEMO_NAME = /demo-[0-9a-f]{6}/;

/** Where each running demo marks its name with its pid, so that another run's sweep leaves it alone. */
export const RUNS_DIR = join(LOCAL, 'demo-runs');

/** The PV and pod names of one run, which kubelet's layout turns into its staging dir and targets. */
export function demoNames(name: string) {
  return { pv: `pv-${name}`, runcPod: `pod-runc-${name}`, kataPod: `pod-kata-${name}` };
}

/** What the failing step was and what to try, for the message the demo ends with. */
export class StepFailure extends Error {
  constructor(
    readonly step: string,
    cause: Error,
    readonly hint: string,
  ) {
    super(`${step}: ${cause.message}`);
  }
}

/**
 * One volume's whole story, step by step, as a CO and a Kata runtime would drive the driver. Every
 * thing it makes is pushed on an undo stack as it is made, so a failure or a Ctrl-C still removes it.
 */
export class DemoStory {
  readonly progress: Progress;
  private readonly undo: { what: string; run: () => Promise<unknown> }[] = [];
  private readonly co: CoPaths;
  /** Every Cinder volume and snapshot the demo makes is named with it. */
  readonly name = `demo-${randomBytes(3).toString('hex')}`;
  interrupted = false;
  private readonly tenantA = localSecret('tenant-a');
  private readonly tenantB = localSecret('tenant-b');
  private raw: TestVolumes | undefined;
  private rawVolume = '';
  private readonly clones: string[] = [];
  private volumeId = '';
  private image = '';
  private publishContext: Record<string, string> = {};
  private readonly staging: string;
  private readonly runcTarget: string;
  private readonly kataTarget: string;

  constructor(
    private readonly csi: CsiClient,
    private readonly paths: DemoPaths,
    private readonly nodeId: string,
    out: NodeJS.WritableStream,
  ) {
    this.progress = new Progress(7, out);
    this.co = new CoPaths(paths.kubeletRoot);
    const n = demoNames(this.name);
    this.staging = this.co.staging(n.pv);
    this.runcTarget = this.co.target(n.runcPod, n.pv);
    this.kataTarget = this.co.target(n.kataPod, n.pv);
  }

  private onUndo(what: string, run: () => Promise<unknown>): void {
    this.undo.push({ what, run });
  }

  /** Ctrl-C: no new step starts; the one running finishes its call, then the caller cleans up. */
  interrupt(): void {
    this.interrupted = true;
  }

  /** Undo what is still on the stack (newest first); what could not be undone, one line each. */
  async cleanUp(o: { raw?: boolean } = {}): Promise<string[]> {
    const failed: string[] = [];
    for (const u of this.undo.splice(0).reverse())
      await u.run().catch((e: Error) => failed.push(`${u.what}: ${e.message}`));
    failed.push(...this.co.release());
    if (o.raw === false) return failed;
    await this.raw?.cleanup().catch((e: Error) => failed.push(e.message));
    this.raw = undefined;
    if (!failed.length) await rm(join(RUNS_DIR, this.name), { force: true });
    return failed;
  }

  /** What of the demo's own is still anywhere (after cleanUp: nothing). */
  remaining(): Promise<string[]> {
    if (!this.volumeId) return Promise.resolve([]);
    return leftovers({
      volumeIds: [this.volumeId, ...this.clones],
      image: this.image,
      kubeletDirs: [this.staging, this.runcTarget, this.kataTarget],
      stateDir: this.paths.stateDir,
      kataRoot: this.paths.kataRoot,
    });
  }

  private async run<T>(n: number, title: string, hint: string, work: (s: StepHandle) => Promise<T>): Promise<T> {
    if (this.interrupted) throw new Error('interrupted');
    try {
      return await this.progress.step(n, title, work);
    } catch (e) {
      throw new StepFailure(`step ${n} (${title})`, e as Error, hint);
    }
  }

  private volumeContext(attachMode: string, pod: string): Record<string, string> {
    // what kubelet adds with podInfoOnMount: true
    return {
      attachMode,
      [POD_INFO_KEYS.name]: pod,
      [POD_INFO_KEYS.namespace]: 'demo',
      [POD_INFO_KEYS.uid]: `uid-${pod}`,
      [POD_INFO_KEYS.ephemeral]: 'false',
    };
  }

  private publish(target: string, attachMode: 'filesystem' | 'passthrough', pod: string) {
    return this.csi.Node.NodePublishVolume({
      volume_id: this.volumeId,
      publish_context: this.publishContext,
      staging_target_path: this.staging,
      target_path: target,
      volume_capability: CAP,
      volume_context: this.volumeContext(attachMode, pod),
    });
  }

  private unpublish(target: string) {
    return this.csi.Node.NodeUnpublishVolume({ volume_id: this.volumeId, target_path: target });
  }

  /** The host's mounts of the volume's device (none while a VM has it). */
  private async hostMountsOf(device: string): Promise<string[]> {
    return (await mounts()).filter((m) => m.source === device).map((m) => m.mountpoint);
  }

  async tell(): Promise<void> {
    await mkdir(RUNS_DIR, { recursive: true });
    await writeFile(join(RUNS_DIR, this.name), `${process.pid}\n`);
    this.raw = TestVolumes.open(`${this.name}-raw`);

    await this.run(
      1,
      'tenant-a creates a 1 GiB volume',
      'is deploy/local up (deploy/local/status) and the driver in controller or all mode?',
      async (s) => {
        s.waiting('CreateVolume waits for Cinder to report it available');
        const { volume } = await this.csi.Controller.CreateVolume({
          name: this.name,
          capacity_range: { required_bytes: GiB },
          volume_capabilities: [CAP],
          secrets: this.tenantA,
        });
        this.volumeId = volume.volume_id;
        this.onUndo(`DeleteVolume ${this.volumeId}`, () =>
          this.csi.Controller.DeleteVolume({ volume_id: this.volumeId, secrets: this.tenantA }),
        );
        s.detail(`Cinder volume ${volume.volume_id} (${volume.capacity_bytes / GiB} GiB), tenant-a's project`);
        s.waiting('the same create straight to Cinder');
        const [id, ms] = await s.offClock(() => timed(() => this.raw!.create(1)));
        this.rawVolume = id;
        s.raw('Cinder POST /volumes until available', ms);
      },
    );

    await this.run(
      2,
      'attach, stage and mount it as ext4 for an ordinary (runc) pod; write a file',
      'the node plugin needs rbd-fuse and loop devices (stackube-csi doctor)',
      async (s) => {
        const { publish_context } = await this.csi.Controller.ControllerPublishVolume({
          volume_id: this.volumeId,
          node_id: this.nodeId,
          volume_capability: CAP,
          readonly: false,
          secrets: this.tenantA,
        });
        this.publishContext = publish_context;
        this.image = publish_context.rbdImage ?? '';
        this.onUndo('ControllerUnpublishVolume', () =>
          this.csi.Controller.ControllerUnpublishVolume({
            volume_id: this.volumeId,
            node_id: this.nodeId,
            secrets: this.tenantA,
          }),
        );
        s.detail(`Cinder attachment to node ${this.nodeId}: RBD image ${publish_context.rbdPool}/${this.image}`);
        s.waiting('NodeStageVolume maps the image and makes the filesystem');
        await this.csi.Node.NodeStageVolume({
          volume_id: this.volumeId,
          publish_context,
          staging_target_path: this.staging,
          volume_capability: CAP,
          volume_context: { attachMode: 'auto' },
        });
        this.onUndo('NodeUnstageVolume', () =>
          this.csi.Node.NodeUnstageVolume({ volume_id: this.volumeId, staging_target_path: this.staging }),
        );
        await this.publish(this.runcTarget, 'filesystem', 'runc-app');
        this.onUndo('NodeUnpublishVolume (runc pod)', () => this.unpublish(this.runcTarget));
        const m = mountAt(await mounts(), this.runcTarget);
        s.detail(`mounted for the runc pod: ${m?.source} (${m?.fsType}) at ${this.runcTarget}`);
        await writeFile(join(this.runcTarget, 'from-host.txt'), `${this.name}-written-on-the-host\n`);
        s.detail(`wrote from-host.txt: ${this.name}-written-on-the-host`);
        s.waiting('the same by hand on another attached volume: rbd-fuse, losetup, mkfs.ext4, mount, bind');
        const ms = await s.offClock(async () => {
          const volume = await this.raw!.create(1);
          const scratch = scratchDir('demo-raw');
          const [attached, attachMs] = await timed(() => this.raw!.attach(volume, this.nodeId));
          const byHand = await rawStagePublish(attached, scratch);
          await byHand.undo();
          await rmdir(scratch);
          return attachMs + byHand.ms;
        });
        s.raw('Cinder attachment + rbd-fuse + losetup + mkfs.ext4 + mount + bind', ms);
      },
    );

    await this.run(
      3,
      'hand the same device to a qemu guest (Kata direct volume); the guest reads and writes',
      'the guest needs qemu-system-x86 (deploy/local/up installs what the VM tests need); see the driver log',
      async (s) => {
        await this.unpublish(this.runcTarget);
        s.waiting('NodePublishVolume writes the Kata direct-volume file');
        await this.publish(this.kataTarget, 'passthrough', 'kata-app');
        this.onUndo('NodeUnpublishVolume (Kata pod)', () => this.unpublish(this.kataTarget));
        const state = await readDirectVolume(this.paths.kataRoot, this.kataTarget);
        if (!state)
          throw new Error(
            `no mountInfo.json for ${this.kataTarget} under ${this.paths.kataRoot}: is --kata-root the driver's --kata-direct-volume-root?`,
          );
        const device = state.info.device;
        s.detail(`mountInfo.json: ${JSON.stringify(state.info)}`);
        // the host's mount table, sampled all the while the guest runs: the device must never be in it
        const seen = new Set<string>();
        let samples = 0;
        const sampler = setInterval(() => {
          samples++;
          void this.hostMountsOf(device).then((m) => m.forEach((p) => seen.add(p)));
        }, 50);
        s.waiting('qemu boots the guest, which mounts the device, reads and writes');
        const run = await runKataSandbox(this.paths.kataRoot, this.kataTarget, {
          checks: { 'from-host.txt': `${this.name}-written-on-the-host` },
          writes: { 'from-guest.txt': `${this.name}-written-in-the-guest` },
        }).finally(() => clearInterval(sampler));
        if (!run.done) throw new Error(`the guest did not finish: ${run.failure ?? run.console.slice(-5).join(' | ')}`);
        s.detail(
          `guest (qemu ${run.accel}): /dev/${run.disk?.name} of ${run.disk?.bytes} bytes, mounted: ${run.mount}`,
        );
        if (run.checks['from-host.txt'] !== 'ok')
          throw new Error(`the guest read from-host.txt as ${run.checks['from-host.txt']}`);
        s.detail(`guest read from-host.txt: ok; wrote from-guest.txt: ${run.wrote['from-guest.txt']}`);
        if (seen.size)
          throw new Error(`the host had ${device} mounted while the guest used it: ${[...seen].join(', ')}`);
        s.detail(`host mounts of ${device} while the guest ran (mount table read ${samples} times): none`);
        s.raw('the qemu guest run alone', run.wallMs);
        await this.unpublish(this.kataTarget);
      },
    );

    await this.run(4, "back on the host: an ordinary pod reads the guest's file", 'see the driver log', async (s) => {
      await this.publish(this.runcTarget, 'filesystem', 'runc-app-2');
      const text = (await readFile(join(this.runcTarget, 'from-guest.txt'), 'utf8')).trim();
      s.detail(`from-guest.txt on the host: ${text}`);
      if (text !== `${this.name}-written-in-the-guest`) throw new Error(`from-guest.txt holds "${text.slice(0, 80)}"`);
    });

    await this.run(
      5,
      'snapshot it, clone the snapshot, expand it while attached',
      'Cinder snapshots need the RBD backend (deploy/local/status); see the driver log',
      async (s) => {
        s.waiting('CreateSnapshot');
        const { snapshot } = await this.csi.Controller.CreateSnapshot({
          source_volume_id: this.volumeId,
          name: `${this.name}-snap`,
          secrets: this.tenantA,
        });
        this.onUndo('DeleteSnapshot', () =>
          this.csi.Controller.DeleteSnapshot({ snapshot_id: snapshot.snapshot_id, secrets: this.tenantA }),
        );
        s.detail(`snapshot ${snapshot.snapshot_id}: ${snapshot.size_bytes / GiB} GiB, ready ${snapshot.ready_to_use}`);
        s.waiting('CreateVolume from the snapshot');
        const { volume: clone } = await this.csi.Controller.CreateVolume({
          name: `${this.name}-clone`,
          capacity_range: { required_bytes: GiB },
          volume_capabilities: [CAP],
          volume_content_source: { snapshot: { snapshot_id: snapshot.snapshot_id } },
          secrets: this.tenantA,
        });
        this.clones.push(clone.volume_id);
        this.onUndo('DeleteVolume (clone)', () =>
          this.csi.Controller.DeleteVolume({ volume_id: clone.volume_id, secrets: this.tenantA }),
        );
        s.detail(
          `clone ${clone.volume_id}: ${clone.capacity_bytes / GiB} GiB from snapshot ${clone.content_source?.snapshot?.snapshot_id}`,
        );
        const before = statfsSync(this.runcTarget);
        s.waiting('ControllerExpandVolume + NodeExpandVolume while the pod has it mounted');
        const grown = await this.csi.Controller.ControllerExpandVolume({
          volume_id: this.volumeId,
          capacity_range: { required_bytes: 2 * GiB },
          volume_capability: CAP,
          secrets: this.tenantA,
        });
        const nodeExpand = (path: string) =>
          this.csi.Node.NodeExpandVolume({
            volume_id: this.volumeId,
            volume_path: path,
            staging_target_path: this.staging,
            capacity_range: { required_bytes: 2 * GiB },
            volume_capability: CAP,
          });
        let how = 'online, the pod using it';
        await nodeExpand(this.runcTarget).catch(async (e: ServiceError) => {
          if (e.code !== status.FAILED_PRECONDITION || !/CAP_SYS_RESOURCE/.test(e.details)) throw e;
          // what kubelet would see on such a host: the driver says why, and grows it between pods
          s.detail(
            `NodeExpandVolume with the pod running: ${statusName(e.code)}: this host withholds CAP_SYS_RESOURCE, which online resize2fs needs`,
          );
          await this.unpublish(this.runcTarget);
          await nodeExpand(this.staging);
          await this.publish(this.runcTarget, 'filesystem', 'runc-app-3');
          how = 'between two pods, the volume attached and staged all along';
        });
        const after = statfsSync(this.runcTarget);
        const gib = (f: { blocks: number; bsize: number }) => ((f.blocks * f.bsize) / GiB).toFixed(2);
        s.detail(
          `volume ${grown.capacity_bytes / GiB} GiB; its ext4 grew from ${gib(before)} to ${gib(after)} GiB, ${how}`,
        );
        if (after.blocks <= before.blocks) throw new Error('the mounted filesystem did not grow');
        s.waiting('the same straight to Cinder: snapshot, volume from it, extend');
        const [, ms] = await s.offClock(() =>
          timed(async () => {
            const snap = await this.raw!.snapshot(this.rawVolume);
            await this.raw!.create(1, undefined, snap);
            await this.raw!.extend(this.rawVolume, 2);
          }),
        );
        s.raw('Cinder snapshot + volume from it + extend', ms);
      },
    );

    await this.run(6, "tenant-b tries to publish tenant-a's volume", 'see the driver log', async (s) => {
      const refused = await this.csi.Controller.ControllerPublishVolume({
        volume_id: this.volumeId,
        node_id: this.nodeId,
        volume_capability: CAP,
        readonly: false,
        secrets: this.tenantB,
      }).then(
        () => undefined,
        (e: ServiceError) => e,
      );
      if (!refused) {
        await this.csi.Controller.ControllerUnpublishVolume({
          volume_id: this.volumeId,
          node_id: this.nodeId,
          secrets: this.tenantB,
        }).catch(() => undefined);
        throw new Error("tenant-b's credential was allowed to publish tenant-a's volume");
      }
      if (typeof refused.code !== 'number') throw refused;
      s.detail(`refused: ${statusName(refused.code)} (${refused.code}): ${refused.details}`);
    });

    await this.run(
      7,
      'clean up, and show that nothing is left',
      'run the demo again: it removes nothing but its own, named demo-…',
      async (s) => {
        s.waiting('NodeUnpublish, NodeUnstage, ControllerUnpublish, DeleteVolume, DeleteSnapshot');
        const failed = await this.cleanUp({ raw: false });
        if (failed.length) throw new Error(`could not undo: ${failed.join('; ')}`);
        s.waiting('the same straight to Cinder: detach, delete the volumes and the snapshot');
        const [rawFailed, ms] = await s.offClock(() => timed(() => this.cleanUp()));
        if (rawFailed.length)
          throw new Error(`could not remove the demo's plain Cinder volumes: ${rawFailed.join('; ')}`);
        const left = await this.remaining();
        if (left.length) throw new Error(`left behind: ${left.join('; ')}`);
        s.detail(
          'left: nothing (volumes, snapshots, attachments, mappings, loop devices, rbd-fuse, mounts, Kata files)',
        );
        s.raw('Cinder deletes of the same, by hand', ms);
      },
    );
  }
}
