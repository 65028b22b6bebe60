import { createHash } from 'node:crypto';
import type { Logger } from '../log.js';
import { Lru } from '../lru.js';
import { HttpClient, type HttpClientOptions } from './http.js';
import { Keystone } from './keystone.js';

/** An HTTP pool and the Keystone token cache that uses it: one per TLS setting. */
export interface Transport {
  http: HttpClient;
  keystone: Keystone;
}

/** Distinct TLS settings kept at once; tenants can bring their own CA, so the count is bounded. */
const MAX_POOLS = 32;

/**
 * One connection pool per TLS trust setting (CA file, inline CA certificates, verification off), so a
 * tenant whose Keystone needs its own CA gets a pool that trusts exactly that, and nobody else's
 * requests ride on it. The least recently used pool is dropped past MAX_POOLS (its idle sockets close
 * after the keep-alive timeout; requests in flight on it finish).
 */
export class Connections {
  private readonly pools = new Lru<string, Transport>(MAX_POOLS);

  constructor(
    private readonly options: Omit<HttpClientOptions, 'caFile' | 'caPem' | 'tlsInsecure'> = {},
    private readonly log?: Logger,
  ) {}

  for(c: { caFile?: string; caPem?: string; tlsInsecure?: boolean }): Transport {
    const pem = c.caPem ? createHash('sha256').update(c.caPem).digest('hex') : '';
    const key = `${c.caFile ?? ''}\0${pem}\0${c.tlsInsecure ? 1 : 0}`;
    let conn = this.pools.get(key);
    if (!conn) {
      const http = new HttpClient({
        ...this.options,
        caFile: c.caFile,
        caPem: c.caPem,
        tlsInsecure: c.tlsInsecure,
        log: this.log,
      });
      conn = { http, keystone: new Keystone(http, this.log) };
      this.pools.set(key, conn);
    }
    return conn;
  }

  async close(): Promise<void> {
    await Promise.all([...this.pools.values()].map((c) => c.http.close()));
    this.pools.clear();
  }
}
