import type { Logger } from '../log.js';
import type { Credential } from './credentials.js';
import { OpenStackError } from './errors.js';
import type { HttpClient, HttpResponse } from './http.js';
import { findEndpoint, type Keystone } from './keystone.js';
import { SharedFlights } from '../shared-flight.js';

/** Newest microversion this driver is written and tested against (Cinder 21 "Antelope" serves 3.70). */
export const WANTED_MICROVERSION = '3.70';
/** Oldest it can work with: attachments with os-complete (3.44). */
export const MINIMUM_MICROVERSION = '3.44';

const mv = (v: string) => {
  const [maj, min] = v.split('.').map(Number);
  return (maj ?? 0) * 1000 + (min ?? 0);
};
export const microversionAtLeast = (have: string, want: string) => mv(have) >= mv(want);

export interface CallOptions {
  body?: unknown;
  expect?: number[];
  signal?: AbortSignal;
  /** The kind of call, for the metrics: volume_create, snapshot_list, … */
  request?: string;
}

/**
 * Cinder calls made with one credential: token from Keystone, endpoint from its catalog,
 * microversion negotiated once per endpoint, and one retry after a 401 with a fresh token.
 */
export class CinderSession {
  /** Negotiated once per Cinder and kept; a failed negotiation is tried again by the next call. */
  private static readonly versions = new SharedFlights<string, string>({
    timeoutMs: 60_000,
    keepMs: Number.POSITIVE_INFINITY,
  });

  constructor(
    private readonly keystone: Keystone,
    private readonly http: HttpClient,
    readonly credential: Credential,
    private readonly log?: Logger,
  ) {}

  /** The project this credential's volumes live in. */
  async projectId(signal?: AbortSignal): Promise<string> {
    return (await this.keystone.session(this.credential, signal)).projectId;
  }

  async endpoint(signal?: AbortSignal): Promise<string> {
    const s = await this.keystone.session(this.credential, signal);
    return findEndpoint(s, ['block-storage', 'volumev3'], this.credential.interface, this.credential.region);
  }

  /** Cinder's unauthenticated versions document: the API root, above /v3 (which needs a token). */
  private async versionsUrl(signal?: AbortSignal): Promise<string> {
    const ep = await this.endpoint(signal);
    for (let at = ep.indexOf('/v3'); at >= 0; at = ep.indexOf('/v3', at + 1))
      if (at + 3 === ep.length || ep[at + 3] === '/') return ep.slice(0, at + 1);
    return ep;
  }

  /** Does Cinder answer right now? (Probe: a cheap, uncached request.) */
  async ping(signal?: AbortSignal): Promise<void> {
    await this.http.request('GET', await this.versionsUrl(signal), {
      service: 'Cinder',
      request: 'versions_get',
      signal,
      expect: [200, 300],
    });
  }

  /** The microversion used for every call: min(wanted, server's newest); refuses a Cinder older than 3.44. */
  async microversion(signal?: AbortSignal): Promise<string> {
    const root = await this.versionsUrl(signal);
    return CinderSession.versions.get(root, (own) => this.negotiate(root, own), signal);
  }

  private async negotiate(root: string, signal?: AbortSignal): Promise<string> {
    const res = await this.http.request<{ version?: VersionDoc; versions?: VersionDoc[] }>('GET', root, {
      service: 'Cinder',
      request: 'versions_get',
      signal,
      expect: [200, 300],
    });
    const docs = res.body.versions ?? (res.body.version ? [res.body.version] : []);
    const v3 = docs.find((d) => d.id?.startsWith('v3'));
    const max = v3?.version;
    if (!max)
      throw new OpenStackError(
        'unexpected',
        `Cinder at ${root} publishes no v3 microversions; is this the block-storage v3 API?`,
      );
    if (!microversionAtLeast(max, MINIMUM_MICROVERSION))
      throw new OpenStackError(
        'unexpected',
        `Cinder at ${root} serves up to microversion ${max}; this driver needs ${MINIMUM_MICROVERSION} (attachments API)`,
      );
    const chosen = microversionAtLeast(max, WANTED_MICROVERSION) ? WANTED_MICROVERSION : max;
    this.log?.info({ cinder: root, serverMax: max, using: chosen }, 'cinder microversion negotiated');
    return chosen;
  }

  /** One Cinder API call on a path under the project endpoint ("/volumes/…"). */
  async call<T = unknown>(method: string, path: string, o: CallOptions = {}): Promise<HttpResponse<T>> {
    for (let attempt = 1; ; attempt++) {
      const s = await this.keystone.session(this.credential, o.signal);
      const ep = findEndpoint(s, ['block-storage', 'volumev3'], this.credential.interface, this.credential.region);
      const version = await this.microversion(o.signal);
      try {
        return await this.http.request<T>(method, ep + path, {
          service: 'Cinder',
          request: o.request,
          body: o.body,
          expect: o.expect,
          signal: o.signal,
          headers: { 'X-Auth-Token': s.token, 'OpenStack-API-Version': `volume ${version}` },
        });
      } catch (e) {
        // A token revoked or expired early: fetch a new one once, then give up.
        if (e instanceof OpenStackError && e.kind === 'unauthenticated' && attempt === 1) {
          this.keystone.invalidate(this.credential);
          continue;
        }
        throw e;
      }
    }
  }
}

interface VersionDoc {
  id?: string;
  version?: string;
  min_version?: string;
}
