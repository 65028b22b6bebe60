import { stat } from 'node:fs/promises';
import type { Logger } from '../log.js';
import { chooseMapper, detectHost, type MapperKind, mapperUnusable } from '../node/host/capabilities.js';
import type { CinderSession } from '../openstack/cinder-session.js';
import type { Keystone } from '../openstack/keystone.js';
import { SharedFlights } from '../shared-flight.js';

export interface Readiness {
  ready: boolean;
  /** Why not ready, for the log and `doctor`. */
  reason?: string;
}
export type ReadinessCheck = (signal?: AbortSignal) => Promise<Readiness>;

/** The controller is ready when Keystone issues its token and Cinder answers its versions document. */
export function controllerReadiness(
  cinder: CinderSession | undefined,
  keystone: Keystone,
  authUrl: string,
): ReadinessCheck {
  return async (signal) => {
    try {
      if (cinder) {
        await cinder.microversion(signal);
        await cinder.ping(signal);
      }
      // Tenant secrets only: all we can check without a credential is that Keystone answers.
      else await keystone.ping(authUrl, signal);
      return { ready: true };
    } catch (e) {
      return { ready: false, reason: (e as Error).message };
    }
  };
}

/** The node is ready when its RBD mapper can run here and the kubelet root exists. */
export function nodeReadiness(config: { rbdMapper: MapperKind | 'auto'; kubeletRoot: string }): ReadinessCheck {
  return async () => {
    const host = await detectHost(config.rbdMapper === 'auto' ? undefined : config.rbdMapper);
    const why =
      config.rbdMapper === 'auto'
        ? chooseMapper(host).kind
          ? undefined
          : 'no RBD mapper can run on this host (run `stackube-csi doctor`)'
        : mapperUnusable(config.rbdMapper, host);
    if (why) return { ready: false, reason: `rbd mapper ${config.rbdMapper}: ${why}` };
    const root = await stat(config.kubeletRoot).catch(() => undefined);
    if (!root?.isDirectory()) return { ready: false, reason: `kubelet root ${config.kubeletRoot} is not a directory` };
    return { ready: true };
  };
}

/**
 * All checks must pass; results are cached briefly and shared by concurrent callers, so a probe
 * every second from the livenessprobe sidecar does not become a request storm on Keystone.
 */
export function combinedReadiness(checks: ReadinessCheck[], log: Logger, cacheMs = 3000): ReadinessCheck {
  let last: Readiness | undefined;
  const flights = new SharedFlights<'all', Readiness>({ timeoutMs: 30_000, keepMs: cacheMs });
  const check = async (own: AbortSignal): Promise<Readiness> => {
    const results = await Promise.all(checks.map((c) => c(own)));
    const failed = results.filter((r) => !r.ready);
    const result: Readiness = failed.length
      ? { ready: false, reason: failed.map((r) => r.reason).join('; ') }
      : { ready: true };
    if (!result.ready && (last?.ready ?? true)) log.warn({ reason: result.reason }, 'not ready');
    if (result.ready && last && !last.ready) log.info('ready again');
    last = result;
    return result;
  };
  return (signal) => flights.get('all', check, signal);
}
