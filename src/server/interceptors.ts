import { randomUUID } from 'node:crypto';
import type { sendUnaryData, ServerUnaryCall, Metadata } from '@grpc/grpc-js';
import { sanitize, scrub, secretValuesOf, type Logger } from '../log.js';
import { CsiError, Status, statusName, toStatus } from './errors.js';
import type { OperationLocks } from './locks.js';
import type { Metrics } from './metrics.js';
import { requestProblem } from './size-limits.js';

/** No status message is longer: a long one (an echoed input, a service's page) would burden every hop. */
export const MAX_STATUS_MESSAGE = 1024;
const bounded = (m: string) => (m.length > MAX_STATUS_MESSAGE ? `${m.slice(0, MAX_STATUS_MESSAGE - 1)}…` : m);

/** What every RPC implementation receives besides its request. */
export interface RpcContext {
  method: string;
  requestId: string;
  log: Logger;
  /** When the CO stops waiting; undefined when it set no deadline. */
  deadline?: Date;
  /** Aborted when the CO cancels the call or the deadline passes. */
  signal: AbortSignal;
}

export type Handler<Req, Res> = (request: Req, ctx: RpcContext) => Promise<Res>;

/** One RPC as a service implements it, typed by its request and response (csi/service-specs.ts). */
export interface RpcSpec<Req, Res> {
  handler: Handler<Req, Res>;
  /** Lock keys for mutating RPCs (volume id, name, snapshot id); read-only RPCs take none. */
  lockKeys?: (request: Req) => (string | undefined)[];
}

/** Any RPC's spec, as the server registers them side by side (the types are the service's business). */
export type AnyRpcSpec = RpcSpec<never, unknown>;

export interface InterceptorDeps {
  log: Logger;
  metrics: Metrics;
  locks: OperationLocks;
}

/** The volume (or snapshot, or name) an RPC is about, for its log line. */
function subjectOf(req: Record<string, unknown>): string | undefined {
  for (const k of ['volume_id', 'snapshot_id', 'source_volume_id', 'name'])
    if (typeof req?.[k] === 'string' && req[k]) return req[k].slice(0, 128);
  return undefined;
}

function requestIdOf(md: Metadata): string {
  const given = md.get('x-request-id')[0] ?? md.get('csi.requestid')[0];
  return typeof given === 'string' && /^[\w.-]{1,64}$/.test(given) ? given : randomUUID().slice(0, 8);
}

function deadlineOf(call: ServerUnaryCall<unknown, unknown>): Date | undefined {
  const d = call.getDeadline();
  if (d instanceof Date) return d;
  return typeof d === 'number' && Number.isFinite(d) ? new Date(d) : undefined;
}

/**
 * Wrap one RPC implementation with what every RPC gets: a request id, per-volume locking, error →
 * status mapping with secrets scrubbed, one structured log line and metrics.
 */
export function intercept(service: string, method: string, spec: AnyRpcSpec, deps: InterceptorDeps) {
  const fullMethod = `/csi.v1.${service}/${method}`;
  return (
    call: ServerUnaryCall<Record<string, unknown> | undefined, unknown>,
    callback: sendUnaryData<unknown>,
  ): void => {
    const started = process.hrtime.bigint();
    const request = call.request ?? {};
    const requestId = requestIdOf(call.metadata);
    const subject = subjectOf(request);
    const bindings = { rpc: method, requestId, ...(subject ? { volumeId: subject } : {}) };
    const deadline = deadlineOf(call);
    // The child logger, the abort signal and its deadline timer cost more than a trivial RPC
    // itself: they are made only when the handler asks for them.
    let log: Logger | undefined;
    let controller: AbortController | undefined;
    let timer: NodeJS.Timeout | undefined;
    const ctx: RpcContext = {
      method,
      requestId,
      deadline,
      get log() {
        return (log ??= deps.log.child(bindings));
      },
      get signal() {
        if (!controller) {
          const c = (controller = new AbortController());
          if (deadline)
            timer = setTimeout(
              () => c.abort(new Error('deadline exceeded')),
              Math.max(0, deadline.getTime() - Date.now()),
            );
          call.on('cancelled', () => c.abort(new Error('cancelled by the caller')));
        }
        return controller.signal;
      },
    };
    const debug = deps.log.isLevelEnabled('debug');
    if (debug) deps.log.debug({ ...bindings, request: sanitize(request) }, 'request');

    // the spec's size limits before anything else: no oversized id reaches a lock, a log, Cinder or the host
    const refused = requestProblem(request);
    const keys = refused
      ? []
      : (spec.lockKeys?.(request as never) ?? []).filter((k): k is string => !!k).map((k) => `${service}/${k}`);
    const work = () =>
      refused ? Promise.reject(new CsiError(Status.INVALID_ARGUMENT, refused)) : spec.handler(request as never, ctx);
    const run = keys.length ? deps.locks.with(keys, method, work) : work();

    run.then(
      (response) => finish(Status.OK, undefined, response),
      (err: unknown) => {
        const { code, message } = toStatus(err);
        finish(code, bounded(scrub(message, secretValuesOf(request))), undefined, err);
      },
    );

    function finish(code: Status, message: string | undefined, response: unknown, err?: unknown) {
      if (timer) clearTimeout(timer);
      const seconds = Number(process.hrtime.bigint() - started) / 1e9;
      const codeName = statusName(code);
      deps.metrics.observe(fullMethod, codeName, seconds);
      if (code === Status.ABORTED) deps.metrics.aborted.inc({ method: fullMethod });
      const line = { ...bindings, code: codeName, durationMs: Math.round(seconds * 1000 * 10) / 10 };
      if (code === Status.OK) {
        deps.log.info(line, 'ok');
        if (debug) deps.log.debug({ ...bindings, response: sanitize(response) }, 'response');
        callback(null, response);
      } else {
        const level = code === Status.INTERNAL || code === Status.UNKNOWN ? 'error' : 'warn';
        const stack =
          code === Status.INTERNAL && err instanceof Error
            ? scrub(err.stack ?? '', secretValuesOf(request))
            : undefined;
        deps.log[level]({ ...line, error: message, ...(stack ? { stack } : {}) }, 'failed');
        callback({ code, details: message, message }, null);
      }
    }
  };
}
