import { createHmac, randomBytes } from 'node:crypto';
import { z } from 'zod';

/**
 * The credential keys shared by cloud.conf [Global] and per-request Kubernetes Secrets. The names are
 * cloud-provider-openstack's, so existing cloud.conf files and Secrets carry over unchanged.
 */
export const CREDENTIAL_KEYS = [
  'auth-url',
  'region',
  'username',
  'user-id',
  'password',
  'user-domain-name',
  'user-domain-id',
  'tenant-name',
  'project-name',
  'tenant-id',
  'project-id',
  'project-domain-name',
  'project-domain-id',
  'tenant-domain-name',
  'tenant-domain-id',
  'domain-name',
  'domain-id',
  'application-credential-id',
  'application-credential-name',
  'application-credential-secret',
  'ca-file',
  'tls-insecure',
  'interface',
] as const;
export type CredentialKey = (typeof CREDENTIAL_KEYS)[number];

export type CredentialMap = Partial<Record<CredentialKey, string>>;

/** OpenStack clients' OS_* environment variables and the cloud.conf key each one is. */
export const ENV_CREDENTIAL_KEYS: readonly (readonly [string, CredentialKey])[] = [
  ['OS_AUTH_URL', 'auth-url'],
  ['OS_REGION_NAME', 'region'],
  ['OS_USERNAME', 'username'],
  ['OS_USER_ID', 'user-id'],
  ['OS_PASSWORD', 'password'],
  ['OS_USER_DOMAIN_NAME', 'user-domain-name'],
  ['OS_USER_DOMAIN_ID', 'user-domain-id'],
  ['OS_PROJECT_NAME', 'project-name'],
  ['OS_TENANT_NAME', 'tenant-name'],
  ['OS_PROJECT_ID', 'project-id'],
  ['OS_TENANT_ID', 'tenant-id'],
  ['OS_PROJECT_DOMAIN_NAME', 'project-domain-name'],
  ['OS_PROJECT_DOMAIN_ID', 'project-domain-id'],
  ['OS_DOMAIN_NAME', 'domain-name'],
  ['OS_APPLICATION_CREDENTIAL_ID', 'application-credential-id'],
  ['OS_APPLICATION_CREDENTIAL_NAME', 'application-credential-name'],
  ['OS_APPLICATION_CREDENTIAL_SECRET', 'application-credential-secret'],
  ['OS_CACERT', 'ca-file'],
  ['OS_INTERFACE', 'interface'],
  ['OS_INSECURE', 'tls-insecure'],
];

/** Credential values come from Secrets tenants write: bounded, so none can make a request or a log line huge. */
const nonEmpty = z.string().trim().min(1).max(1024, 'is longer than 1024 characters');
const boolString = z
  .string()
  .trim()
  .toLowerCase()
  .refine((v) => ['true', 'false', '1', '0', 'yes', 'no'].includes(v), 'must be true or false')
  .transform((v) => ['true', '1', 'yes'].includes(v));

/** A validated Keystone v3 credential: password (user + project scope) or application credential. */
export const credentialSchema = z
  .object({
    authUrl: z.url({
      protocol: /^https?$/,
      message: 'must be an http(s) URL of Keystone, e.g. https://keystone.example:5000/v3',
    }),
    region: nonEmpty.optional(),
    interface: z.enum(['public', 'internal', 'admin']).default('public'),
    caFile: nonEmpty.optional(),
    /** PEM certificates given inline (a Secret's ca-file); the config's own ca-file is a path. */
    caPem: z
      .string()
      .max(64 * 1024)
      .optional(),
    tlsInsecure: z.boolean().default(false),
    auth: z.discriminatedUnion('kind', [
      z.object({
        kind: z.literal('password'),
        username: nonEmpty.optional(),
        userId: nonEmpty.optional(),
        password: nonEmpty,
        userDomainName: nonEmpty.optional(),
        userDomainId: nonEmpty.optional(),
        projectName: nonEmpty.optional(),
        projectId: nonEmpty.optional(),
        projectDomainName: nonEmpty.optional(),
        projectDomainId: nonEmpty.optional(),
      }),
      z.object({
        kind: z.literal('application-credential'),
        id: nonEmpty.optional(),
        name: nonEmpty.optional(),
        username: nonEmpty.optional(),
        userId: nonEmpty.optional(),
        userDomainName: nonEmpty.optional(),
        userDomainId: nonEmpty.optional(),
        secret: nonEmpty,
      }),
    ]),
  })
  .superRefine((c, ctx) => {
    const a = c.auth;
    if (a.kind === 'password') {
      if (!a.username && !a.userId)
        ctx.addIssue({
          code: 'custom',
          path: ['username'],
          message: 'username or user-id is required with a password',
        });
      if (!a.projectName && !a.projectId)
        ctx.addIssue({
          code: 'custom',
          path: ['project-name'],
          message: 'project-name (tenant-name) or project-id (tenant-id) is required: volumes live in a project',
        });
    } else if (!a.id && !(a.name && (a.username || a.userId))) {
      ctx.addIssue({
        code: 'custom',
        path: ['application-credential-id'],
        message:
          'application-credential-id, or application-credential-name with username/user-id, is required with application-credential-secret',
      });
    }
  });
export type Credential = z.infer<typeof credentialSchema>;

/**
 * Layer the operator's own credential sources (the config file, then OS_* variables), later wins. An
 * application credential in a later map replaces a password from an earlier one (and vice versa).
 * Never used for a request's Secret: a Secret is a whole credential (see secret-credential.ts).
 */
export function mergeCredentialMaps(...maps: (CredentialMap | undefined)[]): CredentialMap {
  const merged: CredentialMap = {};
  for (const m of maps) {
    if (!m) continue;
    const clean = Object.fromEntries(Object.entries(m).filter(([, v]) => v !== undefined && v !== '')) as CredentialMap;
    if (clean['application-credential-secret'] || clean['application-credential-id'])
      for (const k of [
        'username',
        'user-id',
        'password',
        'tenant-name',
        'project-name',
        'tenant-id',
        'project-id',
      ] as const)
        delete merged[k];
    if (clean.password)
      for (const k of [
        'application-credential-id',
        'application-credential-name',
        'application-credential-secret',
      ] as const)
        delete merged[k];
    Object.assign(merged, clean);
  }
  return merged;
}

export function credentialInput(m: CredentialMap): unknown {
  const pick = (...keys: CredentialKey[]) => keys.map((k) => m[k]).find((v) => v !== undefined && v !== '');
  const userDomainName = pick('user-domain-name', 'domain-name');
  const userDomainId = pick('user-domain-id', 'domain-id');
  const common = {
    authUrl: m['auth-url'] ?? '',
    region: m.region || undefined,
    interface: m.interface || undefined,
    caFile: m['ca-file'] || undefined,
    tlsInsecure: m['tls-insecure'] === undefined ? undefined : boolString.parse(m['tls-insecure']),
  };
  if (m['application-credential-secret'] || m['application-credential-id'] || m['application-credential-name'])
    return {
      ...common,
      auth: {
        kind: 'application-credential',
        id: m['application-credential-id'] || undefined,
        name: m['application-credential-name'] || undefined,
        username: m.username || undefined,
        userId: m['user-id'] || undefined,
        userDomainName,
        userDomainId,
        secret: m['application-credential-secret'] ?? '',
      },
    };
  return {
    ...common,
    auth: {
      kind: 'password',
      username: m.username || undefined,
      userId: m['user-id'] || undefined,
      password: m.password ?? '',
      userDomainName,
      userDomainId,
      projectName: pick('project-name', 'tenant-name'),
      projectId: pick('project-id', 'tenant-id'),
      projectDomainName: pick('project-domain-name', 'tenant-domain-name', 'domain-name'),
      projectDomainId: pick('project-domain-id', 'tenant-domain-id', 'domain-id'),
    },
  };
}

/** Schema paths back to the key names a user wrote, so errors name what they can fix. */
const PATH_TO_KEY: Record<string, CredentialKey> = {
  authUrl: 'auth-url',
  region: 'region',
  interface: 'interface',
  caFile: 'ca-file',
  tlsInsecure: 'tls-insecure',
  'auth.password': 'password',
  'auth.secret': 'application-credential-secret',
  'auth.username': 'username',
  'auth.project-name': 'project-name',
  'auth.application-credential-id': 'application-credential-id',
};

export class CredentialError extends Error {
  constructor(
    readonly problems: { key: string; message: string }[],
    source: string,
  ) {
    super(`${source}: ${problems.map((p) => `${p.key}: ${p.message}`).join('; ')}`);
    this.name = 'CredentialError';
  }
}

/** Validate a flat credential map; the error names each bad key and what is wrong, never a value. */
export function parseCredential(m: CredentialMap, source: string): Credential {
  let input: unknown;
  try {
    input = credentialInput(m);
  } catch {
    throw new CredentialError([{ key: 'tls-insecure', message: 'must be true or false' }], source);
  }
  const r = credentialSchema.safeParse(input);
  if (r.success) return r.data;
  throw new CredentialError(
    r.error.issues.map((i) => {
      const path = i.path.join('.');
      const key = PATH_TO_KEY[path] ?? path.replace(/^auth\./, '');
      const missing = i.code === 'invalid_type' && (i.input === undefined || i.input === '');
      const tooSmall = i.code === 'too_small';
      return { key, message: missing || tooSmall ? 'is required' : i.message };
    }),
    source,
  );
}

/** Keys the fingerprints: a per-process secret, so a fingerprint cannot be tested against guessed credentials. */
const FINGERPRINT_KEY = randomBytes(32);

/**
 * A credential's fingerprint, all of it (connection included): a keyed hash, stable within this process. Never logged.
 */
export function credentialFingerprint(c: Credential): string {
  return createHmac('sha256', FINGERPRINT_KEY).update(JSON.stringify(c)).digest('base64url');
}

/**
 * What Keystone sees of a credential — its URL and what authenticates — as a keyed hash: the token
 * cache's key. Region and interface only pick an endpoint from the catalog, so they never make a new token.
 */
export function identityFingerprint(c: Credential): string {
  return createHmac('sha256', FINGERPRINT_KEY)
    .update(JSON.stringify([c.authUrl, c.auth]))
    .digest('base64url');
}

/** Who this credential claims to be, for messages: never includes a secret. */
export function describeCredential(c: Credential): string {
  const a = c.auth;
  if (a.kind === 'application-credential') return `application credential ${a.id ?? a.name} at ${c.authUrl}`;
  return `user ${a.username ?? a.userId} in project ${a.projectName ?? a.projectId} at ${c.authUrl}`;
}

/**
 * What a Secret key the driver does not read was most likely meant as, or undefined: an OS_* variable's
 * name, snake_case or camelCase spellings of a key, the node-stage Secret's Ceph keys. Key names only;
 * the caller bounds and cleans them before they reach a message.
 */
export function meantKey(key: string): string | undefined {
  const env = ENV_CREDENTIAL_KEYS.find(([name]) => name === key.toUpperCase());
  if (env) return env[1];
  let kebab = '';
  for (let i = 0; i < key.length && i < 64; i++) {
    const c = key[i]!;
    const upper = c >= 'A' && c <= 'Z';
    kebab += c === '_' || c === ' ' ? '-' : upper ? `${i > 0 && key[i - 1] !== '_' ? '-' : ''}${c.toLowerCase()}` : c;
  }
  return (CREDENTIAL_KEYS as readonly string[]).includes(kebab) ? kebab : undefined;
}

/** Extract only credential keys from an arbitrary string map (a Secret may carry other keys too). */
export function pickCredentialKeys(m: Record<string, string> | undefined): CredentialMap {
  const out: CredentialMap = {};
  if (!m) return out;
  for (const k of CREDENTIAL_KEYS) if (m[k] !== undefined) out[k] = m[k];
  return out;
}
