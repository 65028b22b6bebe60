import { readFile } from 'node:fs/promises';
import { type CredentialMap, ENV_CREDENTIAL_KEYS } from './openstack/credentials.js';
import { parseYaml } from './yaml.js';

/**
 * Parsed sections of a gcfg-style INI file (cloud-provider-openstack's cloud.conf): section names
 * lower-cased, a subsection `[Global "name"]` under the key `global "name"` (its name kept as written).
 */
export type IniSections = Record<string, Record<string, string>>;

/**
 * gcfg syntax as cloud-provider-openstack reads it: `[Section]`, `[Section "subsection"]`, `key = value`,
 * `#`/`;` comments, optional double quotes with \" \\ \n \t escapes. A repeated (sub)section merges;
 * a repeated key: last wins.
 */
export function parseIni(text: string, source: string): IniSections {
  const sections: IniSections = {};
  let current: Record<string, string> | undefined;
  text.split(/\r?\n/).forEach((raw, i) => {
    const line = raw.trim();
    if (line === '' || line.startsWith('#') || line.startsWith(';')) return;
    const header = /^\[\s*([^\]\s"]+)(?:\s+"([^"]*)")?\s*\]$/.exec(line);
    if (header) {
      const name = header[1]!.toLowerCase() + (header[2] === undefined ? '' : ` "${header[2]}"`);
      current = sections[name] ??= {};
      return;
    }
    const kv = /^([A-Za-z0-9][A-Za-z0-9_.-]*)\s*(?:=\s*(.*))?$/.exec(line);
    if (!kv)
      throw new Error(`${source}:${i + 1}: cannot parse "${line.slice(0, 40)}": expected [Section] or key = value`);
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
    } else if (c === '\\') {
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

/** One clouds.yaml entry in the cloud.conf key names (the driver has one vocabulary). */
function cloudsYamlEntry(entry: Record<string, unknown>): CredentialMap {
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
  return Object.fromEntries(Object.entries(m).filter(([, v]) => v !== undefined));
}

/**
 * The clouds a config file defines, by name, and which one is the default. clouds.yaml: its entries,
 * the default chosen by --cloud (or the only entry). cloud.conf: `[Global]` under the name "" and each
 * `[Global "name"]` subsection under its name (cinder-csi-plugin's multi-cloud file), the default
 * `[Global]` unless --cloud names a subsection.
 */
export interface CloudFile {
  clouds: Map<string, CredentialMap>;
  defaultCloud: string;
  blockStorage: Record<string, string>;
}

function cloudsYaml(doc: unknown, cloud: string | undefined, source: string): CloudFile {
  const entries = (doc as { clouds?: Record<string, unknown> } | null)?.clouds;
  if (!entries || typeof entries !== 'object')
    throw new Error(`${source}: no "clouds:" mapping; is this a clouds.yaml?`);
  const names = Object.keys(entries);
  const chosen = cloud ?? (names.length === 1 ? names[0] : undefined);
  if (!chosen)
    throw new Error(`${source}: holds clouds ${names.join(', ')}; choose the default with --cloud or OS_CLOUD`);
  if (!entries[chosen])
    throw new Error(`${source}: no cloud named "${chosen}" (it holds ${names.join(', ') || 'none'})`);
  const clouds = new Map(names.map((n) => [n, cloudsYamlEntry((entries[n] ?? {}) as Record<string, unknown>)]));
  return { clouds, defaultCloud: chosen, blockStorage: {} };
}

function cloudConf(ini: IniSections, cloud: string | undefined, source: string): CloudFile {
  const clouds = new Map<string, CredentialMap>();
  for (const [section, keys] of Object.entries(ini)) {
    const sub = /^global "(.*)"$/.exec(section);
    if (section === 'global') clouds.set('', keys);
    else if (sub) clouds.set(sub[1]!, keys);
  }
  if (!clouds.size) throw new Error(`${source}: no [Global] section (cloud-provider-openstack's cloud.conf format)`);
  const chosen = cloud ?? '';
  if (!clouds.has(chosen)) {
    const names = [...clouds.keys()].map((n) => (n ? `[Global "${n}"]` : '[Global]'));
    throw new Error(
      `${source}: ${chosen ? `no [Global "${chosen}"] section` : 'no [Global] section'} (it holds ${names.join(', ')}); choose one with --cloud-name`,
    );
  }
  return { clouds, defaultCloud: chosen, blockStorage: ini.blockstorage ?? {} };
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
      doc = await parseYaml(text);
    } catch (e) {
      throw new Error(`${path}: not valid YAML: ${(e as Error).message.split('\n')[0]}`);
    }
    return cloudsYaml(doc, cloud, path);
  }
  return cloudConf(parseIni(text, path), cloud, path);
}

/** The OS_* environment variables of OpenStack's clients, in cloud.conf key names. */
export function credentialFromEnv(env: NodeJS.ProcessEnv): CredentialMap {
  const out: CredentialMap = {};
  for (const [env_, key] of ENV_CREDENTIAL_KEYS) if (env[env_]) out[key] = env[env_];
  return out;
}
