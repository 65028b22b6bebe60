import { type CsiError, failedPrecondition, invalidArgument, notFound } from '../../server/errors.js';
import type { RpcContext } from '../../server/interceptors.js';
import { splitCloudId } from './cloud-ids.js';
import { asCsi, toCsiError } from '../status.js';
import type { SecretRole, Tenant, Tenants } from './tenants.js';

/**
 * What an id naming a cloud the driver does not know means for an RPC: NOT_FOUND, or (deletes) a refusal that keeps
 * the object.
 */
export type UnknownCloud = 'not-found' | 'refuse';

const UNKNOWN: Record<UnknownCloud, (m: string) => CsiError> = {
  'not-found': notFound,
  // a delete of an object in a cloud the driver lost from its config must not report it gone: it is not
  refuse: (m) => failedPrecondition(`${m}; it is left as it is until the cloud is configured again`),
};

/**
 * How a controller RPC finds whom it acts for: the cloud — from the StorageClass parameter `cloud` for
 * what is created, from the ids for what exists — and the tenant of the request's Secret in it.
 * Whatever goes wrong comes out as its CSI error (asTenant).
 */
/**
 * Run `fn` as the tenant `pick` chooses; whatever either throws comes out as its CSI error, naming the tenant's
 * credential where Keystone refused it.
 */
function asTenant<R>(ctx: RpcContext, pick: () => Promise<Tenant>, fn: (t: Tenant) => Promise<R>): Promise<R> {
  let tenant: Tenant | undefined;
  return asCsi(
    ctx,
    async () => {
      tenant = await pick();
      return fn(tenant);
    },
    () => tenant?.source,
  );
}

export class TenantScope {
  constructor(private readonly tenants: Tenants) {}

  /**
   * Act in the cloud a StorageClass parameter names ('' or absent: the default); an unknown name is INVALID_ARGUMENT.
   */
  inCloud<R>(
    cloud: string | undefined,
    role: SecretRole,
    secrets: Record<string, string> | undefined,
    ctx: RpcContext,
    fn: (t: Tenant) => Promise<R>,
  ): Promise<R> {
    return asTenant(
      ctx,
      async () => {
        const name = this.tenants.cloudName(cloud);
        // the operator's StorageClass is wrong; the message names no configured cloud (tenants read PVC events)
        if (name === undefined)
          throw invalidArgument('parameter "cloud" names no cloud this driver is configured with (see its --config)');
        return this.tenants.forRequest(secrets, role, name, ctx.signal);
      },
      fn,
    );
  }

  /**
   * Act on existing volumes or snapshots named by CSI ids: in their cloud (all of them in one; empty ids
   * are left for the RPC to refuse), with the ids as that cloud's Cinder knows them, in the same order.
   */
  byIds<R>(
    ids: (string | undefined)[],
    role: SecretRole,
    secrets: Record<string, string> | undefined,
    ctx: RpcContext,
    unknown: UnknownCloud,
    fn: (t: Tenant, local: string[]) => Promise<R>,
  ): Promise<R> {
    const { pick, local } = this.ofIds(ids, role, secrets, ctx, unknown);
    return asTenant(ctx, pick, (t) => fn(t, local));
  }

  /** byIds for a streaming RPC: every message comes from `fn`, every error as its CSI error. */
  async *streamByIds<R>(
    ids: (string | undefined)[],
    role: SecretRole,
    secrets: Record<string, string> | undefined,
    ctx: RpcContext,
    fn: (t: Tenant, local: string[]) => AsyncIterable<R>,
  ): AsyncGenerator<R> {
    const { pick, local } = this.ofIds(ids, role, secrets, ctx, 'not-found');
    let tenant: Tenant | undefined;
    try {
      tenant = await pick();
      yield* fn(tenant, local);
    } catch (e) {
      throw toCsiError(e, ctx, tenant?.source);
    }
  }

  /**
   * The tenant of the cloud the ids name (all of them in one; empty ids are left for the RPC to refuse), and
   * the ids as that cloud's Cinder knows them.
   */
  private ofIds(
    ids: (string | undefined)[],
    role: SecretRole,
    secrets: Record<string, string> | undefined,
    ctx: RpcContext,
    unknown: UnknownCloud,
  ): { pick: () => Promise<Tenant>; local: string[] } {
    const refs = ids.map(splitCloudId);
    const pick = async () => {
      const clouds = [...new Set(refs.filter((r) => r.id).map((r) => r.cloud))];
      if (clouds.length > 1)
        throw invalidArgument(
          'the ids of this request name objects in different clouds; one request acts in one cloud',
        );
      const name = this.tenants.cloudName(clouds[0]);
      if (name === undefined)
        throw UNKNOWN[unknown](
          `${ids.find((i) => i?.startsWith(`${clouds[0]}:`))?.slice(0, 128)} names a cloud this driver is not configured with`,
        );
      return this.tenants.forRequest(secrets, role, name, ctx.signal);
    };
    return { pick, local: refs.map((r) => r.id) };
  }
}
