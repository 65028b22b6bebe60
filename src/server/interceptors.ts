import { randomUUID } from 'node:crypto';
import type { sendUnaryData, ServerUnaryCall, ServerWritableStream, Metadata } from '@grpc/grpc-js';
import { sanitize, scrub, secretValuesOf, type Logger } from '../log.js';
import { CsiError, Status, statusName, toStatus } from './errors.js';
import { operationKey, type OperationLocks } from './locks.js';
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

/** One server-streaming RPC: the messages it sends, produced as the client reads them. */
export interface StreamSpec<Req, Res> {
  stream: (request: Req, ctx: RpcContext) => AsyncIterable<Res>;
}

/** Any RPC's spec, as the server registers them side by side (the types are the service's business). */
export type AnyRpcSpec = RpcSpec<never, unknown>;
export type AnyStreamSpec = StreamSpec<never, unknown>;

export interface InterceptorDeps {
  log: Logger;
  metrics: Metrics;
  locks: OperationLocks;
}

/** The volume (or snapshot, or name) an RPC is about, for its log line. */
function subjectOf(req: Record<string, unknown>): string | undefined {
  for (const k of ['volume_id', 'snapshot_id', 'source_volume_id', 'target_snapshot_id', 'name'])
    if (typeof req?.[k] === 'string' && req[k]) return req[k].slice(0, 128);
  return undefined;
}

function requestIdOf(md: Metadata): string {
  const given = md.get('x-request-id')[0] ?? md.get('csi.requestid')[0];
  return typeof given === 'string' && /^[\w.-]{1,64}$/.test(given) ? given : randomUUID().slice(0, 8);
}

function deadlineOf(call: { getDeadline(): Date | number }): Date | undefined {
  const d = call.getDeadline();
  if (d instanceof Date) return d;
  return typeof d === 'number' && Number.isFinite(d) ? new Date(d) : undefined;
}

/** One call as every RPC sees it: its context, and how it ends (one log line, metrics, secrets scrubbed). */
interface OpenCall {
  request: Record<string, unknown>;
  ctx: RpcContext;
  /** The spec's size limits, checked first: no oversized id reaches a lock, a log, Cinder or the host. */
  refused?: string;
  /** Log and count the end of the call; returns the status the caller sends. */
  finish(err: unknown, response?: unknown): { code: Status; message?: string };
}

function openCall(
  service: string,
  method: string,
  call: ServerUnaryCall<Record<string, unknown> | undefined, unknown> | ServerWritableStream<unknown, unknown>,
  deps: InterceptorDeps,
): OpenCall {
  const fullMethod = `/csi.v1.${service}/${method}`;
  const started = process.hrtime.bigint();
  const request = (call.request ?? {}) as Record<string, unknown>;
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

  const finish = (err: unknown, response?: unknown) => {
    if (timer) clearTimeout(timer);
    let code = Status.OK;
    let message: string | undefined;
    if (err !== undefined) {
      const s = toStatus(err);
      code = s.code;
      message = bounded(scrub(s.message, secretValuesOf(request)));
    }
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    const codeName = statusName(code);
    deps.metrics.observe(fullMethod, codeName, seconds);
    if (code === Status.ABORTED) deps.metrics.aborted.inc({ method: fullMethod });
    const line = { ...bindings, code: codeName, durationMs: Math.round(seconds * 1000 * 10) / 10 };
    if (code === Status.OK) {
      deps.log.info(line, 'ok');
      if (debug && response !== undefined) deps.log.debug({ ...bindings, response: sanitize(response) }, 'response');
    } else {
      const level = code === Status.INTERNAL || code === Status.UNKNOWN ? 'error' : 'warn';
      const stack =
        code === Status.INTERNAL && err instanceof Error ? scrub(err.stack ?? '', secretValuesOf(request)) : undefined;
      deps.log[level]({ ...line, error: message, ...(stack ? { stack } : {}) }, 'failed');
    }
    return { code, message };
  };
  return { request, ctx, refused: requestProblem(request), finish };
}

/**
 * Wrap one RPC implementation with what every RPC gets: a request id, per-volume locking, error →
 * status mapping with secrets scrubbed, one structured log line and metrics.
 */
export function intercept(service: string, method: string, spec: AnyRpcSpec, deps: InterceptorDeps) {
  return (
    call: ServerUnaryCall<Record<string, unknown> | undefined, unknown>,
    callback: sendUnaryData<unknown>,
  ): void => {
    const { request, ctx, refused, finish } = openCall(service, method, call, deps);
    const keys = refused
      ? []
      : (spec.lockKeys?.(request as never) ?? []).filter((k): k is string => !!k).map((k) => operationKey(service, k));
    const work = () =>
      refused ? Promise.reject(new CsiError(Status.INVALID_ARGUMENT, refused)) : spec.handler(request as never, ctx);
    const run = keys.length ? deps.locks.with(keys, method, work) : work();
    run.then(
      (response) => {
        finish(undefined, response);
        callback(null, response);
      },
      (err: unknown) => {
        const { code, message } = finish(err ?? new Error('rejected without a reason'));
        callback({ code, details: message, message }, null);
      },
    );
  };
}

/**
 * The same for a server-streaming RPC: each message the implementation yields is written as the
 * client reads (a slow reader pauses the implementation, a cancel aborts `ctx.signal` and ends it), and
 * the stream ends with OK or with the first error's status. Streams take no locks: they only read.
 */
export function interceptStream(service: string, method: string, spec: AnyStreamSpec, deps: InterceptorDeps) {
  return (call: ServerWritableStream<Record<string, unknown> | undefined, unknown>): Promise<void> => {
    const { request, ctx, refused, finish } = openCall(service, method, call, deps);
    const pump = async () => {
      if (refused) throw new CsiError(Status.INVALID_ARGUMENT, refused);
      let sent = 0;
      for await (const message of spec.stream(request as never, ctx)) {
        if (call.cancelled) return sent;
        sent++;
        if (!call.write(message)) await drained(call, ctx.signal);
      }
      return sent;
    };
    // a stream the client walked away from ends there, whatever the work under it said: logged and counted so
    const cancelled = () => new CsiError(Status.CANCELLED, 'the client cancelled the stream');
    return pump().then(
      (sent) => {
        if (call.cancelled) return void finish(cancelled());
        finish(undefined);
        ctx.log.debug({ messages: sent }, 'stream sent');
        call.end();
      },
      (err: unknown) => {
        if (call.cancelled) return void finish(cancelled());
        const { code, message } = finish(err ?? new Error('rejected without a reason'));
        call.emit('error', { code, details: message, message });
      },
    );
  };
}

/** Until the client has taken what is buffered (or the call ends). */
function drained(call: ServerWritableStream<unknown, unknown>, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    const done = () => {
      call.off('drain', done);
      signal.removeEventListener('abort', done);
      resolve();
    };
    call.once('drain', done);
    signal.addEventListener('abort', done, { once: true });
  });
}
