import { CephError, type CephErrorKind } from '../ceph/cli.js';
import { NodeError, type NodeErrorKind } from '../node/errors.js';
import { OpenStackError, type OpenStackErrorKind } from '../openstack/errors.js';
import { CsiError, Status } from '../server/errors.js';
import type { RpcContext } from '../server/interceptors.js';

/**
 * The one seam between the domains and CSI's status codes, for every service: the code of each kind of
 * node, OpenStack or Ceph failure (where the RPC gives it no more specific meaning), and one rule for calls
 * the CO's deadline or cancel cut short.
 */
const CODE_OF: Record<NodeErrorKind | OpenStackErrorKind | CephErrorKind, Status> = {
  'invalid-argument': Status.INVALID_ARGUMENT,
  'bad-request': Status.INVALID_ARGUMENT,
  unauthenticated: Status.UNAUTHENTICATED,
  forbidden: Status.PERMISSION_DENIED,
  'permission-denied': Status.PERMISSION_DENIED,
  'not-found': Status.NOT_FOUND,
  'already-exists': Status.ALREADY_EXISTS,
  conflict: Status.FAILED_PRECONDITION,
  'failed-precondition': Status.FAILED_PRECONDITION,
  'out-of-range': Status.OUT_OF_RANGE,
  'over-quota': Status.RESOURCE_EXHAUSTED,
  'too-large': Status.RESOURCE_EXHAUSTED,
  unavailable: Status.UNAVAILABLE,
  aborted: Status.ABORTED,
  timeout: Status.DEADLINE_EXCEEDED,
  internal: Status.INTERNAL,
  unexpected: Status.INTERNAL,
};

/** What toCsiError needs of the call: which RPC, and whether the CO stopped waiting. */
export type CallState = Pick<RpcContext, 'method' | 'signal'>;

/**
 * Anything an RPC threw → the error the CO gets. A CsiError stands as it is. A call the CO's deadline
 * or cancel cut short is DEADLINE_EXCEEDED whatever step it was in, never INTERNAL: every operation is
 * idempotent, so the retry finishes (or undoes) what was left. A domain error gets its kind's code, with
 * its service's own words; `source` says whose credential a refusal was about. Anything else is a bug
 * (left for the interceptor: INTERNAL).
 */
export function toCsiError(e: unknown, call: CallState | undefined, source?: string): unknown {
  if (e instanceof CsiError) return e;
  if (call?.signal.aborted) {
    const why = (call.signal.reason as Error | undefined)?.message ?? 'cancelled';
    return new CsiError(
      Status.DEADLINE_EXCEEDED,
      `${call.method} was cut short (${why}); it is safe to call again: the retry finishes or undoes what was left`,
    );
  }
  if (e instanceof NodeError || e instanceof OpenStackError || e instanceof CephError) {
    const code = CODE_OF[e.kind];
    const who = (code === Status.UNAUTHENTICATED || code === Status.PERMISSION_DENIED) && source ? `${source}: ` : '';
    return new CsiError(code, who + e.message);
  }
  return e;
}

/** Run one RPC's domain work; whatever it throws comes out as its CSI error. */
export async function asCsi<T>(call: CallState, fn: () => Promise<T>, source?: () => string | undefined): Promise<T> {
  try {
    return await fn();
  } catch (e) {
    throw toCsiError(e, call, source?.());
  }
}
