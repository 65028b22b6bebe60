import { readFileSync } from 'node:fs';
import { setTimeout as sleep } from 'node:timers/promises';
import { Agent, errors as undiciErrors, request, type Dispatcher } from 'undici';
import type { Logger } from '../log.js';
import { MAX_ERROR_BODY, OpenStackError, kindForStatus, openStackMessage } from './errors.js';

export interface HttpResponse<T = unknown> {
  status: number;
  headers: Record<string, string | string[] | undefined>;
  body: T;
}

export interface RequestOptions {
  headers?: Record<string, string>;
  body?: unknown;
  signal?: AbortSignal;
  /** Statuses that count as success; others throw an OpenStackError. */
  expect?: number[];
  /** Who is asked, for messages: "Keystone", "Cinder". */
  service: string;
  /** The kind of call, for the metrics: token_create, volume_get, … */
  request?: string;
  /**
   * Safe to send twice even when the first may have arrived (a Keystone token request): retried after
   * a connection reset too. Servers that close idle keep-alive connections (uwsgi) cause those resets.
   */
  idempotent?: boolean;
}

export interface HttpClientOptions {
  caFile?: string;
  /** PEM certificates to trust, given as text (a tenant Secret's); wins over caFile. */
  caPem?: string;
  tlsInsecure?: boolean;
  /** Attempts for one request, the first included. */
  attempts?: number;
  /** Per-attempt timeout for headers and body. */
  timeoutMs?: number;
  log?: Logger;
  /** Counts every HTTP request sent (benchmarks count API calls with it). */
  onRequest?: (method: string, url: string) => void;
  /** Told of every call's outcome, retries included (the OpenStack API metrics). */
  observe?: ApiObserver;
}

/** One API call's outcome: service ("keystone", "cinder"), kind of call, seconds, whether it failed. */
export type ApiObserver = (service: string, request: string, seconds: number, failed: boolean) => void;

/** Connection failures where the request never reached the service: safe to retry any method. */
const NOT_SENT = new Set([
  'ECONNREFUSED',
  'ENOTFOUND',
  'EAI_AGAIN',
  'EHOSTUNREACH',
  'ENETUNREACH',
  'UND_ERR_CONNECT_TIMEOUT',
]);
/** Failures after the request may have been sent: retried only for idempotent methods. */
const MAYBE_SENT = new Set([
  'ECONNRESET',
  'EPIPE',
  'UND_ERR_SOCKET',
  'UND_ERR_CLOSED',
  'UND_ERR_HEADERS_TIMEOUT',
  'UND_ERR_BODY_TIMEOUT',
]);
const IDEMPOTENT = new Set(['GET', 'HEAD', 'PUT', 'DELETE', 'OPTIONS']);

function errorCode(e: unknown): string | undefined {
  const err = e as { code?: string; cause?: { code?: string } };
  return err?.code && err.code !== 'UND_ERR' ? err.code : (err?.cause?.code ?? err?.code);
}

/**
 * One pooled HTTP client per trust setting (CA file, insecure), with retries: backoff with full
 * jitter on connection errors, 502/503/504 and 429 (Retry-After honoured), never on other 4xx.
 * A POST is retried only when the service cannot have acted on it (refused connection, 429, 503).
 */
export class HttpClient {
  private readonly dispatcher: Dispatcher;
  private readonly attempts: number;
  private readonly timeoutMs: number;

  constructor(private readonly opts: HttpClientOptions = {}) {
    let ca = opts.caPem;
    if (!ca && opts.caFile) {
      try {
        ca = readFileSync(opts.caFile, 'utf8');
      } catch (e) {
        throw new OpenStackError(
          'bad-request',
          `cannot read ca-file ${opts.caFile}: ${(e as NodeJS.ErrnoException).code ?? e}`,
        );
      }
    }
    this.dispatcher = new Agent({
      connections: 32,
      keepAliveTimeout: 30_000,
      connect: { ...(ca ? { ca } : {}), rejectUnauthorized: !opts.tlsInsecure, timeout: 10_000 },
    });
    this.attempts = opts.attempts ?? 6;
    this.timeoutMs = opts.timeoutMs ?? 60_000;
  }

  async request<T = unknown>(method: string, url: string, o: RequestOptions): Promise<HttpResponse<T>> {
    const observe = this.opts.observe;
    if (!observe) return this.send<T>(method, url, o);
    const started = performance.now();
    const done = (failed: boolean) =>
      observe(o.service.toLowerCase(), o.request ?? 'other', (performance.now() - started) / 1000, failed);
    try {
      const r = await this.send<T>(method, url, o);
      done(false);
      return r;
    } catch (e) {
      done(true);
      throw e;
    }
  }

  private async send<T>(method: string, url: string, o: RequestOptions): Promise<HttpResponse<T>> {
    const expect = o.expect ?? [200, 201, 202, 204];
    for (let attempt = 1; ; attempt++) {
      o.signal?.throwIfAborted();
      let retryIn: number | undefined;
      let failure: OpenStackError;
      try {
        this.opts.onRequest?.(method, url);
        const res = await request(url, {
          method: method,
          dispatcher: this.dispatcher,
          headers: {
            accept: 'application/json',
            ...(o.body !== undefined ? { 'content-type': 'application/json' } : {}),
            ...o.headers,
          },
          body: o.body === undefined ? undefined : JSON.stringify(o.body),
          signal: o.signal,
          headersTimeout: this.timeoutMs,
          bodyTimeout: this.timeoutMs,
        });
        if (expect.includes(res.statusCode)) {
          const text = await readBounded(res.body, MAX_BODY_BYTES);
          if (text === undefined) {
            failure = new OpenStackError(
              'unexpected',
              `${o.service}: answered more than ${MAX_BODY_BYTES >> 20} MiB on ${method} ${redactUrl(url)}`,
              res.statusCode,
            );
            throw failure;
          }
          const body = (
            text && /json/.test(String(res.headers['content-type'] ?? '').slice(0, 200)) ? JSON.parse(text) : text
          ) as T;
          return { status: res.statusCode, headers: res.headers, body };
        }
        // an error's body is read only as far as its message can be: the rest is never waited for
        const message =
          openStackMessage((await readBounded(res.body, MAX_ERROR_BODY, true)) ?? '') || `HTTP ${res.statusCode}`;
        failure = new OpenStackError(
          kindForStatus(res.statusCode, message),
          `${o.service}: ${message} (HTTP ${res.statusCode} on ${method} ${redactUrl(url)})`,
          res.statusCode,
        );
        const retriable =
          res.statusCode === 429 ||
          res.statusCode === 503 ||
          ((res.statusCode === 502 || res.statusCode === 504) && IDEMPOTENT.has(method));
        if (retriable) retryIn = retryAfterMs(res.headers['retry-after']) ?? this.backoff(attempt);
      } catch (e) {
        if (o.signal?.aborted)
          throw o.signal.reason instanceof Error
            ? o.signal.reason
            : new OpenStackError('timeout', `${o.service}: request cancelled`);
        if (e instanceof OpenStackError) throw e;
        if (e instanceof SyntaxError)
          throw new OpenStackError(
            'unexpected',
            `${o.service}: answered with invalid JSON on ${method} ${redactUrl(url)}`,
          );
        const code = errorCode(e);
        const timeout = e instanceof undiciErrors.HeadersTimeoutError || e instanceof undiciErrors.BodyTimeoutError;
        failure = new OpenStackError(
          timeout ? 'timeout' : 'unavailable',
          `${o.service} at ${origin(url)} is unreachable: ${code ?? (e as Error).message}`,
        );
        if (NOT_SENT.has(code ?? '') || (MAYBE_SENT.has(code ?? '') && (o.idempotent || IDEMPOTENT.has(method))))
          retryIn = this.backoff(attempt);
      }
      if (retryIn === undefined || attempt >= this.attempts) throw failure;
      this.opts.log?.warn(
        { service: o.service, method, url: redactUrl(url), attempt, retryInMs: retryIn, error: failure.message },
        'retrying',
      );
      await sleep(retryIn, undefined, { signal: o.signal }).catch(() => {
        throw failure;
      });
    }
  }

  /** Exponential backoff with full jitter: 0..min(5 s, 200 ms × 2^(n-1)). */
  private backoff(attempt: number): number {
    return Math.round(Math.random() * Math.min(5000, 200 * 2 ** (attempt - 1)));
  }

  async close(): Promise<void> {
    await this.dispatcher.close();
  }
}

/** No answer of Keystone or Cinder the driver uses comes near this; a bigger one is not theirs. */
const MAX_BODY_BYTES = 16 << 20;

/**
 * The body as text; once it passes `limit` bytes the rest is discarded and the answer is undefined, or
 * (`cut`) the first `limit` bytes.
 */
async function readBounded(
  body: AsyncIterable<Buffer> & { destroy(): void },
  limit: number,
  cut = false,
): Promise<string | undefined> {
  const chunks: Buffer[] = [];
  let size = 0;
  for await (const chunk of body) {
    size += chunk.length;
    if (size > limit) {
      body.destroy();
      if (!cut) return undefined;
      chunks.push(chunk.subarray(0, chunk.length - (size - limit)));
      break;
    }
    chunks.push(chunk);
  }
  return Buffer.concat(chunks).toString('utf8');
}

function retryAfterMs(h: string | string[] | undefined): number | undefined {
  const v = Array.isArray(h) ? h[0] : h;
  if (!v) return undefined;
  const secs = Number(v);
  if (Number.isFinite(secs)) return Math.min(30_000, Math.max(0, secs * 1000));
  const at = Date.parse(v);
  return Number.isFinite(at) ? Math.min(30_000, Math.max(0, at - Date.now())) : undefined;
}

const origin = (url: string) => {
  try {
    return new URL(url).origin;
  } catch {
    return url;
  }
};
/** Query strings may carry markers but never secrets; keep the path, drop the query for brevity. */
const redactUrl = (url: string) => url.split('?')[0]!;
