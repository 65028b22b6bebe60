import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { type DirectCinder, removeByPrefix, secretCinder } from '../../helpers/cinder.js';
import { expectCode } from '../../helpers/csi-client.js';
import { startTestDriver, type TestDriver } from '../../helpers/driver.js';
import { localSecret, scratchDir } from '../../helpers/local-stack.js';
import { credentialFingerprint, type CredentialMap, parseCredential } from '../../../src/openstack/credentials.js';
import { controllerEnv, mount } from './fixtures.js';

/**
 * A tenant's Secret is a whole credential of its own or it is refused: it never borrows the driver's
 * configured credential, never sends anything to a host the operator did not allow, and no value of
 * it (nor a credential fingerprint) reaches an error or a log line. On the real Keystone and Cinder.
 */
const KEYSTONE = 'http://127.0.0.1:5000/v3';
const dir = scratchDir('secrets');

/** A listener standing where a tenant would like the driver to send credentials: it records everything. */
let listener: Server;
let listenerUrl: string;
const received: string[] = [];

/** A TLS-terminating proxy in front of the local Keystone, with its own CA: a tenant's Keystone that needs a ca-file. */
let proxy: Server;
let proxyUrl: string;
let caPem: string;

function makeCa(): { key: string; cert: string; ca: string } {
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ssl('req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-days', '2', '-subj', '/CN=stackube test CA', '-keyout', f('ca.key'), '-out', f('ca.crt'));
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('tls.key'), '-out', f('tls.csr'));
  writeFileSync(f('ext.cnf'), 'subjectAltName = IP:127.0.0.1\n');
  ssl('x509', '-req', '-in', f('tls.csr'), '-CA', f('ca.crt'), '-CAkey', f('ca.key'), '-CAcreateserial', '-days', '2', '-extfile', f('ext.cnf'), '-out', f('tls.crt'));
  return { key: readFileSync(f('tls.key'), 'utf8'), cert: readFileSync(f('tls.crt'), 'utf8'), ca: readFileSync(f('ca.crt'), 'utf8') };
}

const listen = (s: Server) => new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)));

beforeAll(async () => {
  listener = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(`${req.method} ${req.url} ${body}`);
      res.writeHead(201, { 'content-type': 'application/json', 'x-subject-token': 'stolen' }).end('{"token":{"expires_at":"2099-01-01T00:00:00Z"}}');
    });
  });
  listenerUrl = `http://127.0.0.1:${await listen(listener)}/v3`;

  const tls = makeCa();
  caPem = tls.ca;
  proxy = createHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    const up = httpRequest({ host: '127.0.0.1', port: 5000, method: req.method, path: req.url, headers: req.headers }, (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    });
    up.on('error', () => res.writeHead(502).end());
    req.pipe(up);
  });
  proxyUrl = `https://127.0.0.1:${await listen(proxy)}/v3`;
});
afterAll(async () => {
  listener.close();
  proxy.close();
});

// The allow list is set once the proxy's port is known: the driver starts in beforeAll, after the above.
const env = controllerEnv('secrets', {
  get options() {
    return { allowedAuthUrls: `${KEYSTONE},${proxyUrl}` };
  },
});
let tenantB: DirectCinder;
let appcredB: Record<string, string>;
let passwordB: Record<string, string>;
beforeAll(async () => {
  tenantB = await secretCinder('tenant-b');
  appcredB = localSecret('tenant-b');
  passwordB = localSecret('tenant-b-password');
});
afterAll(async () => {
  try {
    expect(await removeByPrefix(tenantB.cinder, env.prefix)).toEqual([]);
  } finally {
    await tenantB.close();
  }
});

/** Every value a log line or an error must never show: the Secrets' and the driver's own. */
const secretValues = () => [
  appcredB['application-credential-secret']!,
  passwordB.password!,
  localSecret('tenant-a-password').password!,
];

describe('a Secret that is not a whole credential of its own is refused, and nothing goes anywhere', () => {
  const projectIdB = () => JSON.parse(readFileSync(join(process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube', 'stack/identities.json'), 'utf8'))['tenant-b'].project_id as string;
  const shapes: [string, () => Record<string, string>, RegExp][] = [
    ['auth-url only', () => ({ 'auth-url': listenerUrl }), /credential: holds no credential of its own.*auth-url: is not a Keystone the operator allows/],
    ['auth-url + project-id', () => ({ 'auth-url': listenerUrl, 'project-id': projectIdB() }), /holds no credential of its own/],
    ['project-name only', () => ({ 'project-name': 'tenant-b' }), /holds no credential of its own/],
    ['project-id only', () => ({ 'project-id': projectIdB() }), /holds no credential of its own/],
    ['username only', () => ({ username: passwordB.username! }), /holds no credential of its own/],
    ['a password without a user', () => ({ password: passwordB.password!, 'project-name': 'tenant-b' }), /username: username or user-id is required/],
    ['a password without a project', () => ({ username: passwordB.username!, password: passwordB.password! }), /project-name: .*is required/],
    ['an application credential id without its secret', () => ({ 'application-credential-id': appcredB['application-credential-id']! }), /application-credential-secret: is required/],
    ['a whole credential aimed at a host the operator did not allow', () => ({ ...appcredB, 'auth-url': listenerUrl }), /^the provisioner secret .*auth-url: is not a Keystone the operator allows/],
    ['a password and an application credential at once', () => ({ ...appcredB, password: passwordB.password!, username: passwordB.username! }), /password: a Secret holds one credential/],
    ['tls-insecure, which the operator did not allow', () => ({ ...appcredB, 'tls-insecure': 'true' }), /tls-insecure: the operator does not let Secrets turn TLS verification off/],
    ['a ca-file path the operator did not configure', () => ({ ...appcredB, 'ca-file': '/etc/passwd' }), /ca-file: in a Secret must hold the PEM certificates themselves/],
  ];
  test.each(shapes)('%s → INVALID_ARGUMENT naming the role and the keys, no volume, no request', async (_what, secrets, why) => {
    const name = env.name();
    const err = await expectCode(env.ctl.CreateVolume({ name, volume_capabilities: [mount()], secrets: secrets() }), status.INVALID_ARGUMENT);
    expect(err.details).toMatch(/^the provisioner secret \(csi.storage.k8s.io\/provisioner-secret-name\): /);
    expect(err.details).toMatch(why);
    expect(err.details.length).toBeLessThan(1024);
    for (const v of [...secretValues(), ...Object.values(secrets()).filter((v) => v.length >= 4)]) expect(err.details).not.toContain(v);
    expect(await env.direct.cinder.volumesNamed(name)).toEqual([]);
    expect(await tenantB.cinder.volumesNamed(name)).toEqual([]);
    expect(received).toEqual([]);
  });

  test('the other roles are refused the same way (publish, expand, snapshot), naming their Secret', async () => {
    const volume = await env.create();
    const bad = { 'auth-url': listenerUrl, 'project-name': 'tenant-b' };
    const publish = await expectCode(env.ctl.ControllerPublishVolume({ volume_id: volume.volume_id, node_id: 'n', volume_capability: mount(), secrets: bad }), status.INVALID_ARGUMENT);
    expect(publish.details).toMatch(/^the controller-publish secret/);
    const expand = await expectCode(env.ctl.ControllerExpandVolume({ volume_id: volume.volume_id, capacity_range: { required_bytes: 2 * 1024 ** 3 }, secrets: bad }), status.INVALID_ARGUMENT);
    expect(expand.details).toMatch(/^the controller-expand secret/);
    const snap = await expectCode(env.ctl.CreateSnapshot({ source_volume_id: volume.volume_id, name: env.name('s'), secrets: bad }), status.INVALID_ARGUMENT);
    expect(snap.details).toMatch(/^the snapshotter secret/);
    expect((await env.direct.cinder.getVolume(volume.volume_id)).size).toBe(1);
    expect(received).toEqual([]);
  });
});

describe("a tenant's own whole credential works", () => {
  test.each([
    ['application credential', () => appcredB],
    ['password', () => passwordB],
    ['password, auth-url and region left to the configuration', () => ({ username: passwordB.username!, password: passwordB.password!, 'project-name': 'tenant-b', 'user-domain-name': 'Default', 'project-domain-name': 'Default' })],
  ])('%s', async (_what, secrets) => {
    const { volume } = await env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: secrets() });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    expect(await env.direct.cinder.findVolume(volume.volume_id)).toBeUndefined();
    await env.ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: secrets() });
  });

  test('through an allowed Keystone behind TLS, trusting the CA the Secret carries in ca-file', async () => {
    const viaTls = { ...appcredB, 'auth-url': proxyUrl, 'ca-file': caPem };
    const { volume } = await env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: viaTls });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    await env.ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: viaTls });
    // without that CA the same Keystone is not trusted: a clear UNAVAILABLE, not INTERNAL
    const err = await expectCode(env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: { ...appcredB, 'auth-url': proxyUrl } }), status.UNAVAILABLE);
    expect(err.details).toMatch(/Keystone at https:\/\/127.0.0.1:\d+ is unreachable/);
    const garbage = await expectCode(env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: { ...viaTls, 'ca-file': '-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----' } }), status.INVALID_ARGUMENT);
    expect(garbage.details).toMatch(/ca-file: holds text that is not PEM certificates/);
  });
});

describe('cinder-csi-plugin multi-cloud: [Global "name"] sections and Secrets that name one', () => {
  let multi: TestDriver;
  beforeAll(async () => {
    const a = localSecret('tenant-a-password');
    const b = passwordB;
    const section = (m: Record<string, string>) =>
      ['auth-url', 'region', 'username', 'password', 'user-domain-name', 'project-name', 'project-domain-name'].map((k) => `${k} = ${m[k]}\n`).join('');
    const conf = join(dir, 'multi.conf');
    writeFileSync(conf, `[Global]\n${section(a)}\n[Global "b"]\n${section(b)}\n[BlockStorage]\nbs-version = v3\n`, { mode: 0o600 });
    multi = await startTestDriver({ options: { config: conf } });
  });
  afterAll(async () => multi?.stop());

  test('a Secret holding only `cloud: b` acts in tenant-b; without one the driver acts as [Global]', async () => {
    const { volume } = await multi.client.Controller.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: { cloud: 'b' } });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    await multi.client.Controller.DeleteVolume({ volume_id: volume.volume_id, secrets: { cloud: 'b' } });
    const own = (await multi.client.Controller.CreateVolume({ name: env.name(), volume_capabilities: [mount()] })).volume;
    expect((await env.direct.cinder.getVolume(own.volume_id)).status).toBe('available');
    await multi.client.Controller.DeleteVolume({ volume_id: own.volume_id });
  });

  test('an unknown cloud, or a cloud with other keys beside it, is INVALID_ARGUMENT', async () => {
    const unknown = await expectCode(multi.client.Controller.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: { cloud: 'nope' } }), status.INVALID_ARGUMENT);
    expect(unknown.details).toMatch(/cloud: names no cloud the driver is configured with \(it has "b"\)/);
    const mixed = await expectCode(multi.client.Controller.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: { cloud: 'b', 'auth-url': listenerUrl } }), status.INVALID_ARGUMENT);
    expect(mixed.details).toMatch(/cloud: a Secret that selects a configured cloud holds nothing else \(this one also holds auth-url\)/);
    expect(received).toEqual([]);
  });

  test('--cloud-name picks the default cloud', async () => {
    const conf = join(dir, 'multi.conf');
    const b = await startTestDriver({ options: { config: conf, cloud: 'b' } });
    try {
      const { volume } = await b.client.Controller.CreateVolume({ name: env.name(), volume_capabilities: [mount()] });
      expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
      await b.client.Controller.DeleteVolume({ volume_id: volume.volume_id });
    } finally {
      await b.stop();
    }
  });
});

test('no secret value and no credential fingerprint in any log line', () => {
  const logs = env.driver.logs.text();
  expect(logs).toContain('INVALID_ARGUMENT');
  for (const v of secretValues()) expect(logs).not.toContain(v);
  for (const m of [appcredB, passwordB, localSecret('tenant-a-password')]) {
    const c = parseCredential(m as CredentialMap, 'test');
    expect(logs).not.toContain(credentialFingerprint(c));
    expect(logs).not.toContain(credentialFingerprint({ ...c, caPem: undefined }));
  }
});
