import { execFileSync } from 'node:child_process';
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { CredentialError, meantKey, parseCredential } from '../../../src/openstack/credentials.js';
import {
  type Connection,
  connectionOf,
  credentialFromSecret,
  normalizeAuthUrl,
  secretPolicy,
} from '../../../src/openstack/secret-credential.js';

const own = parseCredential(
  {
    'auth-url': 'https://ops-keystone.example:5000/v3',
    region: 'R1',
    username: 'driver',
    password: 'driver-password',
    'project-name': 'p',
    'ca-file': '/etc/stackube-csi/ca.crt',
  },
  'cloud.conf',
);
const other = parseCredential(
  {
    'auth-url': 'https://other.example/v3',
    'application-credential-id': 'ac',
    'application-credential-secret': 'ac-secret',
  },
  'b',
);
const ownConnection: Connection = {
  authUrl: own.authUrl,
  region: own.region,
  interface: 'public',
  caFile: own.caFile,
  tlsInsecure: false,
};
const policy = secretPolicy({
  clouds: [
    { connection: ownConnection, credential: own },
    { connection: connectionOf(other), credential: other },
  ],
  allowTlsInsecure: false,
});
const appcred = { 'application-credential-id': 'tenant-ac', 'application-credential-secret': 'tenant-secret' };

function problems(given: Record<string, string>, p = policy): string[] {
  try {
    credentialFromSecret(given, p, ownConnection, 'the provisioner secret');
  } catch (e) {
    if (e instanceof CredentialError) return e.problems.map((x) => `${x.key}: ${x.message}`);
    throw e;
  }
  throw new Error('expected a refusal');
}

describe('a Secret is a whole credential of its own', () => {
  test.each([
    [
      { 'auth-url': 'http://attacker:1/v3' },
      ['credential: holds no credential', 'auth-url: is not a Keystone the operator allows'],
    ],
    [{ 'project-id': 'x' }, ['credential: holds no credential']],
    [{ username: 'u' }, ['credential: holds no credential']],
    [{ region: 'R2' }, ['credential: holds no credential']],
    [{ password: 'pw', 'project-name': 'p' }, ['username: username or user-id is required']],
    [{ username: 'u', password: 'pw' }, ['project-name: project-name (tenant-name) or project-id']],
    [{ 'application-credential-id': 'x' }, ['application-credential-secret: is required']],
    [{ 'application-credential-secret': 'x' }, ['application-credential-id: application-credential-id, or']],
    [{ ...appcred, password: 'pw' }, ['password: a Secret holds one credential']],
    [{ ...appcred, 'tls-insecure': 'yes' }, ['tls-insecure: the operator does not let Secrets']],
    [{ ...appcred, 'tls-insecure': 'maybe' }, ['tls-insecure: must be true or false']],
    [{ ...appcred, 'ca-file': '/etc/shadow' }, ['ca-file: in a Secret must hold the PEM certificates']],
    [
      { ...appcred, 'ca-file': '-----BEGIN CERTIFICATE-----\nAAAA\n-----END CERTIFICATE-----\n' },
      ['ca-file: holds text that is not PEM'],
    ],
    [{ ...appcred, 'auth-url': 'kstn:5000' }, ['auth-url: must be an http(s) URL']],
    [{ cloud: 'nope' }, ['cloud: a Secret cannot choose the cloud', 'credential: holds no credential']],
    [{ cloud: 'b' }, ['cloud: a Secret cannot choose the cloud', 'credential: holds no credential']],
    [{ ...appcred, cloud: 'b' }, ['cloud: a Secret cannot choose the cloud']],
    [{}, ['credential: holds no credential']],
  ])('%j is refused', (given, expected) => {
    const got = problems(given);
    expect(got).toHaveLength(expected.length);
    expected.forEach((e, i) => expect(got[i]).toContain(e));
    for (const v of Object.values(given)) if (v.length > 4) expect(got.join(' ')).not.toContain(v);
    // no configured cloud's name, nor any allowed URL, is in any message
    expect(got.join(' ')).not.toMatch(/"b"|other\.example|ops-keystone/);
  });

  test("nothing of the driver's identity is inherited; only the connection", () => {
    const c = credentialFromSecret(appcred, policy, ownConnection, 's');
    expect(c).toMatchObject({
      authUrl: own.authUrl,
      region: 'R1',
      interface: 'public',
      caFile: '/etc/stackube-csi/ca.crt',
      tlsInsecure: false,
    });
    expect(c.auth).toEqual({ kind: 'application-credential', id: 'tenant-ac', secret: 'tenant-secret' });
    const p = credentialFromSecret(
      { username: 'alice', password: 'alice-pw', 'project-name': 'team-a', region: 'R2' },
      policy,
      ownConnection,
      's',
    );
    expect(p.auth).toMatchObject({ kind: 'password', username: 'alice', password: 'alice-pw', projectName: 'team-a' });
    expect(p.region).toBe('R2');
    expect(JSON.stringify(p)).not.toContain('driver-password');
  });

  test("an allowed auth-url (any spelling) takes that cloud's connection; without one, the chosen cloud's", () => {
    expect(
      credentialFromSecret({ ...appcred, 'auth-url': 'HTTPS://other.example/v3/' }, policy, ownConnection, 's'),
    ).toMatchObject({ authUrl: 'https://other.example/v3', caFile: undefined });
    expect(credentialFromSecret(appcred, policy, connectionOf(other), 's')).toMatchObject({
      authUrl: 'https://other.example/v3',
      auth: { id: 'tenant-ac' },
    });
    expect(normalizeAuthUrl('https://K.example:5000/v3/')).toBe(normalizeAuthUrl('https://k.example:5000'));
    expect(normalizeAuthUrl(`https://k.example${'/'.repeat(100_000)}x`)).toBe(
      `https://k.example${'/'.repeat(100_000)}x`,
    );
  });

  test('a key the driver does not read is named with what it most likely meant', () => {
    expect(meantKey('OS_PASSWORD')).toBe('password');
    expect(meantKey('application_credential_id')).toBe('application-credential-id');
    expect(meantKey('applicationCredentialSecret')).toBe('application-credential-secret');
    expect(meantKey('projectName')).toBe('project-name');
    expect(meantKey('userKey')).toBeUndefined();
    expect(meantKey('foo')).toBeUndefined();
  });

  test('an operator allow list and tls-insecure switch widen exactly that', () => {
    const open = secretPolicy({
      clouds: [{ connection: ownConnection }],
      allowedAuthUrls: ['http://tenant-keystone:5000/v3'],
      allowTlsInsecure: true,
    });
    expect(
      credentialFromSecret(
        { ...appcred, 'auth-url': 'http://tenant-keystone:5000/v3', 'tls-insecure': 'true' },
        open,
        ownConnection,
        's',
      ),
    ).toMatchObject({ tlsInsecure: true, caFile: undefined });
    // the list replaces the default: the configured Keystone is then allowed only if listed
    expect(problems({ ...appcred, 'auth-url': own.authUrl }, open)[0]).toContain(
      'auth-url: is not a Keystone the operator allows',
    );
  });

  test("inline PEM certificates are the Secret's ca-file", () => {
    const dir = mkdtempSync(join(tmpdir(), 'pem-'));
    execFileSync(
      'openssl',
      [
        'req',
        '-x509',
        '-newkey',
        'rsa:2048',
        '-nodes',
        '-days',
        '1',
        '-subj',
        '/CN=t',
        '-keyout',
        join(dir, 'k'),
        '-out',
        join(dir, 'c'),
      ],
      { stdio: 'pipe' },
    );
    const pem = readFileSync(join(dir, 'c'), 'utf8');
    const c = credentialFromSecret({ ...appcred, 'ca-file': pem }, policy, ownConnection, 's');
    expect(c.caPem).toContain('-----BEGIN CERTIFICATE-----');
    expect(c.caFile).toBeUndefined();
  });
});
