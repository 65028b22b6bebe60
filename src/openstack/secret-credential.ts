import { X509Certificate } from 'node:crypto';
import { trimTrailingSlashes } from '../text.js';
import {
  type Credential,
  type CredentialKey,
  type CredentialMap,
  CREDENTIAL_KEYS,
  CredentialError,
  parseCredential,
} from './credentials.js';

/**
 * A request's Secret is written by a tenant, so it is hostile input: it is a whole credential of its own
 * or it is refused. Nothing that identifies or authenticates (user, project, password, application
 * credential) is ever taken from the driver's configuration; only connection settings are — the region
 * and interface, and the Keystone URL with its TLS trust when the Secret names none — and those of the
 * cloud the operator chose for the volume (the StorageClass's, never the Secret's). A Secret may name a
 * Keystone only from the operator's allow list, and may turn TLS verification off only where the
 * operator allows it.
 */

/** A Secret key that would choose a cloud (cinder-csi-plugin's multi-cloud Secrets): refused, the operator chooses. */
export const CLOUD_KEY = 'cloud';

/** Where and how to reach a Keystone: what a Secret may inherit from the configuration. */
export interface Connection {
  authUrl: string;
  region?: string;
  interface?: 'public' | 'internal' | 'admin';
  caFile?: string;
  tlsInsecure?: boolean;
}

/** One cloud the operator configured: where its Keystone is and, when given, the operator's own credential there. */
export interface Cloud {
  connection: Connection;
  credential?: Credential;
}

export interface SecretPolicy {
  /** Every configured cloud's connection: a Secret's auth-url that names one gets its TLS trust too. */
  connections: readonly Connection[];
  /** Keystone URLs a Secret may name (--allowed-auth-urls; default: the configured clouds' own). */
  allowedAuthUrls: readonly string[];
  /** Whether a Secret may set tls-insecure = true (--allow-tenant-tls-insecure). */
  allowTlsInsecure: boolean;
}

export function connectionOf(c: Credential): Connection {
  return { authUrl: c.authUrl, region: c.region, interface: c.interface, caFile: c.caFile, tlsInsecure: c.tlsInsecure };
}

/**
 * The policy from what the operator configured: the clouds' connections and the allow list (by default exactly
 * theirs).
 */
export function secretPolicy(o: {
  clouds: readonly Cloud[];
  allowedAuthUrls?: readonly string[];
  allowTlsInsecure: boolean;
}): SecretPolicy {
  const connections = o.clouds.map((c) => c.connection);
  const allowed = o.allowedAuthUrls ?? connections.map((c) => c.authUrl);
  return { connections, allowedAuthUrls: [...new Set(allowed)], allowTlsInsecure: o.allowTlsInsecure };
}

/** One spelling per Keystone: lower-case origin, no trailing slash, no /v3 (the client adds it). */
export function normalizeAuthUrl(url: string): string | undefined {
  try {
    const u = new URL(url);
    if (u.protocol !== 'http:' && u.protocol !== 'https:') return undefined;
    const path = trimTrailingSlashes(u.pathname);
    return `${u.protocol}//${u.host.toLowerCase()}${path.endsWith('/v3') ? path.slice(0, -3) : path}`;
  } catch {
    return undefined;
  }
}

const APPLICATION_CREDENTIAL_KEYS: CredentialKey[] = [
  'application-credential-id',
  'application-credential-name',
  'application-credential-secret',
];
/** Keys that say who the credential is: they all come from the Secret or not at all. */
const IDENTITY_KEYS = CREDENTIAL_KEYS.filter(
  (k) => !['auth-url', 'region', 'interface', 'ca-file', 'tls-insecure'].includes(k),
);
const PEM_BEGIN = '-----BEGIN CERTIFICATE-----';
const PEM_END = '-----END CERTIFICATE-----';

/**
 * Inline PEM certificates, each one parsed; undefined when the text is not such a bundle. Linear: indexOf, no regex.
 */
function pemBundle(text: string): string | undefined {
  const blocks: string[] = [];
  for (let at = text.indexOf(PEM_BEGIN); at >= 0; at = text.indexOf(PEM_BEGIN, at)) {
    const end = text.indexOf(PEM_END, at + PEM_BEGIN.length);
    if (end < 0) return undefined;
    blocks.push(text.slice(at, end + PEM_END.length));
    at = end + PEM_END.length;
  }
  if (!blocks.length) return undefined;
  try {
    for (const b of blocks) new X509Certificate(b);
  } catch {
    return undefined;
  }
  return `${blocks.join('\n')}\n`;
}

/**
 * The credential a request's Secret holds, under the operator's policy, for the cloud the operator chose
 * (`connection`: where a Secret naming no auth-url authenticates). `given` holds only the Secret's
 * credential keys (and `cloud`, to refuse it); `source` names the Secret for messages. Problems name
 * keys, never values.
 */
export function credentialFromSecret(
  given: CredentialMap & { [CLOUD_KEY]?: string },
  policy: SecretPolicy,
  connection: Connection,
  source: string,
): Credential {
  const problems: { key: string; message: string }[] = [];
  if (given[CLOUD_KEY] !== undefined)
    problems.push({
      key: CLOUD_KEY,
      message:
        "a Secret cannot choose the cloud: the volume's cloud is the StorageClass parameter cloud, which the operator writes",
    });

  const hasApplicationCredential = APPLICATION_CREDENTIAL_KEYS.some((k) => given[k] !== undefined);
  if (hasApplicationCredential && given.password !== undefined)
    problems.push({
      key: 'password',
      message: 'a Secret holds one credential: a password or an application credential, not both',
    });
  else if (!hasApplicationCredential && given.password === undefined)
    problems.push({
      key: 'credential',
      message:
        "holds no credential of its own: it needs application-credential-id + application-credential-secret, or username (or user-id) + password + project-name (or project-id); nothing is taken from the driver's own credential",
    });

  // Connection: the Secret's own auth-url only from the allow list; otherwise the chosen cloud's.
  if (given['auth-url'] !== undefined) {
    const wanted = normalizeAuthUrl(given['auth-url'].trim());
    if (!wanted)
      problems.push({
        key: 'auth-url',
        message: 'must be an http(s) URL of Keystone, e.g. https://keystone.example:5000/v3',
      });
    else if (!policy.allowedAuthUrls.some((a) => normalizeAuthUrl(a) === wanted))
      problems.push({
        key: 'auth-url',
        message: 'is not a Keystone the operator allows (--allowed-auth-urls); leave it out to use the configured one',
      });
    else
      connection = policy.connections.find((c) => normalizeAuthUrl(c.authUrl) === wanted) ?? {
        authUrl: given['auth-url'].trim(),
      };
  }

  let tlsInsecure = connection.tlsInsecure ?? false;
  if (given['tls-insecure'] !== undefined) {
    const v = given['tls-insecure'].trim().toLowerCase();
    if (!['true', 'false', '1', '0', 'yes', 'no'].includes(v))
      problems.push({ key: 'tls-insecure', message: 'must be true or false' });
    else if (['true', '1', 'yes'].includes(v) && !policy.allowTlsInsecure)
      problems.push({
        key: 'tls-insecure',
        message: 'the operator does not let Secrets turn TLS verification off (--allow-tenant-tls-insecure)',
      });
    else tlsInsecure = ['true', '1', 'yes'].includes(v);
  }

  let caFile = connection.caFile;
  let caPem: string | undefined;
  const ca = given['ca-file'];
  if (ca !== undefined) {
    const operatorFiles = policy.connections.map((c) => c.caFile).filter(Boolean);
    if (ca.includes(PEM_BEGIN)) {
      caPem = ca.length <= 64 * 1024 ? pemBundle(ca) : undefined;
      if (!caPem)
        problems.push({ key: 'ca-file', message: 'holds text that is not PEM certificates (at most 64 KiB)' });
      caFile = undefined;
    } else if (operatorFiles.includes(ca.trim())) caFile = ca.trim();
    else
      problems.push({
        key: 'ca-file',
        message:
          "in a Secret must hold the PEM certificates themselves, or name a ca-file of the driver's configuration",
      });
  }

  const identity = Object.fromEntries(IDENTITY_KEYS.filter((k) => given[k] !== undefined).map((k) => [k, given[k]]));
  const map: CredentialMap = {
    ...identity,
    'auth-url': connection.authUrl,
    region: given.region ?? connection.region,
    interface: given.interface ?? connection.interface,
  };
  let credential: Credential | undefined;
  try {
    credential = parseCredential(map, source);
  } catch (e) {
    if (!(e instanceof CredentialError)) throw e;
    // with no credential at all, "holds no credential" says it; otherwise each missing or bad key
    const none = problems.some((q) => q.key === 'credential');
    if (!none) for (const p of e.problems) if (!problems.some((q) => q.key === p.key)) problems.push(p);
  }
  if (problems.length || !credential) throw new CredentialError(problems, source);
  return { ...credential, caFile, caPem, tlsInsecure };
}
