import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { cpSync, existsSync } from 'node:fs';
import { createConnection, createServer, type Server, type Socket } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { PACKAGE_ROOT } from '../../src/package-info.js';
import { csiClient, expectCode } from '../helpers/csi-client.js';
import { CEPH_CONF, CLOUD_CONF, scratchDir, STACK } from '../../harness/local-stack.js';

// The built CLI as an operator runs it (npm test builds dist/ first).
const MAIN = join(PACKAGE_ROOT, 'dist', 'src', 'main.js');

interface Proc {
  child: ChildProcess;
  out: () => string;
  exited: Promise<number | null>;
}
function run(args: string[], env: NodeJS.ProcessEnv = {}): Proc {
  const child = spawn(process.execPath, [MAIN, ...args], {
    env: { PATH: process.env.PATH, ...env },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  const exited = new Promise<number | null>((resolve) => child.on('exit', (code) => resolve(code)));
  return { child, out: () => out, exited };
}
async function waitFor(what: () => boolean, ms = 10_000) {
  const until = Date.now() + ms;
  while (!what()) {
    if (Date.now() > until) throw new Error('timed out waiting');
    await new Promise((r) => setTimeout(r, 25));
  }
}
const nodeArgs = (sock: string, dir: string) => [
  'serve',
  '--mode',
  'node',
  '--node-id',
  'n1',
  '--endpoint',
  `unix://${sock}`,
  '--kubelet-root',
  dir,
];

test('a bad flag or config exits 2 naming what is wrong', async () => {
  const bad = run(['serve', '--mode', 'node', '--node-id', 'n1', '--rbd-mapper', 'iscsi']);
  expect(await bad.exited).toBe(2);
  expect(bad.out()).toMatch(/--rbd-mapper \(RBD_MAPPER\): must be auto, krbd, nbd or fuse \(got "iscsi"\)/);
  const unknown = run(['serve', '--no-such-flag']);
  expect(await unknown.exited).toBe(2);
  expect(unknown.out()).toMatch(/Unknown option '--no-such-flag'/);
});

test('version prints the package version', async () => {
  const p = run(['version']);
  expect(await p.exited).toBe(0);
  expect(p.out().trim()).toMatch(/^\d+\.\d+\.\d+/);
});

test('a stale socket is replaced; a live one is refused', async () => {
  const dir = scratchDir('proc');
  const sock = join(dir, 'csi.sock');
  const first = run(nodeArgs(sock, dir));
  await waitFor(() => first.out().includes('"serving"'));
  // a second plugin on the same socket must not steal it
  const second = run(nodeArgs(sock, dir));
  expect(await second.exited).toBe(1);
  expect(second.out()).toMatch(/another process is already serving .*csi.sock/);
  // a crash leaves the socket file behind; the next start removes it and serves
  first.child.kill('SIGKILL');
  await first.exited;
  expect(existsSync(sock)).toBe(true);
  const third = run(nodeArgs(sock, dir));
  await waitFor(() => third.out().includes('"serving"'));
  const client = csiClient(`unix://${sock}`);
  expect((await client.Node.NodeGetInfo({})).node_id).toBe('n1');
  client.close();
  third.child.kill('SIGTERM');
  expect(await third.exited).toBe(0);
  expect(existsSync(sock)).toBe(false);
});

/** A TCP proxy that holds each connection's first bytes for `delayMs`: a slow Keystone, for real. */
async function slowProxy(
  target: number,
  delayMs: number,
): Promise<{ port: number; server: Server; held: () => number }> {
  const sockets: Socket[] = [];
  const server = createServer((client) => {
    const upstream = createConnection(target, '127.0.0.1');
    sockets.push(client, upstream);
    client.once('data', (first) => {
      setTimeout(() => {
        upstream.write(first);
        client.pipe(upstream);
        upstream.pipe(client);
      }, delayMs);
    });
    const end = () => [client, upstream].forEach((s) => s.destroy());
    client.on('error', end);
    upstream.on('error', end);
  });
  server.on('close', () => sockets.forEach((s) => s.destroy()));
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { port: (server.address() as { port: number }).port, server, held: () => sockets.length / 2 };
}

test('SIGTERM lets an RPC in flight finish, refuses new ones, then exits 0', async () => {
  const dir = scratchDir('proc');
  const sock = join(dir, 'csi.sock');
  const proxy = await slowProxy(5000, 1500);
  try {
    const p = run(['serve', '--mode', 'controller', '--config', CLOUD_CONF, '--endpoint', `unix://${sock}`], {
      OS_AUTH_URL: `http://127.0.0.1:${proxy.port}/v3`,
    });
    await waitFor(() => p.out().includes('"serving"'));
    const client = csiClient(`unix://${sock}`);
    const started = Date.now();
    const inFlight = client.Identity.Probe({}); // waits on the slow Keystone
    await waitFor(() => proxy.held() > 0); // the Probe is being answered: its request sits in the proxy
    p.child.kill('SIGTERM');
    await waitFor(() => p.out().includes('draining'));
    // a call after the signal does not start
    const late = csiClient(`unix://${sock}`);
    await expectCode(late.Identity.GetPluginInfo({}, { deadlineMs: 3000 }), status.UNAVAILABLE);
    late.close();
    expect(await inFlight).toEqual({ ready: { value: true } });
    expect(Date.now() - started).toBeGreaterThanOrEqual(1500);
    expect(await p.exited).toBe(0);
    expect(p.out()).toMatch(/"inFlight":1/);
    client.close();
  } finally {
    proxy.server.close();
  }
});

test('doctor reports what this host offers and whether Keystone and Cinder answer', async () => {
  const dir = scratchDir('proc');
  const p = run(['doctor', '--config', CLOUD_CONF, '--kubelet-root', dir, '--rbd-mapper', 'fuse']);
  expect(await p.exited).toBe(0);
  const out = p.out();
  expect(out).toMatch(/^ok\s+node\s+rbd-fuse\s+\/usr\/bin\/rbd-fuse$/m);
  expect(out).toMatch(/^warn\s+node\s+kernel rbd\s+not available: krbd mapper unusable/m);
  expect(out).toMatch(/^ok\s+node\s+rbd mapper \(fuse\)\s+usable$/m);
  expect(out).toMatch(/^ok\s+node\s+ceph session\s+python3 with rados and rbd/m);
  expect(out).toMatch(/^ok\s+controller\s+keystone\s+token issued for user tenant-a-member in project tenant-a/m);
  expect(out).toMatch(/^ok\s+controller\s+cinder microversion\s+3\.\d+$/m);
  expect(out).toMatch(/all required checks passed/);
});

test('doctor names each failure and what to fix, and exits 1', async () => {
  const p = run(['doctor', '--config', CLOUD_CONF, '--kubelet-root', '/nonexistent-kubelet', '--rbd-mapper', 'nbd'], {
    OS_PASSWORD: 'wrong-password-here',
  });
  expect(await p.exited).toBe(1);
  const out = p.out();
  expect(out).toMatch(/^FAIL\s+node\s+rbd mapper \(nbd\)\s+the kernel has no nbd module/m);
  expect(out).toMatch(/^FAIL\s+node\s+kubelet root\s+\/nonexistent-kubelet is not a directory: set --kubelet-root/m);
  expect(out).toMatch(
    /^FAIL\s+controller\s+keystone\s+Keystone rejected user tenant-a-member .* — check auth-url, the credential and the catalog/m,
  );
  expect(out).not.toContain('wrong-password-here');
});

test("doctor reads each pool as the controller's Ceph identity, and names one it cannot", async () => {
  const p = run([
    'doctor',
    '--mode',
    'controller',
    '--config',
    CLOUD_CONF,
    '--controller-ceph-conf',
    CEPH_CONF,
    '--rbd-pools',
    'volumes,no-such-pool',
  ]);
  expect(await p.exited).toBe(1);
  expect(p.out()).toMatch(/^ok\s+controller\s+ceph pool volumes\s+\d+ images, read as client\.stackube-controller/m);
  expect(p.out()).toMatch(/^FAIL\s+controller\s+ceph pool no-such-pool\s+.*\(2\) No such file or directory — check/m);
});

test('doctor with a broken config still inspects the node and says what is wrong', async () => {
  const p = run(['doctor', '--mode', 'controller', '--kubelet-root', '/tmp']);
  expect(await p.exited).toBe(1);
  expect(p.out()).toMatch(/^FAIL\s+config\s+no cloud: give --config/m);
  expect(p.out()).toMatch(/^ok\s+node\s+losetup/m);
});

test('doctor says whether attachMode auto can reach the Kubernetes API', async () => {
  const dir = scratchDir('proc');
  const none = run(['doctor', '--mode', 'node', '--kubelet-root', dir, '--rbd-mapper', 'fuse']);
  expect(await none.exited).toBe(0);
  expect(none.out()).toMatch(
    /^warn\s+node\s+kubernetes api\s+neither KUBECONFIG nor the in-cluster variables .* are set: attachMode auto cannot see RuntimeClasses/m,
  );
  const broken = run(['doctor', '--mode', 'node', '--kubelet-root', dir, '--rbd-mapper', 'fuse'], {
    KUBECONFIG: join(dir, 'no-such-kubeconfig'),
  });
  expect(await broken.exited).toBe(1);
  expect(broken.out()).toMatch(
    /^FAIL\s+node\s+kubernetes api\s+.*no-such-kubeconfig.*: fix KUBECONFIG or the service account mount$/m,
  );
});

test('the bundle the image ships runs on its own: no node_modules, only package.json, proto/, helpers/ and dist/bundle', async () => {
  const app = scratchDir('image');
  for (const part of ['package.json', 'proto', 'helpers', join('dist', 'bundle')])
    cpSync(join(PACKAGE_ROOT, part), join(app, part), { recursive: true });
  const sock = join(app, 'csi.sock');
  const child = spawn(
    process.execPath,
    [
      join(app, 'dist', 'bundle', 'main.js'),
      'serve',
      '--mode',
      'all',
      '--node-id',
      'img',
      // clouds.yaml: the yaml package is loaded lazily, which the bundle must resolve like the sources do
      '--config',
      STACK.CLOUDS_YAML!,
      '--cloud',
      'tenant-a',
      '--endpoint',
      `unix://${sock}`,
      '--kubelet-root',
      app,
      '--state-dir',
      join(app, 'state'),
    ],
    {
      cwd: app,
      env: { PATH: process.env.PATH },
      stdio: ['ignore', 'pipe', 'pipe'],
    },
  );
  let out = '';
  child.stdout.on('data', (d) => (out += d));
  child.stderr.on('data', (d) => (out += d));
  try {
    await waitFor(() => out.includes('"serving"'));
    const client = csiClient(`unix://${sock}`);
    expect((await client.Identity.GetPluginInfo({})).name).toBe('cinder.csi.stackube.io');
    // Keystone, Cinder and the node's tools
    expect(await client.Identity.Probe({})).toEqual({ ready: { value: true } });
    expect((await client.Controller.ControllerGetCapabilities({})).capabilities.length).toBeGreaterThan(5);
    client.close();
  } finally {
    child.kill('SIGTERM');
    await new Promise((r) => child.once('exit', r));
  }
  expect(out).not.toMatch(/Cannot find (module|package)/);
});

test.each(['serve', 'doctor', 'mapper-host', 'version', 'call', 'demo'])(
  '`%s --help` says what it does and takes, and exits 0',
  async (command) => {
    const p = run([command, '--help']);
    expect(await p.exited).toBe(0);
    expect(p.out()).toMatch(new RegExp(`usage:? *(stackube-csi )?${command}`, 'i'));
  },
);

test('an older Node.js gets one line naming the version needed and how to run it', async () => {
  // the machine's own node, where it is older than 24 (a fresh Debian machine's is 20)
  const system = ['/usr/bin/node', '/usr/local/bin/node'].find((n) => existsSync(n));
  const version = system ? spawnSync(system, ['--version']).stdout.toString().trim() : '';
  if (!system || Number(version.slice(1).split('.')[0]) >= 24) return; // nothing older here to try
  const r = spawnSync(system, [MAIN, 'version']);
  expect(r.status).toBe(1);
  expect(r.stderr.toString()).toMatch(
    /^stackube-csi needs Node\.js 24 or newer, not v\d+\S*: run it as npx stackube-csi … or npm start/,
  );
  expect(r.stderr.toString().trim().split('\n')).toHaveLength(1);
});
