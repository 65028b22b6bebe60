import type { Logger } from '../../log.js';
import { Lru } from '../../lru.js';
import { Cinder } from '../../openstack/cinder.js';
import { CinderSession } from '../../openstack/cinder-session.js';
import type { Connections } from '../../openstack/connections.js';
import {
  type Credential,
  CredentialError,
  credentialFingerprint,
  meantKey,
  pickCredentialKeys,
} from '../../openstack/credentials.js';
import { OpenStackError } from '../../openstack/errors.js';
import { CLOUD_KEY, type Cloud, credentialFromSecret, type SecretPolicy } from '../../openstack/secret-credential.js';
import { invalidArgument, unauthenticated } from '../../server/errors.js';
import { SharedFlights } from '../../shared-flight.js';
import { toCsiError } from '../status.js';
import { joinCloudId } from './cloud-ids.js';

/** One Keystone project in one cloud the controller acts for, with its Cinder and what it learned about it. */
export class Tenant {
  readonly cinder: Cinder;
  /** Cinder's availability zones, remembered for a minute (topology lookups on every CreateVolume). */
  private readonly zoneList = new SharedFlights<'zones', string[]>({ timeoutMs: 60_000, keepMs: 60_000 });

  constructor(
    session: CinderSession,
    /** Where the credential came from, for messages: never a secret value. */
    readonly source: string,
    /** The configured cloud it acts in ('' for the default one). */
    readonly cloud: string,
  ) {
    this.cinder = new Cinder(session);
  }

  projectId(signal?: AbortSignal): Promise<string> {
    return this.cinder.session.projectId(signal);
  }

  zones(signal?: AbortSignal): Promise<string[]> {
    return this.zoneList.get('zones', (own) => this.cinder.availabilityZones(own), signal);
  }

  /** The CSI id of one of this tenant's volumes or snapshots (see cloud-ids.ts). */
  csiId(cinderId: string): string {
    return joinCloudId(this.cloud, cinderId);
  }
}

/** The clouds the operator configured: the default one, its name in the config, and the others by name. */
export interface CloudDirectory {
  default: Cloud;
  /** The default cloud's own name ('' for cloud.conf's [Global]): naming it is naming the default. */
  defaultName: string;
  named: ReadonlyMap<string, Cloud>;
}

export interface TenantsOptions {
  /** HTTP pools and token caches, one per TLS setting. */
  connections: Connections;
  clouds: CloudDirectory;
  /** What a request's Secret may be and inherit (it is never merged onto an operator credential). */
  policy: SecretPolicy;
  /** --allow-default-credential: a request with no secrets at all acts with the operator's credential of its cloud. */
  allowDefaultCredential: boolean;
  log?: Logger;
}

/** Tenants kept at once (one per credential and cloud in use); the least recently used goes first. */
const MAX_CACHED = 256;
/** Keys a refusal lists of those the driver did not read, at most, each cut to this many characters. */
const MAX_LISTED_KEYS = 6;
const MAX_KEY_SHOWN = 40;

/**
 * Which sidecar's Secret a request's secrets come from (external-resizer sends the expand Secret with ModifyVolume
 * too).
 */
export type SecretRole =
  'provisioner' | 'controller-publish' | 'controller-expand' | 'snapshotter' | 'group-snapshotter';

/** A Secret's key name as a message may show it: printable, bounded (a key is the tenant's text too). */
const shownKey = (k: string) => {
  let out = '';
  for (const c of k.slice(0, MAX_KEY_SHOWN)) out += c >= ' ' && c <= '~' ? c : '?';
  return k.length > MAX_KEY_SHOWN ? `${out}…` : out;
};

/** The keys of a Secret the driver did not read, each with what it most likely meant. */
function unreadKeys(secrets: Record<string, string>, read: ReadonlySet<string>): string | undefined {
  const unread = Object.keys(secrets).filter((k) => !read.has(k));
  if (!unread.length) return undefined;
  const described = unread.slice(0, MAX_LISTED_KEYS).map((k) => {
    if (k === 'userKey' || k === 'userID') return `${k} (a Ceph key of the node-stage Secret, no Keystone credential)`;
    const meant = meantKey(k);
    return meant ? `${shownKey(k)} (write ${meant})` : shownKey(k);
  });
  const more = unread.length > MAX_LISTED_KEYS ? ` and ${unread.length - MAX_LISTED_KEYS} more` : '';
  return `keys the driver does not read: ${described.join(', ')}${more}`;
}

/**
 * Which tenant a request acts for, in which cloud: the whole credential in its `secrets`, at the
 * connection of the cloud the operator chose (the StorageClass's, carried in the volume's id); or, for
 * a request with no secrets at all and only with --allow-default-credential, the operator's credential
 * of that cloud. A Secret with anything in it is a credential or refused — never replaced by the
 * operator's. One Tenant (so one Cinder session) per credential and cloud, in a bounded LRU; a Secret's
 * region the catalog does not have is refused before a Tenant is kept for it.
 */
export class Tenants {
  private readonly cache = new Lru<string, Tenant>(MAX_CACHED);

  constructor(private readonly o: TenantsOptions) {}

  /** Whether RPCs that carry no secrets (ListVolumes, ControllerGetVolume, GetCapacity) can work. */
  get hasDefault(): boolean {
    return !!this.o.clouds.default.credential && this.o.allowDefaultCredential;
  }

  /** The canonical name of a configured cloud ('' for the default), or undefined when none has that name. */
  cloudName(name: string | undefined): string | undefined {
    if (!name || name === this.o.clouds.defaultName) return '';
    return this.o.clouds.named.has(name) ? name : undefined;
  }

  private cloud(name: string): Cloud {
    const c = name ? this.o.clouds.named.get(name) : this.o.clouds.default;
    if (!c) throw new Error(`no configured cloud "${name}": callers check cloudName first`);
    return c;
  }

  /**
   * The tenant of a request's secrets in a configured cloud (`cloud` from cloudName). `role` names the
   * Secret the CO took them from (the StorageClass `csi.storage.k8s.io/<role>-secret-name` parameter),
   * so a refusal names which Secret to fix — never a value from it.
   */
  async forRequest(
    secrets: Record<string, string> | undefined,
    role: SecretRole,
    cloud = '',
    signal?: AbortSignal,
  ): Promise<Tenant> {
    const which = `the ${role} secret (csi.storage.k8s.io/${role}-secret-name)`;
    if (!secrets || !Object.keys(secrets).length)
      return this.defaultTenant(`this request carries no ${role} secret`, cloud);
    const given = {
      ...pickCredentialKeys(secrets),
      ...(secrets[CLOUD_KEY] !== undefined ? { [CLOUD_KEY]: secrets[CLOUD_KEY] } : {}),
    };
    const keys = Object.keys(given).sort().join(', ');
    let credential: Credential;
    try {
      credential = credentialFromSecret(given, this.o.policy, this.cloud(cloud).connection, which);
    } catch (e) {
      if (!(e instanceof CredentialError)) throw e;
      const unread = unreadKeys(secrets, new Set(Object.keys(given)));
      throw invalidArgument(`${e.message}${keys ? ` (keys given: ${keys})` : ''}${unread ? `; ${unread}` : ''}`);
    }
    return this.tenant(credential, `${which}, keys ${keys}`, cloud, secrets.region !== undefined, signal);
  }

  /**
   * The operator's credential of a cloud, for a request that carries no secrets — only with
   * --allow-default-credential; otherwise (or with no credential for that cloud) UNAUTHENTICATED.
   */
  async defaultTenant(why = 'this RPC carries no secrets', cloud = ''): Promise<Tenant> {
    if (!this.o.allowDefaultCredential)
      throw unauthenticated(
        `${why}, and the driver acts only with tenant credentials: set the StorageClass csi.storage.k8s.io/*-secret-name/namespace parameters to the tenant's credential Secret (or start the driver with --allow-default-credential)`,
      );
    const credential = this.cloud(cloud).credential;
    if (!credential)
      throw unauthenticated(
        `${why}, and the driver has no credential of its own for ${cloud ? "the volume's cloud" : 'its default cloud'} (give one in --config)`,
      );
    return this.tenant(credential, "the driver's configured credential (--config)", cloud, false);
  }

  private async tenant(
    credential: Credential,
    source: string,
    cloud: string,
    checkRegion: boolean,
    signal?: AbortSignal,
  ): Promise<Tenant> {
    // The source is part of the key so messages say where this request's credential came from.
    const key = `${credentialFingerprint(credential)} ${cloud} ${source}`;
    const cached = this.cache.get(key);
    if (cached) return cached;
    const { http, keystone } = this.o.connections.for(credential);
    const session = new CinderSession(keystone, http, credential, this.o.log);
    if (checkRegion) {
      // a region Keystone never sees: checked against the catalog before anything is kept for it
      try {
        await session.endpoint(signal);
      } catch (e) {
        if (e instanceof OpenStackError && e.kind === 'not-found')
          throw invalidArgument(`${source}: region: the Keystone catalog has no block-storage endpoint in it`);
        throw toCsiError(e, undefined, source); // Keystone's refusal names the Secret, as any later one does
      }
    }
    const t = new Tenant(session, source, cloud);
    this.cache.set(key, t);
    return t;
  }
}
