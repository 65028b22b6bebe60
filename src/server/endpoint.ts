import { connect } from 'node:net';
import { mkdir, rm, stat } from 'node:fs/promises';
import { dirname } from 'node:path';

export type Endpoint =
  { kind: 'unix'; path: string; bind: string } | { kind: 'tcp'; host: string; port: number; bind: string };

/** unix:///abs/path.sock or tcp://host:port → what grpc-js binds. */
export function parseEndpoint(endpoint: string): Endpoint {
  if (endpoint.startsWith('unix://')) {
    const path = endpoint.slice('unix://'.length);
    if (!path.startsWith('/'))
      throw new Error(`endpoint ${endpoint}: the socket path must be absolute (unix:///csi/csi.sock)`);
    return { kind: 'unix', path, bind: `unix://${path}` };
  }
  const m = /^tcp:\/\/(\[[^\]]+\]|[^:/]+):(\d+)$/.exec(endpoint);
  if (m) return { kind: 'tcp', host: m[1]!, port: Number(m[2]), bind: `${m[1]}:${m[2]}` };
  throw new Error(`endpoint ${endpoint}: expected unix:///path/to.sock or tcp://host:port`);
}

/** Does a live process accept connections on this socket? */
function socketIsLive(path: string): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect(path);
    const done = (live: boolean) => {
      s.destroy();
      resolve(live);
    };
    s.once('connect', () => done(true));
    s.once('error', () => done(false));
    s.setTimeout(1000, () => done(false));
  });
}

/**
 * Make a unix socket path ready to bind: create its directory, remove a stale socket left by a
 * crashed plugin, and refuse when a live process already serves it (two plugins on one socket
 * would steal each other's calls).
 */
export async function prepareSocket(path: string): Promise<void> {
  await mkdir(dirname(path), { recursive: true });
  const st = await stat(path).catch(() => undefined);
  if (!st) return;
  if (!st.isSocket()) throw new Error(`${path} exists and is not a socket; refusing to replace it`);
  if (await socketIsLive(path)) throw new Error(`another process is already serving ${path}; stop it first`);
  await rm(path, { force: true });
}
