import type { AttachMode } from '../../vocabulary.js';
import { KubeError, type KubeClient, type RuntimeClass } from '../../kube/client.js';
import { SharedFlights } from '../../shared-flight.js';
import type { Logger } from '../../log.js';

/** volume_context keys kubelet adds when the CSIDriver has podInfoOnMount: true. */
export const POD_INFO_KEYS = {
  name: 'csi.storage.k8s.io/pod.name',
  namespace: 'csi.storage.k8s.io/pod.namespace',
  uid: 'csi.storage.k8s.io/pod.uid',
  serviceAccount: 'csi.storage.k8s.io/serviceAccount.name',
  ephemeral: 'csi.storage.k8s.io/ephemeral',
} as const;

export interface PodRef {
  namespace: string;
  name: string;
  uid?: string;
}

/** The pod a NodePublish is for, from kubelet's podInfoOnMount keys; undefined when kubelet sent none. */
export function podFromVolumeContext(vc: Record<string, string> | undefined): PodRef | undefined {
  const name = vc?.[POD_INFO_KEYS.name];
  const namespace = vc?.[POD_INFO_KEYS.namespace];
  if (!name || !namespace) return undefined;
  return { namespace, name, uid: vc[POD_INFO_KEYS.uid] || undefined };
}

/** `kata*` → /^kata.*$/. Handler globs hold only letters, digits, . _ - and * (config.ts checks). */
export function handlerMatcher(globs: string[]): (handler: string) => boolean {
  const res = globs.map((g) => new RegExp(`^${g.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '.*')}$`));
  return (handler) => res.some((re) => re.test(handler));
}

/** Whether one pod runs in a VM, or why that could not be found out. */
export type PodRuntime =
  { vm: boolean; handler?: string; runtimeClass?: string } | { unknown: string; transient: boolean };

/**
 * How NodePublish must hand a volume to a pod:
 * - filesystem: mount on the host and bind into the pod (runc pods, or Kata sharing it over virtio-fs);
 * - passthrough: never mount on the host; write Kata's direct-volume file so the VM gets the device;
 * - an error kind the node maps to a CSI code, with the reason.
 */
export type RuntimeDecision =
  | { mode: 'filesystem' | 'passthrough'; why: string; warning?: string }
  | { error: 'failed-precondition' | 'unavailable'; why: string };

const describePod = (p: PodRef) => `pod ${p.namespace}/${p.name}`;

/**
 * The decision from what is known, without I/O: `filesystem` always mounts; `passthrough` hands the
 * device over, refusing a pod known not to be a VM (runc would see an empty directory); `auto`
 * follows the pod's runtime and falls back to a host mount, with a warning, when it cannot be known.
 * A transient API failure in `auto` asks kubelet to retry rather than pick the wrong mode for the
 * pod's whole life.
 */
export function decide(
  attachMode: AttachMode,
  pod: PodRef | undefined,
  runtime: PodRuntime | undefined,
): RuntimeDecision {
  if (attachMode === 'filesystem') return { mode: 'filesystem', why: 'attachMode is filesystem' };
  const subject = pod ? describePod(pod) : 'the pod';
  const known = runtime && 'vm' in runtime ? runtime : undefined;
  const via = known?.runtimeClass
    ? `RuntimeClass ${known.runtimeClass} (handler ${known.handler})`
    : 'the default runtime (no runtimeClassName)';
  const unknown = !pod
    ? 'kubelet sent no pod name/namespace in volume_context (the CSIDriver needs podInfoOnMount: true)'
    : runtime && 'unknown' in runtime
      ? runtime.unknown
      : undefined;

  if (attachMode === 'passthrough') {
    if (known && !known.vm)
      return {
        error: 'failed-precondition',
        why: `attachMode is passthrough, but ${subject} runs with ${via}, not in a VM: only a hypervisor pod (handler matching --hypervisor-runtime-handlers) can use this volume; use a StorageClass with attachMode auto or filesystem for it`,
      };
    if (known) return { mode: 'passthrough', why: `attachMode is passthrough and ${subject} runs in a VM via ${via}` };
    return {
      mode: 'passthrough',
      why: 'attachMode is passthrough',
      warning: `attachMode is passthrough but whether ${subject} runs in a VM cannot be checked (${unknown}); handing it the device as the StorageClass asks`,
    };
  }

  if (known)
    return {
      mode: known.vm ? 'passthrough' : 'filesystem',
      why: `attachMode is auto and ${subject} runs ${known.vm ? 'in a VM' : 'on the host'} via ${via}`,
    };
  if (runtime && 'unknown' in runtime && runtime.transient)
    return {
      error: 'unavailable',
      why: `attachMode is auto and whether ${subject} runs in a VM cannot be found out right now (${runtime.unknown}); retry`,
    };
  return {
    mode: 'filesystem',
    why: 'attachMode is auto and the pod runtime is unknown',
    warning: `attachMode auto: mounting on the host, since whether ${subject} runs in a VM cannot be found out: ${unknown}`,
  };
}

export interface RuntimeDetectorOptions {
  /** --hypervisor-runtime-handlers: globs of RuntimeClass handlers whose pods are VMs. */
  hypervisorHandlers: string[];
  /** The API client, or why there is none (neither in-cluster nor KUBECONFIG). */
  kube: KubeClient | { unavailable: string };
  log: Logger;
  /** How long a RuntimeClass lookup is reused; they change rarely and every publish needs one. */
  cacheMs?: number;
}

/**
 * Finds out, per NodePublish, whether the pod runs in a VM: Pod → spec.runtimeClassName →
 * RuntimeClass → handler, matched against the configured globs. RuntimeClass answers are cached
 * briefly and concurrent lookups of one class share a request; Pods are read fresh (each publish is
 * for a different pod).
 */
export class RuntimeDetector {
  private readonly isHypervisor: (handler: string) => boolean;
  private readonly classes: SharedFlights<string, RuntimeClass>;

  constructor(private readonly o: RuntimeDetectorOptions) {
    this.isHypervisor = handlerMatcher(o.hypervisorHandlers);
    this.classes = new SharedFlights({ timeoutMs: 30_000, keepMs: o.cacheMs ?? 30_000 });
  }

  /** The decision for one publish; logs one warning line when `auto` or `passthrough` had to guess. */
  async decide(
    attachMode: AttachMode,
    volumeContext: Record<string, string> | undefined,
    signal?: AbortSignal,
    log: Logger = this.o.log,
  ): Promise<RuntimeDecision> {
    const pod = podFromVolumeContext(volumeContext);
    const runtime = attachMode === 'filesystem' || !pod ? undefined : await this.podRuntime(pod, signal);
    const d = decide(attachMode, pod, runtime);
    if ('warning' in d && d.warning) log.warn({ attachMode, pod: pod && describePod(pod) }, d.warning);
    else
      log.debug(
        { attachMode, pod: pod && describePod(pod), ...('mode' in d ? { mode: d.mode } : { error: d.error }) },
        d.why,
      );
    return d;
  }

  /** Whether the pod runs in a VM, or why that is unknown. */
  async podRuntime(pod: PodRef, signal?: AbortSignal): Promise<PodRuntime> {
    const kube = this.o.kube;
    if (!('getPod' in kube)) return { unknown: `no Kubernetes API access: ${kube.unavailable}`, transient: false };
    try {
      const found = await kube.getPod(pod.namespace, pod.name, signal);
      if (pod.uid && found.metadata.uid !== pod.uid)
        return {
          unknown: `${describePod(pod)} in the API is another pod (uid ${found.metadata.uid}, kubelet named ${pod.uid})`,
          transient: true,
        };
      const className = found.spec.runtimeClassName;
      if (!className) return { vm: false };
      const rc = await this.runtimeClass(kube, className, signal);
      return { vm: this.isHypervisor(rc.handler), handler: rc.handler, runtimeClass: className };
    } catch (e) {
      if (!(e instanceof KubeError)) throw e;
      const hint =
        e.kind === 'forbidden' || e.kind === 'unauthorized'
          ? ' (the node plugin needs get on pods and runtimeclasses.node.k8s.io: deploy/kubernetes/rbac-node.yaml)'
          : '';
      return { unknown: `${e.message}${hint}`, transient: e.transient };
    }
  }

  private runtimeClass(kube: KubeClient, name: string, signal?: AbortSignal): Promise<RuntimeClass> {
    return this.classes.get(name, (own) => kube.getRuntimeClass(name, own), signal);
  }
}
