import { execFileSync } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpServer, request as httpRequest, type Server } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { type DirectCinder, removeByPrefix, secretCinder } from '../../../harness/cinder.js';
import { expectCode } from '../../helpers/csi-client.js';
import { startTestDriver, type TestDriver } from '../../../harness/driver.js';
import { localSecret, scratchDir, STACK } from '../../../harness/local-stack.js';
import { credentialFingerprint, parseCredential } from '../../../src/openstack/credentials.js';
import { controllerEnv, mount } from './fixtures.js';

/**
 * A tenant's Secret is a whole credential of its own or it is refused: it never borrows the driver's
 * configured credential, never sends anything to a host the operator did not allow, and no value of
 * it (nor a credential fingerprint) reaches an error or a log line. On the real Keystone and Cinder.
 */
const KEYSTONE = STACK.KEYSTONE_URL!;
const dir = scratchDir('secrets');

/** A listener standing where a tenant would like the driver to send credentials: it records everything. */
let listener: Server;
let listenerUrl: string;
const received: string[] = [];

/**
 * A TLS-terminating proxy in front of the local Keystone, with its own CA: a tenant's Keystone that needs a ca-file.
 */
let proxy: Server;
let proxyUrl: string;
let caPem: string;

function makeCa(): { key: string; cert: string; ca: string } {
  const f = (n: string) => join(dir, n);
  const ssl = (...args: string[]) => execFileSync('openssl', args, { stdio: 'pipe' });
  ssl(
    'req',
    '-x509',
    '-newkey',
    'rsa:2048',
    '-nodes',
    '-days',
    '2',
    '-subj',
    '/CN=stackube test CA',
    '-keyout',
    f('ca.key'),
    '-out',
    f('ca.crt'),
  );
  ssl('req', '-newkey', 'rsa:2048', '-nodes', '-subj', '/CN=127.0.0.1', '-keyout', f('tls.key'), '-out', f('tls.csr'));
  writeFileSync(f('ext.cnf'), 'subjectAltName = IP:127.0.0.1\n');
  ssl(
    'x509',
    '-req',
    '-in',
    f('tls.csr'),
    '-CA',
    f('ca.crt'),
    '-CAkey',
    f('ca.key'),
    '-CAcreateserial',
    '-days',
    '2',
    '-extfile',
    f('ext.cnf'),
    '-out',
    f('tls.crt'),
  );
  return {
    key: readFileSync(f('tls.key'), 'utf8'),
    cert: readFileSync(f('tls.crt'), 'utf8'),
    ca: readFileSync(f('ca.crt'), 'utf8'),
  };
}

const listen = (s: Server) =>
  new Promise<number>((resolve) => s.listen(0, '127.0.0.1', () => resolve((s.address() as AddressInfo).port)));

beforeAll(async () => {
  listener = createHttpServer((req, res) => {
    let body = '';
    req.on('data', (c) => (body += c));
    req.on('end', () => {
      received.push(`${req.method} ${req.url} ${body}`);
      res
        .writeHead(201, { 'content-type': 'application/json', 'x-subject-token': 'stolen' })
        .end('{"token":{"expires_at":"2099-01-01T00:00:00Z"}}');
    });
  });
  listenerUrl = `http://127.0.0.1:${await listen(listener)}/v3`;

  const tls = makeCa();
  caPem = tls.ca;
  proxy = createHttpsServer({ key: tls.key, cert: tls.cert }, (req, res) => {
    const up = httpRequest(
      { host: '127.0.0.1', port: 5000, method: req.method, path: req.url, headers: req.headers },
      (r) => {
        res.writeHead(r.statusCode ?? 502, r.headers);
        r.pipe(res);
      },
    );
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
  const projectIdB = () => JSON.parse(readFileSync(STACK.IDENTITIES!, 'utf8'))['tenant-b'].project_id as string;
  const shapes: [string, () => Record<string, string>, RegExp][] = [
    [
      'auth-url only',
      () => ({ 'auth-url': listenerUrl }),
      /credential: holds no credential of its own.*auth-url: is not a Keystone the operator allows/,
    ],
    [
      'auth-url + project-id',
      () => ({ 'auth-url': listenerUrl, 'project-id': projectIdB() }),
      /holds no credential of its own/,
    ],
    ['project-name only', () => ({ 'project-name': 'tenant-b' }), /holds no credential of its own/],
    ['project-id only', () => ({ 'project-id': projectIdB() }), /holds no credential of its own/],
    ['username only', () => ({ username: passwordB.username! }), /holds no credential of its own/],
    [
      'a password without a user',
      () => ({ password: passwordB.password!, 'project-name': 'tenant-b' }),
      /username: username or user-id is required/,
    ],
    [
      'a password without a project',
      () => ({ username: passwordB.username!, password: passwordB.password! }),
      /project-name: .*is required/,
    ],
    [
      'an application credential id without its secret',
      () => ({ 'application-credential-id': appcredB['application-credential-id']! }),
      /application-credential-secret: is required/,
    ],
    [
      'a whole credential aimed at a host the operator did not allow',
      () => ({ ...appcredB, 'auth-url': listenerUrl }),
      /^the provisioner secret .*auth-url: is not a Keystone the operator allows/,
    ],
    [
      'a password and an application credential at once',
      () => ({ ...appcredB, password: passwordB.password!, username: passwordB.username! }),
      /password: a Secret holds one credential/,
    ],
    [
      'tls-insecure, which the operator did not allow',
      () => ({ ...appcredB, 'tls-insecure': 'true' }),
      /tls-insecure: the operator does not let Secrets turn TLS verification off/,
    ],
    [
      'a ca-file path the operator did not configure',
      () => ({ ...appcredB, 'ca-file': '/etc/passwd' }),
      /ca-file: in a Secret must hold the PEM certificates themselves/,
    ],
    // no key the driver reads at all: once the driver's own credential stood in for these
    [
      'only a Ceph key (a node-stage Secret)',
      () => ({ userKey: 'AQBzZXJ2aWNlLXN0YW5kLWluLWtleT09PQ==' }),
      /holds no credential of its own.*keys the driver does not read: userKey \(a Ceph key of the node-stage Secret/,
    ],
    ['only a Ceph user', () => ({ userID: 'cinder' }), /holds no credential of its own.*userID \(a Ceph key/],
    [
      "OpenStack clients' variable names",
      () => ({ OS_USERNAME: passwordB.username!, OS_PASSWORD: passwordB.password! }),
      /keys the driver does not read: OS_USERNAME \(write username\), OS_PASSWORD \(write password\)/,
    ],
    [
      'snake_case keys',
      () => ({
        application_credential_id: appcredB['application-credential-id']!,
        application_credential_secret: appcredB['application-credential-secret']!,
      }),
      /application_credential_id \(write application-credential-id\)/,
    ],
    ['an unrelated key', () => ({ foo: 'bar' }), /holds no credential of its own.*keys the driver does not read: foo$/],
  ];
  const ownVolumes = async () => (await env.direct.cinder.listVolumes({})).map((v) => v.id).sort();
  test.each(shapes)(
    '%s → INVALID_ARGUMENT naming the role and the keys, no volume, no request',
    async (_what, secrets, why) => {
      const name = env.name();
      const before = await ownVolumes();
      const err = await expectCode(
        env.ctl.CreateVolume({ name, volume_capabilities: [mount()], secrets: secrets() }),
        status.INVALID_ARGUMENT,
      );
      expect(err.details).toMatch(/^the provisioner secret \(csi.storage.k8s.io\/provisioner-secret-name\): /);
      expect(err.details).toMatch(why);
      expect(err.details.length).toBeLessThan(1024);
      for (const v of [...secretValues(), ...Object.values(secrets()).filter((v) => v.length >= 4)])
        expect(err.details).not.toContain(v);
      expect(await env.direct.cinder.volumesNamed(name)).toEqual([]);
      expect(await tenantB.cinder.volumesNamed(name)).toEqual([]);
      expect(await ownVolumes()).toEqual(before); // the driver's own project is untouched
      expect(received).toEqual([]);
    },
  );

  test('the other roles are refused the same way (publish, expand, snapshot), naming their Secret', async () => {
    const volume = await env.create();
    const bad = { 'auth-url': listenerUrl, 'project-name': 'tenant-b' };
    const publish = await expectCode(
      env.ctl.ControllerPublishVolume({
        volume_id: volume.volume_id,
        node_id: 'n',
        volume_capability: mount(),
        secrets: bad,
      }),
      status.INVALID_ARGUMENT,
    );
    expect(publish.details).toMatch(/^the controller-publish secret/);
    const expand = await expectCode(
      env.ctl.ControllerExpandVolume({
        volume_id: volume.volume_id,
        capacity_range: { required_bytes: 2 * 1024 ** 3 },
        secrets: bad,
      }),
      status.INVALID_ARGUMENT,
    );
    expect(expand.details).toMatch(/^the controller-expand secret/);
    const snap = await expectCode(
      env.ctl.CreateSnapshot({ source_volume_id: volume.volume_id, name: env.name('s'), secrets: bad }),
      status.INVALID_ARGUMENT,
    );
    expect(snap.details).toMatch(/^the snapshotter secret/);
    expect((await env.direct.cinder.getVolume(volume.volume_id)).size).toBe(1);
    expect(received).toEqual([]);
  });
});

describe("a tenant's own whole credential works", () => {
  test.each([
    ['application credential', () => appcredB],
    ['password', () => passwordB],
    [
      'password, auth-url and region left to the configuration',
      () => ({
        username: passwordB.username!,
        password: passwordB.password!,
        'project-name': 'tenant-b',
        'user-domain-name': 'Default',
        'project-domain-name': 'Default',
      }),
    ],
  ])('%s', async (_what, secrets) => {
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      volume_capabilities: [mount()],
      secrets: secrets(),
    });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    expect(await env.direct.cinder.findVolume(volume.volume_id)).toBeUndefined();
    await env.ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: secrets() });
  });

  test('through an allowed Keystone behind TLS, trusting the CA the Secret carries in ca-file', async () => {
    const viaTls = { ...appcredB, 'auth-url': proxyUrl, 'ca-file': caPem };
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      volume_capabilities: [mount()],
      secrets: viaTls,
    });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    await env.ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: viaTls });
    // without that CA the same Keystone is not trusted: a clear UNAVAILABLE, not INTERNAL
    const err = await expectCode(
      env.ctl.CreateVolume({
        name: env.name(),
        volume_capabilities: [mount()],
        secrets: { ...appcredB, 'auth-url': proxyUrl },
      }),
      status.UNAVAILABLE,
    );
    expect(err.details).toMatch(/Keystone at https:\/\/127.0.0.1:\d+ is unreachable/);
    const garbage = await expectCode(
      env.ctl.CreateVolume({
        name: env.name(),
        volume_capabilities: [mount()],
        secrets: { ...viaTls, 'ca-file': '-----BEGIN CERTIFICATE-----\nnot one\n-----END CERTIFICATE-----' },
      }),
      status.INVALID_ARGUMENT,
    );
    expect(garbage.details).toMatch(/ca-file: holds text that is not PEM certificates/);
  });
});

describe('several clouds ([Global "name"] sections): the operator chooses, in the StorageClass; a Secret never does', () => {
  let multi: TestDriver;
  let named: TestDriver;
  const section = (m: Record<string, string>) =>
    ['auth-url', 'region', 'username', 'password', 'user-domain-name', 'project-name', 'project-domain-name']
      .map((k) => `${k} = ${m[k]}\n`)
      .join('');
  const ctl = () => multi.client.Controller;
  beforeAll(async () => {
    const a = localSecret('tenant-a-password');
    const conf = join(dir, 'multi.conf');
    writeFileSync(
      conf,
      `[Global]\n${section(a)}\n[Global "b"]\n${section(passwordB)}\n[BlockStorage]\nbs-version = v3\n`,
      { mode: 0o600 },
    );
    multi = await startTestDriver({ options: { config: conf } });
    // the default cloud named too, as OS_CLOUD=ops would name it
    const opsConf = join(dir, 'ops.conf');
    writeFileSync(opsConf, `[Global "ops"]\n${section(a)}\n[Global "b"]\n${section(passwordB)}\n`, { mode: 0o600 });
    named = await startTestDriver({ options: { config: opsConf, cloud: 'ops' } });
  });
  afterAll(async () => {
    await multi?.stop();
    await named?.stop();
  });

  const noCloudNamed = (details: string) => {
    expect(details).not.toContain('"b"');
    expect(details).not.toMatch(/\bops\b|\bnope\b/);
  };

  test.each([
    ['the default cloud by its name', () => named, { cloud: 'ops' }],
    ['another configured cloud', () => multi, { cloud: 'b' }],
    ['an unknown cloud', () => multi, { cloud: 'nope' }],
    ['a cloud beside a whole credential', () => multi, () => ({ ...appcredB, cloud: 'b' })],
  ])(
    'a Secret naming %s is INVALID_ARGUMENT, names no cloud, and makes nothing anywhere',
    async (_what, driver, secrets) => {
      const name = env.name();
      const given = typeof secrets === 'function' ? secrets() : secrets;
      const err = await expectCode(
        driver().client.Controller.CreateVolume({ name, volume_capabilities: [mount()], secrets: given }),
        status.INVALID_ARGUMENT,
      );
      expect(err.details).toMatch(/cloud: a Secret cannot choose the cloud/);
      noCloudNamed(err.details);
      expect(await env.direct.cinder.volumesNamed(name)).toEqual([]);
      expect(await tenantB.cinder.volumesNamed(name)).toEqual([]);
      expect(received).toEqual([]);
    },
  );

  test('a StorageClass parameter cloud that names no configured cloud is INVALID_ARGUMENT, naming none', async () => {
    const err = await expectCode(
      ctl().CreateVolume({ name: env.name(), volume_capabilities: [mount()], parameters: { cloud: 'nope' } }),
      status.INVALID_ARGUMENT,
    );
    expect(err.details).toMatch(/parameter "cloud" names no cloud this driver is configured with/);
    noCloudNamed(err.details);
  });

  test.each([
    ["the cloud's own credential (no secrets, --allow-default-credential)", () => undefined],
    ["the tenant's own Secret, at the cloud's Keystone", () => passwordB],
  ])(
    'StorageClass cloud: b with %s: the volume lives in b, and every later RPC finds b from its id',
    async (_what, secrets) => {
      const s = secrets();
      const { volume } = await ctl().CreateVolume({
        name: env.name(),
        volume_capabilities: [mount()],
        parameters: { cloud: 'b' },
        secrets: s,
      });
      expect(volume.volume_id).toMatch(/^b:[0-9a-f-]{36}$/);
      const id = volume.volume_id.slice(2);
      expect((await tenantB.cinder.getVolume(id)).status).toBe('available');
      expect(await env.direct.cinder.findVolume(id)).toBeUndefined();
      if (!s)
        expect((await ctl().ControllerGetVolume({ volume_id: volume.volume_id })).volume.volume_id).toBe(
          volume.volume_id,
        );

      const { publish_context: pc } = await ctl().ControllerPublishVolume({
        volume_id: volume.volume_id,
        node_id: 'node-b',
        volume_capability: mount(),
        secrets: s,
      });
      expect(pc.volumeId).toBe(volume.volume_id); // the node stages it under the id the CO knows
      await ctl().ControllerUnpublishVolume({ volume_id: volume.volume_id, node_id: 'node-b', secrets: s });
      await ctl().ControllerExpandVolume({
        volume_id: volume.volume_id,
        capacity_range: { required_bytes: 2 * 1024 ** 3 },
        secrets: s,
      });
      expect((await tenantB.cinder.getVolume(id)).size).toBe(2);

      const { snapshot } = await ctl().CreateSnapshot({
        name: env.name('s'),
        source_volume_id: volume.volume_id,
        secrets: s,
      });
      expect(snapshot).toMatchObject({ snapshot_id: expect.stringMatching(/^b:/), source_volume_id: volume.volume_id });
      const listed = await ctl().ListSnapshots({ source_volume_id: volume.volume_id, secrets: s });
      expect(listed.entries.map((e: { snapshot: { snapshot_id: string } }) => e.snapshot.snapshot_id)).toEqual([
        snapshot.snapshot_id,
      ]);
      const source = { snapshot: { snapshot_id: snapshot.snapshot_id } };
      const clone = (
        await ctl().CreateVolume({
          name: env.name(),
          volume_capabilities: [mount()],
          parameters: { cloud: 'b' },
          volume_content_source: source,
          capacity_range: { required_bytes: 2 * 1024 ** 3 },
          secrets: s,
        })
      ).volume;
      expect(clone).toMatchObject({ volume_id: expect.stringMatching(/^b:/), content_source: source });
      // a clone in the default cloud of b's snapshot: Cinder cannot, and the driver says so
      const across = await expectCode(
        ctl().CreateVolume({
          name: env.name(),
          volume_capabilities: [mount()],
          volume_content_source: source,
          secrets: s,
        }),
        status.INVALID_ARGUMENT,
      );
      expect(across.details).toMatch(/volume_content_source is in another cloud/);

      await ctl().DeleteVolume({ volume_id: clone.volume_id, secrets: s });
      await ctl().DeleteSnapshot({ snapshot_id: snapshot.snapshot_id, secrets: s });
      await ctl().DeleteVolume({ volume_id: volume.volume_id, secrets: s });
      expect(await tenantB.cinder.findVolume(id)).toBeUndefined();
    },
  );

  test('a group snapshot of volumes in b: its id and its members name b, and Get and Delete find them there', async () => {
    const { volume } = await ctl().CreateVolume({
      name: env.name(),
      volume_capabilities: [mount()],
      parameters: { cloud: 'b' },
    });
    const group = multi.client.GroupController;
    const { group_snapshot: gs } = await group.CreateVolumeGroupSnapshot({
      name: env.name('g'),
      source_volume_ids: [volume.volume_id],
    });
    expect(gs.group_snapshot_id).toMatch(/^b:/);
    expect(
      gs.snapshots.map((m: { source_volume_id: string; group_snapshot_id: string }) => [
        m.source_volume_id,
        m.group_snapshot_id,
      ]),
    ).toEqual([[volume.volume_id, gs.group_snapshot_id]]);
    expect(gs.snapshots[0]!.snapshot_id).toMatch(/^b:/);
    const ids = {
      group_snapshot_id: gs.group_snapshot_id,
      snapshot_ids: gs.snapshots.map((m: { snapshot_id: string }) => m.snapshot_id),
    };
    expect((await group.GetVolumeGroupSnapshot(ids)).group_snapshot.group_snapshot_id).toBe(gs.group_snapshot_id);
    await group.DeleteVolumeGroupSnapshot(ids);
    expect(await tenantB.cinder.findGroupSnapshot(gs.group_snapshot_id.slice(2))).toBeUndefined();
    await ctl().DeleteVolume({ volume_id: volume.volume_id });
  });

  test('an id naming a cloud the driver does not know: NOT_FOUND to look at, and a delete that keeps it (FAILED_PRECONDITION)', async () => {
    const ghost = 'gone:5f0e4a4e-9b8f-4a57-9c39-1f3d6b0c2a11';
    await expectCode(
      ctl().ControllerPublishVolume({ volume_id: ghost, node_id: 'node-b', volume_capability: mount() }),
      status.NOT_FOUND,
    );
    await expectCode(ctl().ControllerGetVolume({ volume_id: ghost }), status.NOT_FOUND);
    const del = await expectCode(ctl().DeleteVolume({ volume_id: ghost }), status.FAILED_PRECONDITION);
    expect(del.details).toMatch(/names a cloud this driver is not configured with; it is left as it is/);
    expect((await ctl().ListSnapshots({ snapshot_id: `gone:${ghost.slice(5)}` })).entries).toEqual([]);
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

describe("a request without secrets acts with the driver's credential only where the operator allows it", () => {
  let strict: TestDriver;
  beforeAll(async () => {
    strict = await startTestDriver({ options: { allowDefaultCredential: false } });
  });
  afterAll(async () => strict?.stop());

  test('the default: no secrets → UNAUTHENTICATED naming the StorageClass parameters, nothing made; the RPCs that never carry secrets are not offered', async () => {
    const name = env.name();
    const before = (await env.direct.cinder.listVolumes({})).map((v) => v.id).sort();
    const err = await expectCode(
      strict.client.Controller.CreateVolume({ name, volume_capabilities: [mount()], secrets: {} }),
      status.UNAUTHENTICATED,
    );
    expect(err.details).toMatch(
      /carries no provisioner secret, and the driver acts only with tenant credentials: set the StorageClass csi.storage.k8s.io\/\*-secret-name/,
    );
    expect((await env.direct.cinder.listVolumes({})).map((v) => v.id).sort()).toEqual(before);
    const caps = (await strict.client.Controller.ControllerGetCapabilities({})).capabilities.map(
      (c: { rpc?: { type: string } }) => c.rpc?.type,
    );
    expect(caps).not.toContain('LIST_VOLUMES');
    expect(caps).not.toContain('GET_CAPACITY');
    await expectCode(strict.client.Controller.ListVolumes({}), status.UNAUTHENTICATED);
    // with the tenant's Secret it works
    const { volume } = await strict.client.Controller.CreateVolume({
      name,
      volume_capabilities: [mount()],
      secrets: appcredB,
    });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
    await strict.client.Controller.DeleteVolume({ volume_id: volume.volume_id, secrets: appcredB });
  });
});

test('no secret value and no credential fingerprint in any log line', () => {
  const logs = env.driver.logs.text();
  expect(logs).toContain('INVALID_ARGUMENT');
  for (const v of secretValues()) expect(logs).not.toContain(v);
  for (const m of [appcredB, passwordB, localSecret('tenant-a-password')]) {
    const c = parseCredential(m, 'test');
    expect(logs).not.toContain(credentialFingerprint(c));
    expect(logs).not.toContain(credentialFingerprint({ ...c, caPem: undefined }));
  }
});
