import { spawn } from 'node:child_process';
import { readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { execa } from 'execa';
import { CLIENT_ADDRESS } from '../../../src/fencing-records.js';
import { CephCallError, CephSession } from '../../../src/node/ceph/session.js';
import { CEPH_CONF, CEPH_KEYRING, scratchDir, STACK } from '../../../harness/local-stack.js';

/**
 * The node's Ceph session against deploy/local's real cluster: the calls do what the rbd and rados tools do, each
 * identity (keyring bytes included) has its own connection, Ceph's errors keep their errno, and a helper that
 * dies or idles out is started again by the next call. No helper outlives its session.
 */
const POOL = STACK.CEPH_POOL!;
const IMAGE = `ceph-session-test-${process.pid}`;
const OBJECT = `ceph-session-test-${process.pid}`;
const CEPH = ['-c', CEPH_CONF, '--id', 'cinder'];
const dir = scratchDir('ceph-session');
const who = (keyringFile = CEPH_KEYRING) => ({
  spec: { pool: POOL, user: 'cinder', monitors: ['127.0.0.1:6789'] },
  keyringFile,
});
let session: CephSession;

/** The pids of this machine's Ceph session helpers. */
function helpers(): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((p) => {
      try {
        return readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('helpers/ceph-session.py');
      } catch {
        return false;
      }
    })
    .map(Number);
}

beforeAll(async () => {
  await execa('rbd', [...CEPH, 'create', '--size', '16M', `${POOL}/${IMAGE}`]);
  session = new CephSession({ cephConf: CEPH_CONF });
});
afterAll(async () => {
  session.end();
  await execa('rbd', [...CEPH, 'rm', '--no-progress', `${POOL}/${IMAGE}`], { reject: false });
  await execa('rados', [...CEPH, '-p', POOL, 'rm', OBJECT], { reject: false });
  rmSync(dir, { recursive: true, force: true });
});

test('omap records: set, read, list and remove as rados shows them; a missing object reads as empty', async () => {
  expect(await session.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: [] });
  expect(await session.call('omap-get', who(), { object: OBJECT, key: 'a' })).toEqual({ value: null });
  await session.call('omap-remove', who(), { object: OBJECT, key: 'a' }); // nothing to remove is fine
  await session.call('omap-set', who(), { object: OBJECT, key: 'a/1', value: '{"x":"ü"}' });
  await session.call('omap-set', who(), { object: OBJECT, key: 'b', value: 'two' });
  const { stdout } = await execa('rados', [...CEPH, '-p', POOL, 'getomapval', OBJECT, 'a/1', '-']);
  expect(stdout).toBe('{"x":"ü"}');
  expect(await session.call('omap-get', who(), { object: OBJECT, key: 'a/1' })).toEqual({ value: '{"x":"ü"}' });
  expect(await session.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['a/1', 'b'] });
  await session.call('omap-remove', who(), { object: OBJECT, key: 'a/1' });
  expect(await session.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['b'] });
});

test("an image's watchers: none, then the client that opened it (the session's own read-only open is none)", async () => {
  expect(await session.call('watchers', who(), { image: IMAGE })).toEqual({ watchers: [] });
  // another client holds the image open (as a mapper does) until its stdin closes
  const holder = spawn(
    '/usr/bin/python3',
    [
      '-c',
      `import rados, rbd, sys
c = rados.Rados(conffile='${CEPH_CONF}', name='client.cinder'); c.connect()
io = c.open_ioctx('${POOL}'); im = rbd.Image(io, '${IMAGE}')
print('open', flush=True); sys.stdin.read()`,
    ],
    { stdio: ['pipe', 'pipe', 'inherit'] },
  );
  await new Promise((resolve) => holder.stdout.once('data', resolve));
  try {
    const { watchers } = (await session.call('watchers', who(), { image: IMAGE })) as { watchers: string[] };
    expect(watchers).toHaveLength(1);
    expect(watchers[0]).toMatch(CLIENT_ADDRESS);
  } finally {
    holder.stdin.end();
    await new Promise((resolve) => holder.once('exit', resolve));
  }
});

test("an image's ends: blank while its first and last 128 KiB are zeros, whatever lies between", async () => {
  const ends = async () => (await session.call('ends-zero', who(), { image: IMAGE, bytes: String(128 * 1024) })).blank;
  const write = (offset: number, byte: number) =>
    execa('/usr/bin/python3', [
      '-c',
      `import rados, rbd
c = rados.Rados(conffile='${CEPH_CONF}', name='client.cinder'); c.connect()
io = c.open_ioctx('${POOL}')
with rbd.Image(io, '${IMAGE}') as im: im.write(bytes([${byte}]), ${offset}); im.flush()
c.shutdown()`,
    ]);
  const size = 16 * 1024 * 1024;
  expect(await ends()).toBe(true);
  await write(size / 2, 1); // the middle is not looked at
  expect(await ends()).toBe(true);
  await write(size - 128 * 1024, 7); // the first byte of the last 128 KiB
  expect(await ends()).toBe(false);
  await write(size - 128 * 1024, 0);
  expect(await ends()).toBe(true);
  await write(128 * 1024 - 1, 7); // the last byte of the first 128 KiB
  expect(await ends()).toBe(false);
  await write(128 * 1024 - 1, 0);
});

test("Ceph's refusals keep their errno: a missing image is 2, a key Ceph does not know is refused even after the right one connected", async () => {
  await expect(session.call('watchers', who(), { image: 'no-such-image' })).rejects.toMatchObject({
    reason: 'ceph',
    errno: 2,
    said: expect.stringMatching(/^\(2\) No such file or directory/),
  });
  const wrong = join(dir, 'wrong.keyring');
  writeFileSync(wrong, '[client.cinder]\n\tkey = AQBAchdrAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA==\n', { mode: 0o600 });
  const refused = await session.call('omap-keys', who(wrong), { object: OBJECT }).catch((e: unknown) => e);
  expect(refused).toBeInstanceOf(CephCallError);
  expect((refused as CephCallError).said).toMatch(/\((1|13)\) /);
  expect((refused as CephCallError).said).not.toMatch(/AQBAchdr/);
  // a keyring that cannot be read is a refused identity too, said as the Ceph tools say it
  await expect(session.call('omap-keys', who(join(dir, 'none.keyring')), { object: OBJECT })).rejects.toMatchObject({
    reason: 'ceph',
    said: expect.stringMatching(/failed to load keyring .*none\.keyring: No such file or directory/),
  });
  // and the right key still works, on its own connection
  expect(await session.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['b'] });
});

test("a helper killed under a call fails that call as the helper's; the next call starts a new one", async () => {
  await session.call('omap-keys', who(), { object: OBJECT });
  const [pid] = helpers();
  expect(pid).toBeDefined();
  // a call the helper cannot answer before it dies: a monitor that never answers
  const pending = session
    .call('omap-keys', { ...who(), spec: { ...who().spec, monitors: ['192.0.2.1:6789'] } }, { object: OBJECT })
    .catch((e: unknown) => e);
  await sleep(200);
  process.kill(pid!, 'SIGKILL');
  expect(await pending).toMatchObject({ reason: 'helper', said: expect.stringMatching(/exited \(SIGKILL\)/) });
  expect(await session.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['b'] });
  expect(helpers()).not.toContain(pid);
});

test('a cancelled call is answered at once; an idle helper ends and the next call starts another', async () => {
  const idle = new CephSession({ cephConf: CEPH_CONF, idleMs: 200 });
  const before = new Set(helpers());
  const abort = new AbortController();
  const call = idle
    .call(
      'omap-keys',
      { ...who(), spec: { ...who().spec, monitors: ['192.0.2.1:6789'] } },
      { object: OBJECT },
      {
        signal: abort.signal,
      },
    )
    .catch((e: unknown) => e);
  abort.abort();
  expect(await call).toMatchObject({ reason: 'cancelled' });
  expect(await idle.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['b'] });
  const mine = helpers().filter((p) => !before.has(p));
  expect(mine).toHaveLength(1);
  for (let i = 0; i < 100 && helpers().includes(mine[0]!); i++) await sleep(50);
  expect(helpers()).not.toContain(mine[0]);
  expect(await idle.call('omap-keys', who(), { object: OBJECT })).toEqual({ keys: ['b'] });
  idle.end();
});

test("a python that cannot run the helper is the helper's failure, said so", async () => {
  const broken = new CephSession({ cephConf: CEPH_CONF, python: join(dir, 'no-python') });
  await expect(broken.call('omap-keys', who(), { object: OBJECT })).rejects.toMatchObject({
    reason: 'helper',
    said: expect.stringMatching(/could not start .*python3-rados/),
  });
});
