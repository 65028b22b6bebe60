// Keystone projects as hard tenant boundaries (issue 7): tenant-b's credential, in the secrets of every
// RPC that carries them, can neither see nor change tenant-a's volume — Cinder decides, in tenant-b's
// project — and the volume is still there, unchanged, afterwards.
import { status } from '@grpc/grpc-js';
import { HttpClient } from '../../../src/openstack/http.js';
import {
  adminCinder,
  createVolumeType,
  deleteVolumeType,
  type DirectCinder,
  removeByPrefix,
  secretCinder,
} from '../../../harness/cinder.js';
import { expectCode } from '../../helpers/csi-client.js';
import { startTestDriver, type TestDriver } from '../../../harness/driver.js';
import { localSecret } from '../../../harness/local-stack.js';
import { controllerEnv, GiB, mount } from './fixtures.js';

const env = controllerEnv('iso');
let tenantB: DirectCinder;
let admin: DirectCinder;
const appcredB = () => localSecret('tenant-b');
const passwordB = () => localSecret('tenant-b-password');
/** Every secret value this file hands the driver; none may reach a log line or an error. */
const secretValues = new Set<string>();
const secrets = (s: Record<string, string>) => {
  for (const [k, v] of Object.entries(s)) if (/secret|password/.test(k)) secretValues.add(v);
  return s;
};

beforeAll(async () => {
  tenantB = await secretCinder('tenant-b');
  admin = await adminCinder();
});
afterAll(async () => {
  try {
    expect(await removeByPrefix(tenantB.cinder, env.prefix)).toEqual([]);
    const logs = env.driver.logs.text();
    expect(logs.length).toBeGreaterThan(0);
    for (const v of secretValues) expect(logs).not.toContain(v);
  } finally {
    await tenantB.close();
    await admin.close();
  }
});

describe("tenant-b's credential cannot touch tenant-a's volume", () => {
  let volumeId: string;
  let snapshotId: string;
  const b = () => secrets(appcredB());

  beforeAll(async () => {
    volumeId = (await env.create()).volume_id; // tenant-a: the driver's configured credential
    snapshotId = (await env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: volumeId })).snapshot
      .snapshot_id;
  });

  /** tenant-a's view of its volume and snapshot: the same before and after every attempt. */
  const unchanged = async () => {
    const v = await env.direct.cinder.getVolume(volumeId);
    expect(v).toMatchObject({ status: 'available', size: 1 });
    expect(await env.direct.cinder.volumeAttachments(volumeId)).toEqual([]);
    expect((await env.direct.cinder.getSnapshot(snapshotId)).status).toBe('available');
  };

  test('publish → NOT_FOUND', async () => {
    await expectCode(
      env.ctl.ControllerPublishVolume({
        volume_id: volumeId,
        node_id: 'node-b',
        volume_capability: mount(),
        secrets: b(),
      }),
      status.NOT_FOUND,
    );
    await unchanged();
  });

  test('expand → NOT_FOUND', async () => {
    await expectCode(
      env.ctl.ControllerExpandVolume({
        volume_id: volumeId,
        capacity_range: { required_bytes: 2 * GiB },
        secrets: b(),
      }),
      status.NOT_FOUND,
    );
    await unchanged();
  });

  test('retype (ModifyVolume) → NOT_FOUND', async () => {
    await expectCode(
      env.ctl.ControllerModifyVolume({ volume_id: volumeId, mutable_parameters: { type: 'ceph' }, secrets: b() }),
      status.NOT_FOUND,
    );
    await unchanged();
  });

  test('snapshot → NOT_FOUND (the source volume does not exist for tenant-b)', async () => {
    await expectCode(
      env.ctl.CreateSnapshot({ name: env.name('s'), source_volume_id: volumeId, secrets: b() }),
      status.NOT_FOUND,
    );
    expect((await tenantB.cinder.listSnapshots({})).filter((s) => s.name?.startsWith(env.prefix))).toEqual([]);
    await unchanged();
  });

  test('clone, and restore from its snapshot → NOT_FOUND', async () => {
    const base = { capacity_range: { required_bytes: GiB }, volume_capabilities: [mount()], secrets: b() };
    await expectCode(
      env.ctl.CreateVolume({ ...base, name: env.name(), volume_content_source: { volume: { volume_id: volumeId } } }),
      status.NOT_FOUND,
    );
    await expectCode(
      env.ctl.CreateVolume({
        ...base,
        name: env.name(),
        volume_content_source: { snapshot: { snapshot_id: snapshotId } },
      }),
      status.NOT_FOUND,
    );
    expect((await tenantB.cinder.listVolumes({})).filter((v) => v.name?.startsWith(env.prefix))).toEqual([]);
    await unchanged();
  });

  test('see: validate → NOT_FOUND; its snapshots are not listed, and GetSnapshot → NOT_FOUND', async () => {
    await expectCode(
      env.ctl.ValidateVolumeCapabilities({ volume_id: volumeId, volume_capabilities: [mount()], secrets: b() }),
      status.NOT_FOUND,
    );
    expect((await env.ctl.ListSnapshots({ source_volume_id: volumeId, secrets: b() })).entries).toEqual([]);
    expect((await env.ctl.ListSnapshots({ snapshot_id: snapshotId, secrets: b() })).entries).toEqual([]);
    await expectCode(env.ctl.GetSnapshot({ snapshot_id: snapshotId, secrets: b() }), status.NOT_FOUND);
    await unchanged();
  });

  test('delete: to tenant-b the volume and snapshot do not exist — OK, as the spec requires — and nothing is deleted', async () => {
    // The spec makes DeleteVolume/DeleteSnapshot of an unknown id succeed (the CO retries deletes);
    // Cinder answers tenant-b 404 for a volume of another project, so what matters is that it stays.
    await env.ctl.DeleteSnapshot({ snapshot_id: snapshotId, secrets: b() });
    await env.ctl.DeleteVolume({ volume_id: volumeId, secrets: b() });
    await unchanged();
  });

  test("the password form of tenant-b's credential is refused the same way", async () => {
    await expectCode(
      env.ctl.ControllerPublishVolume({
        volume_id: volumeId,
        node_id: 'node-b',
        volume_capability: mount(),
        secrets: secrets(passwordB()),
      }),
      status.NOT_FOUND,
    );
    await unchanged();
  });
});

test('the same PVC name in two tenants makes two volumes, each in its own project, tagged with the cluster and claim', async () => {
  const name = env.name('pvc');
  const params = {
    'csi.storage.k8s.io/pvc/name': 'data',
    'csi.storage.k8s.io/pvc/namespace': 'team-b',
    'csi.storage.k8s.io/pv/name': name,
  };
  const inA = (
    await env.ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: GiB },
      volume_capabilities: [mount()],
      parameters: params,
    })
  ).volume;
  const inB = (
    await env.ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: GiB },
      volume_capabilities: [mount()],
      parameters: params,
      secrets: secrets(appcredB()),
    })
  ).volume;
  expect(inB.volume_id).not.toBe(inA.volume_id);
  expect((await env.direct.cinder.getVolume(inA.volume_id)).name).toBe(name);
  const b = await tenantB.cinder.getVolume(inB.volume_id);
  expect(b.metadata).toMatchObject({
    'cinder.csi.stackube.io/cluster': env.driver.config.clusterId,
    'csi.storage.k8s.io/pvc/name': 'data',
    'csi.storage.k8s.io/pvc/namespace': 'team-b',
    'csi.storage.k8s.io/pv/name': name,
  });
  // each tenant sees only its own; tenant-a's ListVolumes (the default credential) does not list tenant-b's
  const listed = (await env.ctl.ListVolumes({})).entries.map(
    (e: { volume: { volume_id: string } }) => e.volume.volume_id,
  );
  expect(listed).toContain(inA.volume_id);
  expect(listed).not.toContain(inB.volume_id);
  // a repeat in tenant-b is idempotent: the same volume, not a third
  const again = (
    await env.ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: GiB },
      volume_capabilities: [mount()],
      parameters: params,
      secrets: secrets(appcredB()),
    })
  ).volume;
  expect(again.volume_id).toBe(inB.volume_id);
});

/** Keystone as tenant-b's member: create and delete application credentials (what a tenant admin does to rotate). */
async function keystoneAsTenantB() {
  const http = new HttpClient();
  const p = passwordB();
  const res = await http.request<{ token: { user: { id: string } } }>('POST', `${p['auth-url']}/auth/tokens`, {
    service: 'Keystone',
    expect: [201],
    body: {
      auth: {
        identity: {
          methods: ['password'],
          password: { user: { name: p.username, domain: { name: p['user-domain-name'] }, password: p.password } },
        },
        scope: { project: { name: p['project-name'], domain: { name: p['project-domain-name'] } } },
      },
    },
  });
  const token = String(res.headers['x-subject-token']);
  const userId = res.body.token.user.id;
  const base = `${p['auth-url']}/users/${userId}/application_credentials`;
  return {
    create: async (name: string) => {
      const r = await http.request<{ application_credential: { id: string; secret: string } }>('POST', base, {
        service: 'Keystone',
        expect: [201],
        headers: { 'X-Auth-Token': token },
        body: { application_credential: { name } },
      });
      const ac = r.body.application_credential;
      return secrets({ 'application-credential-id': ac.id, 'application-credential-secret': ac.secret });
    },
    revoke: (id: string) =>
      http.request('DELETE', `${base}/${id}`, {
        service: 'Keystone',
        expect: [204, 404],
        headers: { 'X-Auth-Token': token },
      }),
    close: () => http.close(),
  };
}

test('a rotated credential works as soon as the secret carries it; the revoked one is refused as UNAUTHENTICATED', async () => {
  const keystone = await keystoneAsTenantB();
  const made: string[] = [];
  try {
    const old = await keystone.create(`${env.prefix}old`);
    made.push(old['application-credential-id']!);
    // the driver caches a token for the old credential
    const v = (
      await env.ctl.CreateVolume({
        name: env.name(),
        capacity_range: { required_bytes: GiB },
        volume_capabilities: [mount()],
        secrets: old,
      })
    ).volume;

    const fresh = await keystone.create(`${env.prefix}new`);
    made.push(fresh['application-credential-id']!);
    await keystone.revoke(old['application-credential-id']!);

    await env.ctl.ControllerExpandVolume({
      volume_id: v.volume_id,
      capacity_range: { required_bytes: 2 * GiB },
      secrets: fresh,
    });
    expect((await tenantB.cinder.getVolume(v.volume_id)).size).toBe(2);
    // A token issued before the revocation lives on in caches (the driver's, and Cinder's token
    // validation cache) until they expire; any new authentication with the old credential fails.
    const other = await startTestDriver({ mode: 'controller' });
    try {
      const req = { volume_id: v.volume_id, capacity_range: { required_bytes: 3 * GiB }, secrets: old };
      const err = await expectCode(other.client.Controller.ControllerExpandVolume(req), status.UNAUTHENTICATED);
      expect(err.details).toMatch(
        /^the controller-expand secret \(csi.storage.k8s.io\/controller-expand-secret-name\), keys application-credential-id, application-credential-secret: Keystone rejected/,
      );
      for (const s of secretValues) expect(err.details).not.toContain(s);
      for (const s of secretValues) expect(other.logs.text()).not.toContain(s);
    } finally {
      await other.stop();
    }
    expect((await tenantB.cinder.getVolume(v.volume_id)).size).toBe(2);
    await env.ctl.DeleteVolume({ volume_id: v.volume_id, secrets: fresh });
  } finally {
    for (const id of made) await keystone.revoke(id);
    await keystone.close();
  }
});

describe('quotas are the tenant’s own', () => {
  let typeId: string;
  const typeName = `${env.prefix}quota`;
  let projectB: string;

  beforeAll(async () => {
    typeId = await createVolumeType(admin.cinder, typeName);
    projectB = await tenantB.cinder.session.projectId();
    // a per-type quota, so no other test's volumes are affected
    await admin.cinder.session.call('PUT', `/os-quota-sets/${projectB}`, {
      body: { quota_set: { [`gigabytes_${typeName}`]: 1 } },
      expect: [200],
    });
  });
  afterAll(async () => {
    await admin.cinder.session.call('PUT', `/os-quota-sets/${projectB}`, {
      body: { quota_set: { [`gigabytes_${typeName}`]: -1 } },
      expect: [200],
    });
    // the type goes last: first every volume of it, in both tenants
    expect(await removeByPrefix(tenantB.cinder, env.prefix)).toEqual([]);
    expect(await removeByPrefix(env.direct.cinder, env.prefix)).toEqual([]);
    await deleteVolumeType(admin.cinder, typeId);
  });

  test('over the tenant’s quota → RESOURCE_EXHAUSTED naming the quota; nothing is left behind', async () => {
    const name = env.name();
    const err = await expectCode(
      env.ctl.CreateVolume({
        name,
        capacity_range: { required_bytes: 2 * GiB },
        volume_capabilities: [mount()],
        parameters: { type: typeName },
        secrets: secrets(appcredB()),
      }),
      status.RESOURCE_EXHAUSTED,
    );
    expect(err.details).toContain(`gigabytes_${typeName}`);
    expect(await tenantB.cinder.volumesNamed(name)).toEqual([]);
    // tenant-a has no such limit: the same request in its project succeeds
    await env.ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: 2 * GiB },
      volume_capabilities: [mount()],
      parameters: { type: typeName },
    });
  });

  test('GetCapacity answers for the tenant whose credential the driver holds', async () => {
    const driverB: TestDriver = await startTestDriver({
      mode: 'controller',
      env: Object.fromEntries(Object.entries(passwordB()).map(([k, v]) => [toOsEnv(k), v])),
    });
    try {
      const usage = (await tenantB.cinder.quotaUsage(projectB))[`gigabytes_${typeName}`]!;
      const left = (usage.limit - usage.in_use - (usage.reserved ?? 0)) * GiB;
      const cap = await driverB.client.Controller.GetCapacity({ parameters: { type: typeName } });
      expect(cap.available_capacity).toBe(left);
      // tenant-a's driver sees no such limit for the type
      const capA = await env.ctl.GetCapacity({ parameters: { type: typeName } });
      expect(capA.available_capacity).toBeGreaterThan(left);
    } finally {
      await driverB.stop();
    }
  });
});

/** cloud.conf key → the OS_* variable OpenStack clients read. */
function toOsEnv(key: string): string {
  const special: Record<string, string> = { region: 'OS_REGION_NAME' };
  return special[key] ?? `OS_${key.replace(/-/g, '_').toUpperCase()}`;
}
