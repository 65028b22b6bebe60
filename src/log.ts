import { pino, type Logger, type DestinationStream } from 'pino';

export type { Logger };

/** Keys whose values are secret wherever they appear in a logged object. */
const SECRET_KEY = /secret|password|passwd|token|key(ring)?$|credential|authorization|mount_flags/i;

/** Pino redaction for the usual places, as a second line behind {@link sanitize}. */
const REDACT_PATHS = [
  'secrets',
  '*.secrets',
  'req.secrets',
  'password',
  '*.password',
  'token',
  '*.token',
  '["application-credential-secret"]',
  '*["application-credential-secret"]',
  '["X-Auth-Token"]',
  '*["X-Auth-Token"]',
  '*["x-auth-token"]',
];

export function createLogger(level: string, destination?: DestinationStream): Logger {
  return pino(
    {
      level,
      base: { driver: 'cinder.csi.stackube.io' },
      redact: { paths: REDACT_PATHS, censor: '[redacted]' },
      formatters: { level: (label) => ({ level: label }) },
      timestamp: pino.stdTimeFunctions.isoTime,
    },
    destination ?? pino.destination({ dest: 1, sync: false }),
  );
}

/** A deep copy of a request fit for a log line: `secrets` maps and secret-named keys are dropped. */
export function sanitize(value: unknown, depth = 0): unknown {
  if (typeof value === 'string')
    return value.length > 256 ? `${value.slice(0, 256)}…(${value.length} characters)` : value;
  if (depth > 8 || value === null || typeof value !== 'object') return value;
  if (Array.isArray(value)) return value.map((v) => sanitize(v, depth + 1));
  if (Buffer.isBuffer(value)) return `<${value.length} bytes>`;
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(value)) out[k] = SECRET_KEY.test(k) ? '[redacted]' : sanitize(v, depth + 1);
  return out;
}

/** Secret values the process knows from its own configuration, scrubbed from every message too. */
const knownSecrets = new Set<string>();
export function rememberSecret(value: string | undefined): void {
  if (value) knownSecrets.add(value);
}

/**
 * Replace every known secret value inside a text (an error message from a library may quote what
 * it was given). Values shorter than 4 characters are left: they would blank out ordinary words.
 */
export function scrub(text: string, secretValues: Iterable<string> = []): string {
  let out = text;
  for (const v of [...secretValues, ...knownSecrets]) if (v && v.length >= 4) out = out.split(v).join('[redacted]');
  return out;
}

/** Every string value of a request's `secrets` map(s), wherever they sit. */
export function secretValuesOf(request: unknown): string[] {
  const found: string[] = [];
  const walk = (v: unknown, depth: number) => {
    if (depth > 6 || v === null || typeof v !== 'object') return;
    for (const [k, child] of Object.entries(v)) {
      if (k === 'secrets' && child && typeof child === 'object') {
        for (const s of Object.values(child)) if (typeof s === 'string') found.push(s);
      } else walk(child, depth + 1);
    }
  };
  walk(request, 0);
  return found;
}
