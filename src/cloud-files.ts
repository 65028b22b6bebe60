import { readFile } from 'node:fs/promises';
import type { CredentialMap } from './openstack/credentials.js';

/** Parsed sections of a gcfg-style INI file (cloud-provider-openstack's cloud.conf): lower-cased names. */
export type IniSections = Record<string, Record<string, string>>;

/**
 * gcfg syntax as cloud-provider-openstack reads it: `[Section]`, `key = value`, `#`/`;` comments,
 * optional double quotes with \" \\ \n \t escapes. A repeated section merges; a repeated key: last wins.
 */
export function parseIni(text: string, source: string): IniSections {
  const sections: IniSections = {};
  let current: Record<string, string> | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const header = /^\[\s*([^\]\s]+)(?:\s+"[^"]*")?\s*\]$/.exec(line);
    if (header) {
      const name = header[1]!.toLowerCase();
      current = sections[name] ??= {};
      return;
    }
    const kv = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:=\s*(.*))?$/.exec(line);
    if (!kv) throw new Error(`${source}:${i + 1}: cannot parse "${line.slice(0, 40)}": expected [Section] or key = value`);
    if (!current) throw new Error(`${source}:${i + 1}: key "${kv[1]}" is outside any [Section]`);
    current[kv[1]!.toLowerCase()] = unquote(kv[2] ?? 'true', `${source}:${i + 1}`);
  });
  return sections;
}

function unquote(v: string, where: string): string {
  let out = '';
  let quoted = false;
  let keep = 0; // text up to here came from inside quotes: no trimming
  for (let i = 0; i < v.length; i++) {
    const c = v[i]!;
    if (c === '"') {
      quoted = !quoted;
      keep = out.length;
    }
    else if (c === '\\') {
      const n = v[++i];
      const esc: Record<string, string> = { '"': '"', '\\': '\\', n: '\n', t: '\t' };
      if (n === undefined || !(n in esc)) throw new Error(`${where}: bad escape in value`);
      out += esc[n];
    } else if (!quoted && (c === '#' || c === ';')) break;
    else out += c;
  }
  if (quoted) throw new Error(`${where}: unterminated quote in value`);
  return keep > 0 ? out.slice(0, keep) + out.slice(keep).trimEnd() : out.trim();
}

/** OpenStack's clouds.yaml entry → the cloud.conf key names (the driver has one vocabulary). */
export function cloudsYamlToCredential(doc: unknown, cloud: string | undefined, source: string): CredentialMap {
  const clouds = (doc as { clouds?: Record<string, unknown> } | null)?.clouds;
  if (!clouds || typeof clouds !== 'object') throw new Error(`${source}: no "clouds:" mapping; is this a clouds.yaml?`);
  const names = Object.keys(clouds);
  const chosen = cloud ?? (names.length === 1 ? names[0] : undefined);
  if (!chosen) throw new Error(`${source}: holds clouds ${names.join(', ')}; choose one with --cloud or OS_CLOUD`);
  const entry = clouds[chosen] as Record<string, unknown> | undefined;
  if (!entry) throw new Error(`${source}: no cloud named "${chosen}" (it holds ${names.join(', ') || 'none'})`);
  const auth = (entry.auth ?? {}) as Record<string, unknown>;
  const s = (v: unknown) => (v === undefined || v === null ? undefined : String(v));
  const verify = entry.verify;
  const m: CredentialMap = {
    'auth-url': s(auth.auth_url),
    username: s(auth.username),
    'user-id': s(auth.user_id),
    password: s(auth.password),
    'user-domain-name': s(auth.user_domain_name),
    'user-domain-id': s(auth.user_domain_id),
    'project-name': s(auth.project_name ?? auth.tenant_name),
    'project-id': s(auth.project_id ?? auth.tenant_id),
    'project-domain-name': s(auth.project_domain_name),
    'project-domain-id': s(auth.project_domain_id),
    'domain-name': s(auth.domain_name),
    'domain-id': s(auth.domain_id),
    'application-credential-id': s(auth.application_credential_id),
    'application-credential-name': s(auth.application_credential_name),
    'application-credential-secret': s(auth.application_credential_secret),
    region: s(entry.region_name),
    interface: s(entry.interface),
    'ca-file': s(entry.cacert),
    'tls-insecure': verify === false || verify === 'false' ? 'true' : undefined,
  };
  return Object.fromEntries(Object.entries(m).filter(([, v]) => v !== undefined)) as CredentialMap;
}

export interface CloudFile {
  credential: CredentialMap;
  blockStorage: Record<string, string>;
}

/** Read --config: clouds.yaml when it parses as YAML with a `clouds:` key, cloud.conf INI otherwise. */
export async function readCloudFile(path: string, cloud: string | undefined): Promise<CloudFile> {
  let text: string;
  try {
    text = await readFile(path, 'utf8');
  } catch (e) {
    throw new Error(`cannot read config file ${path}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (/\.ya?ml$/i.test(path) || /^\s*clouds\s*:/m.test(text)) {
    let doc: unknown;
    try {
      const { parse: parseYaml } = await import('yaml');
      doc = parseYaml(text);
    } catch (e) {
      throw new Error(`${path}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    return { credential: cloudsYamlToCredential(doc, cloud, path), blockStorage: {} };
  }
  const ini = parseIni(text, path);
  if (!ini.global) throw new Error(`${path}: no [Global] section (cloud-provider-openstack's cloud.conf format)`);
  return { credential: ini.global as CredentialMap, blockStorage: ini.blockstorage ?? {} };
}

/** The OS_* environment variables of OpenStack's clients, in cloud.conf key names. */
export function credentialFromEnv(env: NodeJS.ProcessEnv): CredentialMap {
  const map: [string, keyof CredentialMap][] = [
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
  ];
  const out: CredentialMap = {};
  for (const [env_, key] of map) if (env[env_]) out[key] = env[env_];
  if (env.OS_INSECURE) out['tls-insecure'] = env.OS_INSECURE;
  return out;
}
