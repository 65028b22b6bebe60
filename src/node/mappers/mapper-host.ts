import { spawn } from 'node:child_process';
import { chmod, open, rm } from 'node:fs/promises';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { execa } from 'execa';
import { z } from 'zod';
import type { Logger } from '../../log.js';
import { CommandError, type Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import { memoryReading, type MemoryReading } from '../host/volume-limit.js';
import { readLoopTable } from '../host/loop.js';
import { processAlive } from '../host/processes.js';

/**
 * The mapper daemons' own home. rbd-fuse and rbd-nbd serve a volume for as long as it is staged, so
 * they must not live in the node plugin's container, whose restart (a crash, an OOM kill, a failed
 * liveness probe, an image upgrade) would end every one of them and every pod's I/O with them. In the
 * node pod a second, long-lived container runs `stackube-csi mapper-host`: this small server, which
 * starts the daemons (and runs `rbd-nbd map`, whose daemon forks off) on the plugin's behalf, so they
 * belong to its container. The pod shares one PID namespace (shareProcessNamespace), so the plugin still
 * sees, checks and stops them by pid.
 *
 * Protocol: one JSON request per connection, one JSON answer. Only the plugin beside it can connect:
 * the socket is 0600 in a directory only the two containers mount.
 */

const requestSchema = z.discriminatedUnion('op', [
  z.object({ op: z.literal('ping') }),
  /** The loop table as this container sees it: the backing files are on its mounts (see LoopDevices). */
  z.object({ op: z.literal('loops') }),
  /** This container's memory (its cgroup): the daemons' room, for the node's volume limit. */
  z.object({ op: z.literal('memory') }),
  /** A daemon: started detached, its output into `log`, not waited for. */
  z.object({
    op: z.literal('spawn'),
    cmd: z.string(),
    args: z.array(z.string()),
    env: z.record(z.string(), z.string()),
    log: z.string(),
  }),
  /** A command run to its end (one that leaves a daemon behind, such as `rbd-nbd map`). */
  z.object({
    op: z.literal('exec'),
    cmd: z.string(),
    args: z.array(z.string()),
    env: z.record(z.string(), z.string()),
    timeoutMs: z.number().int().positive(),
  }),
]);
type Request = z.infer<typeof requestSchema>;

/** Only what the mappers start (and the loop device over rbd-fuse's file), never an arbitrary program. */
const ALLOWED = new Set(['rbd-fuse', 'rbd-nbd', 'losetup']);
const MAX_REQUEST = 64 * 1024;

export async function serveMapperHost(socketPath: string, log: Logger): Promise<Server> {
  await rm(socketPath, { force: true });
  const server = createServer((sock) => handle(sock, log));
  await new Promise<void>((resolve, reject) => server.once('error', reject).listen(socketPath, resolve));
  await chmod(socketPath, 0o600);
  log.info({ socket: socketPath }, 'mapper host: serving the node plugin');
  return server;
}

function handle(sock: Socket, log: Logger): void {
  let buf = '';
  sock.setEncoding('utf8');
  sock.on('data', (d: string) => {
    buf += d;
    if (buf.length > MAX_REQUEST) sock.destroy();
    else if (buf.includes('\n')) void answer(buf.slice(0, buf.indexOf('\n')));
  });
  sock.on('error', () => undefined);
  const reply = (v: object) => sock.end(`${JSON.stringify(v)}\n`);
  async function answer(line: string) {
    let req: Request;
    try {
      req = requestSchema.parse(JSON.parse(line));
    } catch {
      return reply({ error: 'not a request' });
    }
    if (req.op === 'ping') return reply({ ok: true, pid: process.pid });
    if (req.op === 'loops') return reply({ loops: await readLoopTable() });
    if (req.op === 'memory') return reply({ memory: await memoryReading() });
    if (!ALLOWED.has(req.cmd)) return reply({ error: `${req.cmd} is not a mapper daemon` });
    try {
      if (req.op === 'spawn') {
        const out = await open(req.log, 'w', 0o600);
        try {
          const child = spawn(req.cmd, req.args, {
            env: { ...process.env, ...req.env },
            detached: true,
            stdio: ['ignore', out.fd, out.fd],
          });
          child.once('exit', (code, signal) =>
            log.info({ cmd: req.cmd, pid: child.pid, code, signal }, 'mapper daemon exited'),
          );
          child.once('error', (e) => log.warn({ cmd: req.cmd, error: e.message }, 'mapper daemon could not start'));
          log.info({ cmd: req.cmd, pid: child.pid }, 'mapper daemon started');
          return reply({ pid: child.pid ?? 0 });
        } finally {
          await out.close();
        }
      }
      const r = await execa(req.cmd, req.args, {
        env: req.env,
        timeout: req.timeoutMs,
        reject: false,
        stdin: 'ignore',
      });
      return reply({ exitCode: r.exitCode ?? -1, stdout: String(r.stdout ?? ''), stderr: String(r.stderr ?? '') });
    } catch (e) {
      return reply({ error: (e as Error).message });
    }
  }
}

/** How a mapper starts a daemon: here (a plugin process of its own, as on a plain host) or in the mapper host. */
export interface DaemonStarter {
  /** Start `cmd` detached with its output into `log`; `exitCode()` is undefined while it runs. */
  spawn(
    cmd: string,
    args: string[],
    env: Record<string, string>,
    log: string,
  ): Promise<{ pid: number; exitCode: () => number | undefined }>;
}

/** Daemons as children of this plugin, in a session of their own (the plugin process may die, they stay). */
export const localDaemons: DaemonStarter = {
  async spawn(cmd, args, env, log) {
    const out = await open(log, 'w', 0o600);
    try {
      const child = spawn(cmd, args, {
        env: { ...process.env, ...env },
        detached: true,
        stdio: ['ignore', out.fd, out.fd],
      });
      let exitCode: number | undefined;
      child.once('exit', (code, signal) => (exitCode = code ?? (signal ? 128 : -1)));
      child.once('error', () => (exitCode = -1));
      child.unref();
      if (!child.pid) throw new NodeError('internal', `${cmd} could not start (is it installed?)`);
      return { pid: child.pid, exitCode: () => exitCode };
    } finally {
      await out.close();
    }
  },
};

/** The mapper host's client: daemons live in its container, so the plugin's can restart under them. */
export class MapperHostClient implements DaemonStarter {
  constructor(private readonly socketPath: string) {}

  private request<T>(req: Request, timeoutMs: number): Promise<T> {
    return new Promise<T>((resolve, reject) => {
      const sock = createConnection(this.socketPath);
      let buf = '';
      const fail = (why: string) => {
        sock.destroy();
        reject(
          new NodeError(
            'unavailable',
            `the mapper host at ${this.socketPath} ${why} (is its container running? see node.yaml)`,
          ),
        );
      };
      const timer = setTimeout(() => fail(`did not answer in ${timeoutMs} ms`), timeoutMs);
      sock.setEncoding('utf8');
      sock.on('connect', () => sock.write(`${JSON.stringify(req)}\n`));
      sock.on('data', (d: string) => (buf += d));
      sock.on(
        'error',
        (e) => (clearTimeout(timer), fail(`cannot be reached: ${(e as NodeJS.ErrnoException).code ?? e.message}`)),
      );
      sock.on('end', () => {
        clearTimeout(timer);
        try {
          const v = JSON.parse(buf) as T & { error?: string };
          if (v.error) reject(new NodeError('internal', `mapper host: ${v.error}`));
          else resolve(v);
        } catch {
          fail('answered something that is not JSON');
        }
      });
    });
  }

  async ping(): Promise<void> {
    await this.request({ op: 'ping' }, 5000);
  }

  async loops(): Promise<Record<string, string>> {
    return (await this.request<{ loops: Record<string, string> }>({ op: 'loops' }, 10_000)).loops;
  }

  async memory(): Promise<MemoryReading> {
    return (await this.request<{ memory: MemoryReading }>({ op: 'memory' }, 10_000)).memory;
  }

  async spawn(cmd: string, args: string[], env: Record<string, string>, log: string) {
    const { pid } = await this.request<{ pid: number }>({ op: 'spawn', cmd, args, env, log }, 30_000);
    if (!pid) throw new NodeError('internal', `${cmd} could not start in the mapper host`);
    // not our child: seen gone through the shared PID namespace (its exit code is the mapper host's to log)
    return { pid, exitCode: () => (processAlive(pid) ? undefined : -1) };
  }

  async exec(cmd: string, args: string[], env: Record<string, string>, timeoutMs: number) {
    return this.request<{ exitCode: number; stdout: string; stderr: string }>(
      { op: 'exec', cmd, args, env, timeoutMs },
      timeoutMs + 5000,
    );
  }
}

/** A Runner whose commands run in the mapper host (for `rbd-nbd map`: its daemon is to live there). */
export function mapperHostRunner(client: MapperHostClient): Runner {
  return async (cmd, args, o = {}) => {
    const timeoutMs = o.timeoutMs ?? 60_000;
    const r = await client.exec(cmd, args, o.env ?? {}, timeoutMs);
    const shown = [cmd, ...args].join(' ');
    if (r.exitCode !== 0 && !(o.okExitCodes ?? []).includes(r.exitCode))
      throw new CommandError(shown, r.exitCode, r.stderr || r.stdout, 'exit');
    return r;
  };
}
