import type { Logger } from '../log.js';
import { Lru } from '../lru.js';
import { trimTrailingSlashes } from '../text.js';
import { type Credential, describeCredential, identityFingerprint } from './credentials.js';
import { OpenStackError } from './errors.js';
import type { HttpClient } from './http.js';
import { SharedFlights } from '../shared-flight.js';

interface CatalogEndpoint {
  interface: string;
  region?: string;
  region_id?: string;
  url: string;
}
interface CatalogEntry {
  type: string;
  endpoints: CatalogEndpoint[];
}

/** A scoped Keystone token and what came with it. */
export interface Session {
  token: string;
  expiresAt: number;
  projectId: string;
  userId: string;
  catalog: CatalogEntry[];
}

/** Refresh when less than this much lifetime is left, so a token never expires mid-operation. */
const REFRESH_MARGIN_MS = 5 * 60_000;

function authBody(c: Credential): unknown {
  const a = c.auth;
  const domain = (name?: string, id?: string) => (id ? { id } : name ? { name } : undefined);
  if (a.kind === 'application-credential') {
    const user = a.id
      ? undefined
      : { ...(a.userId ? { id: a.userId } : { name: a.username }), domain: domain(a.userDomainName, a.userDomainId) };
    return {
      auth: {
        identity: {
          methods: ['application_credential'],
          application_credential: { ...(a.id ? { id: a.id } : { name: a.name, user }), secret: a.secret },
        },
      },
    };
  }
  const user = a.userId
    ? { id: a.userId, password: a.password }
    : { name: a.username, domain: domain(a.userDomainName, a.userDomainId) ?? { id: 'default' }, password: a.password };
  const project = a.projectId
    ? { id: a.projectId }
    : { name: a.projectName, domain: domain(a.projectDomainName, a.projectDomainId) ?? { id: 'default' } };
  return { auth: { identity: { methods: ['password'], password: { user } }, scope: { project } } };
}

const tokensUrl = (authUrl: string) => {
  const base = trimTrailingSlashes(authUrl);
  return /\/v3$/.test(base) ? `${base}/auth/tokens` : `${base}/v3/auth/tokens`;
};

/** Tokens kept at once (one per tenant credential in use); the least recently used goes first. */
const MAX_SESSIONS = 1024;

/**
 * Keystone v3 authentication with one cached token per identity (a bounded LRU): refreshed before
 * expiry, dropped on a 401 from a service, and fetched once for concurrent callers.
 */

export class Keystone {
  private readonly sessions = new Lru<string, Session>(MAX_SESSIONS);
  /** One token request per credential at a time, under its own limit (not a caller's deadline). */
  private readonly requests = new SharedFlights<string, Session>({ timeoutMs: 120_000 });

  constructor(
    private readonly http: HttpClient,
    private readonly log?: Logger,
  ) {}

  async session(c: Credential, signal?: AbortSignal): Promise<Session> {
    const key = identityFingerprint(c);
    const cached = this.sessions.get(key);
    if (cached && cached.expiresAt - Date.now() > REFRESH_MARGIN_MS) return cached;
    const s = await this.requests.get(key, (own) => this.authenticate(c, own), signal);
    this.sessions.set(key, s);
    return s;
  }

  /** Does the Keystone at `authUrl` answer right now? (Its unauthenticated versions document.) */
  async ping(authUrl: string, signal?: AbortSignal): Promise<void> {
    await this.http.request('GET', authUrl, {
      service: 'Keystone',
      request: 'versions_get',
      signal,
      expect: [200, 300],
    });
  }

  /** Forget a credential's token (a service answered 401 with it). */
  invalidate(c: Credential): void {
    this.sessions.delete(identityFingerprint(c));
  }

  private async authenticate(c: Credential, signal?: AbortSignal): Promise<Session> {
    const started = Date.now();
    let res;
    try {
      res = await this.http.request<{
        token: { expires_at: string; project?: { id: string }; user: { id: string }; catalog?: CatalogEntry[] };
      }>('POST', tokensUrl(c.authUrl), {
        body: authBody(c),
        expect: [201],
        service: 'Keystone',
        request: 'token_create',
        signal,
        idempotent: true,
      });
    } catch (e) {
      if (e instanceof OpenStackError && (e.kind === 'unauthenticated' || e.kind === 'not-found'))
        throw new OpenStackError(
          'unauthenticated',
          `Keystone rejected ${describeCredential(c)}: wrong, expired or revoked credential`,
          e.status,
        );
      if (e instanceof OpenStackError && e.kind === 'forbidden')
        throw new OpenStackError(
          'forbidden',
          `Keystone refused ${describeCredential(c)} a project-scoped token: ${e.message}`,
          e.status,
        );
      throw e;
    }
    const header = res.headers['x-subject-token'];
    const token = Array.isArray(header) ? header[0] : header;
    const t = res.body.token;
    if (!token || !t?.project)
      throw new OpenStackError(
        'unexpected',
        `Keystone gave ${describeCredential(c)} no project-scoped token; the credential must carry a project`,
      );
    this.log?.debug({ authUrl: c.authUrl, ms: Date.now() - started }, 'keystone token issued');
    return {
      token,
      expiresAt: Date.parse(t.expires_at),
      projectId: t.project.id,
      userId: t.user.id,
      catalog: t.catalog ?? [],
    };
  }
}

/** The first endpoint of one of `types` (in order) for the interface and region, or a clear error. */
export function findEndpoint(s: Session, types: string[], iface: string, region?: string): string {
  for (const type of types) {
    const entry = s.catalog.find((e) => e.type === type);
    const ep = entry?.endpoints.find(
      (e) => e.interface === iface && (!region || e.region_id === region || e.region === region),
    );
    if (ep) return trimTrailingSlashes(ep.url);
  }
  const offered = s.catalog.map((e) => e.type).join(', ') || 'nothing';
  throw new OpenStackError(
    'not-found',
    `the Keystone catalog has no ${types.join(' or ')} endpoint with interface ${iface}${region ? ` in region ${region}` : ''} (it offers: ${offered})`,
  );
}
