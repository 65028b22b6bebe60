/**
 * The CSI spec's size limits (v1.12.0, "Size Limits"): a string field at most 128 bytes, a
 * map<string, string> at most 4 KiB in total, unless a field says otherwise. Checked on every request
 * before anything else runs, so an oversized id never reaches Cinder (which answers a 1 MiB id with
 * HTTP 414) nor a message (a 1 MiB text in a gRPC status stalls the connection). So are the bytes no
 * field may hold: a NUL anywhere (no syscall takes one: a path with it would fail deep inside as a
 * bug), and control characters in ids and paths (no CO makes them; they would reach logs, mount
 * tables and Cinder URLs).
 */
export const MAX_STRING_BYTES = 128;
export const MAX_MAP_BYTES = 4096;

/**
 * Fields the spec lets exceed 128 bytes: paths ("SP SHOULD support the maximum path length the OS
 * allows"; PATH_MAX here) and node ids (at most 256 bytes, as NodeGetInfo's).
 */
const STRING_LIMITS: Record<string, number> = {
  staging_target_path: 4096,
  target_path: 4096,
  volume_path: 4096,
  node_id: 256,
};
/**
 * `secrets` may carry a PEM CA bundle (a tenant Secret's ca-file), which alone can pass 4 KiB; each of
 * its values is bounded where it is read (see secret-credential.ts).
 */
const MAX_SECRETS_BYTES = 64 * 1024;
/** mount_flags: "at most 4 KiB in total" (a repeated string, so no 128-byte rule per flag). */
const TOTAL_LIMITED_LISTS = new Set(['mount_flags']);

/** Fields that name things (ids, names, paths, tokens): printable text only. */
const NAME_FIELDS = new Set([
  'volume_id',
  'snapshot_id',
  'source_volume_id',
  'source_volume_ids',
  'group_snapshot_id',
  'snapshot_ids',
  'base_snapshot_id',
  'target_snapshot_id',
  'node_id',
  'name',
  'starting_token',
  'staging_target_path',
  'target_path',
  'volume_path',
]);

const bytes = (s: string) => Buffer.byteLength(s, 'utf8');
const hasNul = (s: string) => s.includes('\0');
/** C0 controls and DEL: a loop, no regex, over at most the field's limit. */
const hasControl = (s: string) => {
  for (let i = 0; i < s.length; i++) {
    const c = s.charCodeAt(i);
    if (c < 0x20 || c === 0x7f) return true;
  }
  return false;
};
const isMap = (v: unknown): v is Record<string, unknown> =>
  !!v && typeof v === 'object' && !Array.isArray(v) && !Buffer.isBuffer(v);

/**
 * The first field over its limit or holding a byte it may not, as a message naming the field (never the value),
 * or undefined when the request is within the limits.
 */
export function requestProblem(request: unknown): string | undefined {
  const walk = (v: unknown, path: string, field: string, depth: number): string | undefined => {
    if (depth > 8) return undefined;
    if (typeof v === 'string') {
      const limit = STRING_LIMITS[field] ?? MAX_STRING_BYTES;
      const n = bytes(v);
      if (n > limit) return `${path} is ${n} bytes; the CSI spec allows at most ${limit}`;
      if (hasNul(v)) return `${path} holds a NUL byte`;
      if (NAME_FIELDS.has(field) && hasControl(v))
        return `${path} holds a control character; ids, names and paths are printable text`;
      return undefined;
    }
    if (Array.isArray(v)) {
      if (TOTAL_LIMITED_LISTS.has(field)) {
        const n = v.reduce((s: number, x) => s + (typeof x === 'string' ? bytes(x) : 0), 0);
        return n > MAX_MAP_BYTES
          ? `${path} is ${n} bytes in total; the CSI spec allows at most ${MAX_MAP_BYTES}`
          : undefined;
      }
      for (let i = 0; i < v.length; i++) {
        const p = walk(v[i], `${path}[${i}]`, field, depth + 1);
        if (p) return p;
      }
      return undefined;
    }
    if (!isMap(v)) return undefined;
    if (isStringMap(field)) {
      const entries = Object.entries(v).filter((e): e is [string, string] => typeof e[1] === 'string');
      const n = entries.reduce((s, [k, x]) => s + bytes(k) + bytes(x), 0);
      const limit = field === 'secrets' ? MAX_SECRETS_BYTES : MAX_MAP_BYTES;
      if (n > limit) return `${path} is ${n} bytes in total; the CSI spec allows at most ${limit}`;
      // which entry is not said: a secret's key may be all a tenant should not see echoed
      if (entries.some(([k, x]) => hasNul(k) || hasNul(x))) return `${path} holds a NUL byte in a key or value`;
      return undefined;
    }
    for (const [k, child] of Object.entries(v)) {
      const p = walk(child, path ? `${path}.${k}` : k, k, depth + 1);
      if (p) return p;
    }
    return undefined;
  };
  return walk(request, '', '', 0);
}

/** The map<string, string> fields of the CSI messages. */
const STRING_MAPS = new Set([
  'parameters',
  'secrets',
  'mutable_parameters',
  'volume_context',
  'publish_context',
  'segments',
  'manifest',
]);
const isStringMap = (field: string) => STRING_MAPS.has(field);
