import { execa } from 'execa';

/**
 * How the controller's Ceph module runs the Ceph tools (rbd, rados, ceph): as one operator-configured
 * identity, with deadlines, bounded output and errors sorted into what a caller decides on. Nothing of
 * the identity but its id and file paths reaches an argument or a message.
 */
export interface CephIdentity {
  /** ceph.conf with the monitors (and, usually, the keyring of `id`). */
  conf: string;
  /** The client id, without `client.`. */
  id: string;
  /** Its keyring, where the conf does not name it. */
  keyring?: string;
  /** The pools Cinder's RBD backends keep volumes in, searched in this order. */
  pools: string[];
}

export type CephErrorKind = 'not-found' | 'permission-denied' | 'unavailable' | 'timeout' | 'unexpected';

export class CephError extends Error {
  constructor(
    readonly kind: CephErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'CephError';
  }
}

/** The most of a command's output read as one answer (`snap ls` of an image at Ceph's snapshot limit fits). */
const MAX_ANSWER = 4 * 1024 * 1024;

export function checkName(what: string, name: string, pattern: RegExp): string {
  if (!pattern.test(name))
    throw new CephError('unexpected', `${what} ${JSON.stringify(name.slice(0, 80))} is malformed`);
  return name;
}

/** The arguments that make a Ceph tool act as `identity`, with bounded waits for monitors and OSDs. */
export function identityArgs(identity: Omit<CephIdentity, 'pools'>): string[] {
  return [
    '--conf',
    identity.conf,
    '--id',
    identity.id,
    ...(identity.keyring ? ['--keyring', identity.keyring] : []),
    // a monitor or OSD that does not answer costs a bounded wait, not the RPC's whole deadline
    '--client-mount-timeout',
    '15',
    '--rados-osd-op-timeout',
    '30',
  ];
}

/** What a tool's error line means: `rbd: … (2) No such file or directory` and its siblings. */
export function failureOf(command: string, stderr: string, how: { timedOut?: boolean; exitCode?: number }): CephError {
  const said = stderr
    .trim()
    .split('\n')
    // librados' complaint about keyrings it looked for before the one it was given
    .filter((l) => l && !/keyring/.test(l))
    .slice(-2)
    .join(' | ')
    .slice(0, 400);
  if (how.timedOut) return new CephError('timeout', `${command} timed out${said ? `: ${said}` : ''}`);
  const errno = /\((\d+)\)/.exec(said.slice(-200))?.[1];
  const kind: CephErrorKind =
    errno === '2'
      ? 'not-found'
      : errno === '1' || errno === '13'
        ? 'permission-denied'
        : errno === '110' || errno === '108' || errno === '111'
          ? 'unavailable'
          : 'unexpected';
  return new CephError(kind, `${command} failed (exit ${how.exitCode ?? '?'})${said ? `: ${said}` : ''}`);
}

/**
 * The environment a Ceph tool runs in: this process's without CEPH_* variables. librados reads
 * CEPH_KEYRING, CEPH_CONF and CEPH_ARGS from the environment over the conf's keyring, and the driver's own
 * environment carries the node's (--ceph-keyring's twin in --mode all): the wrong key for this identity.
 */
export function cephToolEnv(): NodeJS.ProcessEnv {
  return Object.fromEntries(Object.entries(process.env).filter(([k]) => !k.startsWith('CEPH_')));
}

/** Run one Ceph tool to completion and return its (bounded) output. */
export async function runCephTool(
  tool: 'rbd' | 'rados' | 'ceph',
  base: string[],
  args: string[],
  o: { timeoutMs: number; signal?: AbortSignal },
): Promise<string> {
  const shown = `${tool} ${args.join(' ')}`;
  const r = await execa(tool, [...base, ...args], {
    env: cephToolEnv(),
    extendEnv: false,
    stdin: 'ignore',
    timeout: o.timeoutMs,
    cancelSignal: o.signal,
    forceKillAfterDelay: 2000,
    maxBuffer: MAX_ANSWER,
    reject: false,
  });
  if (r.isCanceled) throw new CephError('timeout', `${shown} was cancelled`);
  if (r.isMaxBuffer) throw new CephError('unexpected', `${shown} said more than ${MAX_ANSWER} bytes`);
  // rados says some failures ("No such key") on stdout
  if (r.failed) throw failureOf(shown, `${String(r.stdout ?? '').slice(-1000)}\n${String(r.stderr ?? r.message)}`, r);
  return String(r.stdout);
}
