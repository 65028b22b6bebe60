import type { Logger } from '../../log.js';
import { Cinder } from '../../openstack/cinder.js';
import { CinderSession } from '../../openstack/cinder-session.js';
import type { Connections } from '../../openstack/connections.js';
import { type Credential, CredentialError, credentialFingerprint, pickCredentialKeys } from '../../openstack/credentials.js';
import { CLOUD_KEY, credentialFromSecret, type SecretPolicy } from '../../openstack/secret-credential.js';
import { invalidArgument, unauthenticated } from '../../server/errors.js';
import { SharedFlights } from '../../shared-flight.js';

/** One Keystone project the controller acts for, with its Cinder and what it learned about it. */
export class Tenant {
  readonly cinder: Cinder;
  /** Cinder's availability zones, remembered for a minute (topology lookups on every CreateVolume). */
  private readonly zoneList = new SharedFlights<'zones', string[]>({ timeoutMs: 60_000, keepMs: 60_000 });

  constructor(
    session: CinderSession,
    /** Where the credential came from, for messages: never a secret value. */
    readonly source: string,
  ) {
    this.cinder = new Cinder(session);
  }

  projectId(signal?: AbortSignal): Promise<string> {
    return this.cinder.session.projectId(signal);
  }

  zones(signal?: AbortSignal): Promise<string[]> {
    return this.zoneList.get('zones', (own) => this.cinder.availabilityZones(own), signal);
  }
}

export interface TenantsOptions {
  /** HTTP pools and token caches, one per TLS setting. */
  connections: Connections;
  /** The config's default credential, when it has one. */
  credential?: Credential;
  /** What a request's Secret may be and inherit (it is never merged onto the default credential). */
  policy: SecretPolicy;
  /** Refuse requests that carry no credential in their secrets. */
  requireTenantCredentials: boolean;
  log?: Logger;
}

const MAX_CACHED = 256;

/** Which sidecar's Secret a request's secrets come from (external-resizer sends the expand Secret with ModifyVolume too). */
export type SecretRole = 'provisioner' | 'controller-publish' | 'controller-expand' | 'snapshotter' | 'group-snapshotter';

/**
 * Which tenant a request acts for: the whole credential in its `secrets` (or a configured cloud it
 * names), or the config's default when it carries none. One Tenant — and so one token and one Cinder
 * session — per credential fingerprint.
 */
export class Tenants {
  private readonly cache = new Map<string, Tenant>();

  constructor(private readonly o: TenantsOptions) {}

  /** Whether RPCs that carry no secrets (ListVolumes, ControllerGetVolume, GetCapacity) can work. */
  get hasDefault(): boolean {
    return !!this.o.credential && !this.o.requireTenantCredentials;
  }

  /**
   * The tenant of a request's secrets. `role` names the Secret the CO took them from (the
   * StorageClass `csi.storage.k8s.io/<role>-secret-name` parameter), so a refusal names which
   * Secret to fix — never a value from it.
   */
  forRequest(secrets: Record<string, string> | undefined, role: SecretRole): Tenant {
    const given = { ...pickCredentialKeys(secrets), ...(secrets?.[CLOUD_KEY] !== undefined ? { [CLOUD_KEY]: secrets[CLOUD_KEY] } : {}) };
    const which = `the ${role} secret (csi.storage.k8s.io/${role}-secret-name)`;
    if (!Object.keys(given).length) return this.defaultTenant(`this request carries no credential in ${which}`);
    const keys = Object.keys(given).sort().join(', ');
    let credential: Credential;
    try {
      credential = credentialFromSecret(given, this.o.policy, which);
    } catch (e) {
      if (e instanceof CredentialError) throw invalidArgument(`${e.message} (keys given: ${keys})`);
      throw e;
    }
    return this.tenant(credential, `${which}, keys ${keys}`);
  }

  /** The configured credential; with none, or with --require-tenant-credentials, UNAUTHENTICATED. */
  defaultTenant(why = 'this RPC carries no secrets'): Tenant {
    if (this.o.requireTenantCredentials)
      throw unauthenticated(`${why}, and the driver runs with --require-tenant-credentials: set the StorageClass csi.storage.k8s.io/*-secret-name/namespace parameters to the tenant's credential Secret`);
    if (!this.o.credential) throw unauthenticated(`${why}, and the driver has no default credential (give --config with a cloud.conf or clouds.yaml)`);
    return this.tenant(this.o.credential, 'the driver\'s configured credential (--config)');
  }

  private tenant(credential: Credential, source: string): Tenant {
    // The source is part of the key so messages say where this request's credential came from.
    const key = `${credentialFingerprint(credential)} ${source}`;
    let t = this.cache.get(key);
    if (!t) {
      const { http, keystone } = this.o.connections.for(credential);
      t = new Tenant(new CinderSession(keystone, http, credential, this.o.log), source);
      if (this.cache.size >= MAX_CACHED) this.cache.delete(this.cache.keys().next().value!);
      this.cache.set(key, t);
    }
    return t;
  }
}
