import { status } from '@grpc/grpc-js';
import { type DirectCinder, removeByPrefix, secretCinder } from '../../../harness/cinder.js';
import { localSecret } from '../../../harness/local-stack.js';
import { expectCode } from '../../helpers/csi-client.js';
import { controllerEnv, mount } from './fixtures.js';

const env = controllerEnv('tenant');
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

/** The secret values a log line or an error must never show. */
const secretValues = () => [appcredB['application-credential-secret']!, passwordB.password!];

describe('per-request secrets choose the tenant', () => {
  test('a tenant-b application credential creates, publishes and deletes in tenant-b only', async () => {
    const name = env.name();
    const { volume } = await env.ctl.CreateVolume({ name, volume_capabilities: [mount()], secrets: appcredB });
    expect(await tenantB.cinder.getVolume(volume.volume_id)).toMatchObject({ name, status: 'available' });
    expect(await env.direct.cinder.findVolume(volume.volume_id)).toBeUndefined();

    // Without tenant-b's secrets the volume does not exist.
    await expectCode(
      env.ctl.ControllerPublishVolume({ volume_id: volume.volume_id, node_id: 'node-t', volume_capability: mount() }),
      status.NOT_FOUND,
    );
    const { publish_context } = await env.ctl.ControllerPublishVolume({
      volume_id: volume.volume_id,
      node_id: 'node-t',
      volume_capability: mount(),
      secrets: appcredB,
    });
    expect(publish_context.rbdImage).toBe(`volume-${volume.volume_id}`);
    await env.ctl.ControllerUnpublishVolume({ volume_id: volume.volume_id, node_id: 'node-t', secrets: appcredB });
    await env.ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: appcredB });
    expect(await tenantB.cinder.findVolume(volume.volume_id)).toBeUndefined();
  });

  test('a secret may carry only some keys: the rest (auth-url, region) come from the config', async () => {
    const partial = {
      username: passwordB.username!,
      password: passwordB.password!,
      'project-name': 'tenant-b',
      'user-domain-name': 'Default',
      'project-domain-name': 'Default',
    };
    const { volume } = await env.ctl.CreateVolume({
      name: env.name(),
      volume_capabilities: [mount()],
      secrets: partial,
    });
    expect((await tenantB.cinder.getVolume(volume.volume_id)).status).toBe('available');
  });

  test('a malformed secret → INVALID_ARGUMENT naming the key, never its value', async () => {
    const cases: [Record<string, string>, RegExp][] = [
      [{ ...appcredB, 'auth-url': 'keystone.example' }, /auth-url/],
      [{ ...appcredB, 'tls-insecure': 'maybe' }, /tls-insecure/],
      [{ 'application-credential-secret': appcredB['application-credential-secret']! }, /application-credential-id/],
    ];
    for (const [secrets, key] of cases) {
      const err = await expectCode(
        env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets }),
        status.INVALID_ARGUMENT,
      );
      expect(err.details).toMatch(key);
      for (const s of secretValues()) expect(err.details).not.toContain(s);
    }
  });

  test('Keystone refusing the secret → UNAUTHENTICATED saying it was the request’s secret; nothing secret in errors or logs', async () => {
    const wrong = { ...appcredB, 'application-credential-secret': 'not-the-secret-0123456789' };
    const err = await expectCode(
      env.ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: wrong }),
      status.UNAUTHENTICATED,
    );
    expect(err.details).toMatch(
      /^the provisioner secret \(csi.storage.k8s.io\/provisioner-secret-name\), keys .*: Keystone rejected application credential/,
    );
    expect(err.details).not.toContain('not-the-secret-0123456789');
    const wrongPassword = { ...passwordB, password: 'wrong-password-9876543210' };
    const err2 = await expectCode(
      env.ctl.DeleteVolume({ volume_id: '00000000-0000-4000-8000-000000000000', secrets: wrongPassword }),
      status.UNAUTHENTICATED,
    );
    // Every value of a secrets map is scrubbed from messages (even the user name); the keys say which secret it was.
    expect(err2.details).toMatch(
      /^the provisioner secret \(csi.storage.k8s.io\/provisioner-secret-name\), keys auth-url, password, .*username: Keystone rejected user \[redacted\]/,
    );

    const logs = env.driver.logs.text();
    expect(logs).toContain('UNAUTHENTICATED');
    for (const s of [...secretValues(), 'not-the-secret-0123456789', 'wrong-password-9876543210'])
      expect(logs).not.toContain(s);
  });
});
