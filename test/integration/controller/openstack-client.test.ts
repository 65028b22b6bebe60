import { loadConfig } from '../../../src/config.js';
import { Cinder } from '../../../src/openstack/cinder.js';
import { CinderSession } from '../../../src/openstack/cinder-session.js';
import { type Credential, parseCredential } from '../../../src/openstack/credentials.js';
import { HttpClient } from '../../../src/openstack/http.js';
import { Keystone } from '../../../src/openstack/keystone.js';
import { CLOUD_CONF, localSecret } from '../../../harness/local-stack.js';

/** The OpenStack client on its own, against deploy/local's Keystone and Cinder, counting every HTTP call. */
let calls: string[];
let http: HttpClient;
let keystone: Keystone;
let tenantA: Credential;
let tenantB: Credential;

beforeEach(async () => {
  calls = [];
  http = new HttpClient({ onRequest: (method, url) => calls.push(`${method} ${new URL(url).pathname}`) });
  keystone = new Keystone(http);
  tenantA = (await loadConfig({ config: CLOUD_CONF, mode: 'controller' }, {})).credential!;
  tenantB = parseCredential(localSecret('tenant-b'), 'tenant-b.yaml');
});
afterEach(() => http.close());

const tokenRequests = () => calls.filter((c) => c === 'POST /v3/auth/tokens').length;
const cinderOf = (c: Credential) => new Cinder(new CinderSession(keystone, http, c));

test('one token per credential, reused; the microversion is negotiated once per Cinder', async () => {
  const a = cinderOf(tenantA);
  const b = cinderOf(tenantB);
  for (let i = 0; i < 3; i++)
    await Promise.all([a.volumesNamed('nothing-by-this-name'), b.volumesNamed('nothing-by-this-name')]);
  expect(tokenRequests()).toBe(2);
  // The negotiation is shared process-wide (per endpoint), so an earlier test file may have done it already.
  expect(calls.filter((c) => c === 'GET /').length).toBeLessThanOrEqual(1);
  expect(await a.session.microversion()).toBe('3.70');
  expect(await a.session.projectId()).not.toBe(await b.session.projectId());
});

test('a token revoked behind the client’s back: the 401 brings one fresh token and the call succeeds', async () => {
  const session = await keystone.session(tenantA);
  // A user may revoke their own token. Cinder has not seen this one yet, so it cannot have it cached.
  await http.request('DELETE', `${tenantA.authUrl}/auth/tokens`, {
    service: 'Keystone',
    headers: { 'X-Auth-Token': session.token, 'X-Subject-Token': session.token },
    expect: [204],
  });
  expect(await cinderOf(tenantA).volumesNamed('nothing-by-this-name')).toEqual([]);
  expect(tokenRequests()).toBe(2);
  expect((await keystone.session(tenantA)).token).not.toBe(session.token);
});

test('the Cinder endpoint comes from the catalog by interface and region; a wrong region says what there is', async () => {
  for (const iface of ['public', 'internal'] as const)
    expect(await cinderOf({ ...tenantA, interface: iface }).session.endpoint()).toMatch(
      /^http:\/\/127\.0\.0\.1:8776\/v3\/[0-9a-f]{32}$/,
    );
  await expect(cinderOf({ ...tenantA, region: 'Atlantis' }).volumesNamed('x')).rejects.toMatchObject({
    kind: 'not-found',
    message: expect.stringMatching(
      /no block-storage or volumev3 endpoint with interface public in region Atlantis \(it offers: .*block-storage/,
    ),
  });
});

test('Cinder errors keep Cinder’s words; a wrong password is Keystone’s refusal, naming the user but not the password', async () => {
  await expect(cinderOf(tenantA).getVolume('00000000-0000-4000-8000-000000000000')).rejects.toMatchObject({
    kind: 'not-found',
    message: expect.stringMatching(/Volume 00000000-0000-4000-8000-000000000000 could not be found/),
  });
  const wrong = { ...tenantA, auth: { ...tenantA.auth, password: 'definitely-wrong-1234' } } as Credential;
  const err = await cinderOf(wrong)
    .volumesNamed('x')
    .catch((e: Error) => e);
  expect(err).toMatchObject({
    kind: 'unauthenticated',
    message: expect.stringMatching(/Keystone rejected user tenant-a-member in project tenant-a/),
  });
  expect((err as Error).message).not.toContain('definitely-wrong-1234');
});
