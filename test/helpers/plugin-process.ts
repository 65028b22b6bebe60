import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, rmSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { NODE_FLAGS, PACKAGE_ROOT } from '../../src/package-info.js';
import { csiClient, type CsiClient } from './csi-client.js';
import { CEPH_CONF, CEPH_KEYRING } from '../../harness/local-stack.js';
import type { NodeDirs } from '../../harness/node-driver.js';

export interface PluginProcess {
  csi: CsiClient;
  child: ChildProcess;
  /** The signal that ended it (SIGKILL from a failpoint), or its exit code. */
  ended: Promise<string | number | null>;
  logs: () => string;
  stop(): Promise<void>;
}

/**
 * The node plugin as its own process (the shipped bundle), in a process group of its own, so a test can
 * have it SIGKILLed at a failpoint (STACKUBE_FAILPOINTS) with whatever it was running at that moment.
 */
export function startPluginProcess(dirs: NodeDirs, failpoints = '', o: ProcessOptions = {}): Promise<PluginProcess> {
  return startDriverProcess(
    dirs.socket,
    {
      CSI_MODE: 'node',
      NODE_ID: 'node-test',
      KUBELET_ROOT: dirs.kubeletRoot,
      CSI_STATE_DIR: dirs.stateDir,
      RBD_MAPPER: 'fuse',
      CEPH_CONF,
      CEPH_KEYRING,
      ...o.env,
    },
    failpoints,
    o,
  );
}

export interface ProcessOptions {
  /** A cgroup's cgroup.procs: the process joins it before it starts (its children, rbd-fuse, with it). */
  cgroupProcs?: string;
  /** More environment (NODE_ID, say), over the defaults. */
  env?: Record<string, string>;
}

/** Where a plugin on `socket` says it paused at a failpoint, and is told to go on (src/failpoints.ts). */
export const failpointDir = (socket: string) => {
  const dir = join(dirname(socket), 'failpoints');
  mkdirSync(dir, { recursive: true });
  return dir;
};

/**
 * Answer every pause of a plugin at the failpoint `name` (armed `name=pause`): `onPause(n)` runs at the
 * n-th (from 1), then the plugin goes on. Returns a stop function that resolves once this watcher has
 * ended (stop it when the RPCs it watched have answered: a pause after it is the next watcher's).
 */
export function onEveryPause(
  socket: string,
  name: string,
  onPause: (n: number) => Promise<void> | void,
): () => Promise<void> {
  const base = join(failpointDir(socket), name.replaceAll(':', '_'));
  let stopped = false;
  let n = 0;
  const loop = (async () => {
    while (!stopped) {
      if (existsSync(`${base}.paused`) && !existsSync(`${base}.continue`)) {
        await onPause(++n);
        writeFileSync(`${base}.continue`, '');
        // the plugin takes both files away when it goes on: wait for that, so one pause is answered once
        while (existsSync(`${base}.paused`)) await sleep(5);
      }
      await sleep(10);
    }
  })();
  return () => {
    stopped = true;
    return loop;
  };
}

/** The driver (the shipped bundle) as its own process serving on `socket`, configured by `env` alone. */
export async function startDriverProcess(
  socket: string,
  env: Record<string, string>,
  failpoints = '',
  o: ProcessOptions = {},
): Promise<PluginProcess> {
  rmSync(socket, { force: true });
  // as the image runs it, plus source maps for readable failures
  const argv = [
    process.execPath,
    ...NODE_FLAGS,
    '--enable-source-maps',
    join(PACKAGE_ROOT, 'dist/bundle/main.js'),
    'serve',
  ];
  const [cmd, ...args] = o.cgroupProcs
    ? ['/bin/sh', '-c', 'echo $$ > "$0" && exec "$@"', o.cgroupProcs, ...argv]
    : argv;
  const child = spawn(cmd!, args, {
    env: {
      PATH: process.env.PATH,
      CSI_ENDPOINT: `unix://${socket}`,
      LOG_LEVEL: 'info',
      ...env,
      ...(failpoints ? { STACKUBE_FAILPOINTS: failpoints, STACKUBE_FAILPOINT_DIR: failpointDir(socket) } : {}),
    },
    detached: true,
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const ended = new Promise<string | number | null>((resolve) =>
    child.once('exit', (code, signal) => resolve(signal ?? code)),
  );
  for (let i = 0; i < 200 && !existsSync(socket); i++) {
    if (child.exitCode !== null) break;
    await sleep(25);
  }
  if (!existsSync(socket)) throw new Error(`the driver did not start: ${out.slice(-2000)}`);
  const csi = csiClient(`unix://${socket}`);
  return {
    csi,
    child,
    ended,
    logs: () => out,
    stop: async () => {
      csi.close();
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGTERM');
      await ended;
    },
  };
}
