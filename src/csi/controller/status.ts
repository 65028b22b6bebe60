import { OpenStackError, type OpenStackErrorKind } from '../../openstack/errors.js';
import { CsiError, Status } from '../../server/errors.js';
import type { Tenant } from './tenants.js';

/** The CSI code for each kind of OpenStack failure, where the RPC gives it no more specific meaning. */
const CODE_FOR_KIND: Record<OpenStackErrorKind, Status> = {
  'bad-request': Status.INVALID_ARGUMENT,
  unauthenticated: Status.UNAUTHENTICATED,
  forbidden: Status.PERMISSION_DENIED,
  'not-found': Status.NOT_FOUND,
  conflict: Status.FAILED_PRECONDITION,
  'over-quota': Status.RESOURCE_EXHAUSTED,
  'too-large': Status.RESOURCE_EXHAUSTED,
  unavailable: Status.UNAVAILABLE,
  timeout: Status.DEADLINE_EXCEEDED,
  unexpected: Status.INTERNAL,
};

/**
 * Anything a controller RPC threw → a CsiError with the code the spec names, keeping Cinder's or
 * Keystone's own words. `tenantSource` says where the credential came from when Keystone refused it.
 */
export function toCsiError(e: unknown, signal: AbortSignal | undefined, tenantSource?: string): unknown {
  if (e instanceof CsiError) return e;
  if (e instanceof OpenStackError) {
    const code = CODE_FOR_KIND[e.kind];
    const who = (code === Status.UNAUTHENTICATED || code === Status.PERMISSION_DENIED) && tenantSource ? `${tenantSource}: ` : '';
    return new CsiError(code, who + e.message);
  }
  // The HTTP client rethrows the abort reason when the CO's deadline passes or it cancels.
  if (signal?.aborted)
    return new CsiError(Status.DEADLINE_EXCEEDED, `the call's deadline passed or it was cancelled (${(e as Error)?.message ?? e}); the operation may still finish, retry to see`);
  return e;
}

/** Run `fn` as the tenant `pick` chooses; whatever either throws comes out as its CSI error. */
export async function asTenant<R>(signal: AbortSignal, pick: () => Promise<Tenant>, fn: (t: Tenant) => Promise<R>): Promise<R> {
  let tenant: Tenant | undefined;
  try {
    tenant = await pick();
    return await fn(tenant);
  } catch (e) {
    throw toCsiError(e, signal, tenant?.source);
  }
}
