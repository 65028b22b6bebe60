import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { stringify } from 'yaml';
import { loadKubeConnection, type KubeConnection } from '../../../src/kube/config.js';

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'kubeconfig-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

const b64 = (s: string) => Buffer.from(s).toString('base64');
function kubeconfig(name: string, doc: object): string {
  const file = join(dir, name);
  writeFileSync(file, stringify(doc));
  return file;
}
const standard = (
  user: object,
  cluster: object = { server: 'https://10.0.0.1:6443', 'certificate-authority-data': b64('CA PEM') },
) => ({
  apiVersion: 'v1',
  kind: 'Config',
  'current-context': 'ctx',
  contexts: [{ name: 'ctx', context: { cluster: 'c', user: 'u' } }],
  clusters: [{ name: 'c', cluster }],
  users: [{ name: 'u', user }],
});
async function connection(env: NodeJS.ProcessEnv, saDir?: string): Promise<KubeConnection> {
  const r = await loadKubeConnection(env, saDir);
  if (!('connection' in r)) throw new Error(r.unavailable);
  return r.connection;
}

describe('KUBECONFIG', () => {
  test('token user, inline CA', async () => {
    const c = await connection({ KUBECONFIG: kubeconfig('k', standard({ token: 'abc123' })) });
    expect(c).toMatchObject({
      server: 'https://10.0.0.1:6443',
      ca: 'CA PEM',
      token: 'abc123',
      insecureSkipTlsVerify: false,
    });
    expect(c.source).toMatch(/^kubeconfig .*\/k \(context ctx\)$/);
  });

  test('files relative to the kubeconfig: CA, tokenFile, client certificate and key', async () => {
    writeFileSync(join(dir, 'ca.crt'), 'CA FROM FILE');
    writeFileSync(join(dir, 'tls.crt'), 'CERT');
    writeFileSync(join(dir, 'tls.key'), 'KEY');
    const file = kubeconfig(
      'k',
      standard(
        { 'client-certificate': 'tls.crt', 'client-key': join(dir, 'tls.key'), tokenFile: 'tok' },
        { server: 'https://api:6443/', 'certificate-authority': 'ca.crt', 'tls-server-name': 'kubernetes' },
      ),
    );
    const c = await connection({ KUBECONFIG: file });
    expect(c).toMatchObject({
      server: 'https://api:6443',
      ca: 'CA FROM FILE',
      clientCert: 'CERT',
      clientKey: 'KEY',
      tokenFile: join(dir, 'tok'),
      tlsServerName: 'kubernetes',
    });
  });

  test('client certificate and key as data; insecure-skip-tls-verify', async () => {
    const c = await connection({
      KUBECONFIG: kubeconfig(
        'k',
        standard(
          { 'client-certificate-data': b64('C'), 'client-key-data': b64('K') },
          { server: 'https://x:1', 'insecure-skip-tls-verify': true },
        ),
      ),
    });
    expect(c).toMatchObject({ clientCert: 'C', clientKey: 'K', insecureSkipTlsVerify: true, ca: undefined });
  });

  test('several files: current-context from the first that sets one, names from the first that defines them', async () => {
    const a = kubeconfig('a', { clusters: [{ name: 'c', cluster: { server: 'https://first:1' } }] });
    const b = kubeconfig('b', standard({ token: 't' }, { server: 'https://second:2' }));
    expect((await connection({ KUBECONFIG: `${a}:${b}` })).server).toBe('https://first:1');
  });

  test('takes precedence over the in-cluster variables', async () => {
    const c = await connection({
      KUBECONFIG: kubeconfig('k', standard({ token: 't' })),
      KUBERNETES_SERVICE_HOST: '10.96.0.1',
      KUBERNETES_SERVICE_PORT: '443',
    });
    expect(c.server).toBe('https://10.0.0.1:6443');
  });

  test.each([
    ['no current-context', { ...standard({ token: 't' }), 'current-context': undefined }, /has no current-context/],
    [
      'unknown context',
      { ...standard({ token: 't' }), 'current-context': 'nope' },
      /current-context "nope" is not among its contexts/,
    ],
    ['unknown cluster', { ...standard({ token: 't' }), clusters: [] }, /names cluster "c", which is not defined/],
    ['unknown user', { ...standard({ token: 't' }), users: [] }, /names user "u", which is not defined/],
    ['exec plugin', standard({ exec: { command: 'aws' } }), /uses an exec plugin, which this driver does not support/],
    ['basic auth', standard({ username: 'admin', password: 'pw-secret' }), /uses basic auth/],
    ['cert without key', standard({ 'client-certificate-data': b64('C') }), /client certificate without a key/],
    ['server not a URL', standard({ token: 't' }, { server: 'api:6443' }), /clusters.0.cluster.server: must be a URL/],
  ])('%s → a message naming the problem', async (_name, doc, message) => {
    await expect(loadKubeConnection({ KUBECONFIG: kubeconfig('k', doc) })).rejects.toThrow(message);
  });

  test('messages never quote a token or password', async () => {
    const err = await loadKubeConnection({
      KUBECONFIG: kubeconfig('k', standard({ username: 'admin', password: 'pw-secret', token: 'tok-secret' })),
    }).catch((e: Error) => e);
    expect(String((err as Error).message)).not.toMatch(/pw-secret|tok-secret/);
  });

  test('missing file and a referenced file that is missing', async () => {
    await expect(loadKubeConnection({ KUBECONFIG: join(dir, 'absent') })).rejects.toThrow(
      /cannot read kubeconfig .*absent: ENOENT/,
    );
    await expect(
      loadKubeConnection({
        KUBECONFIG: kubeconfig(
          'k',
          standard({ token: 't' }, { server: 'https://x:1', 'certificate-authority': 'gone.crt' }),
        ),
      }),
    ).rejects.toThrow(/cannot read certificate authority .*gone.crt: ENOENT/);
  });
});

describe('in-cluster', () => {
  test('service host/port and the mounted service account; the token is a file, re-read as it rotates', async () => {
    writeFileSync(join(dir, 'token'), 'sa-token');
    writeFileSync(join(dir, 'ca.crt'), 'SA CA');
    const c = await connection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, dir);
    expect(c).toEqual({
      server: 'https://10.96.0.1:443',
      ca: 'SA CA',
      insecureSkipTlsVerify: false,
      tokenFile: join(dir, 'token'),
      source: 'in-cluster service account',
    });
  });
  test('IPv6 service host gets brackets', async () => {
    writeFileSync(join(dir, 'token'), 't');
    writeFileSync(join(dir, 'ca.crt'), 'CA');
    expect((await connection({ KUBERNETES_SERVICE_HOST: 'fd00::1', KUBERNETES_SERVICE_PORT: '443' }, dir)).server).toBe(
      'https://[fd00::1]:443',
    );
  });
  test('no service account mounted → says which file', async () => {
    await expect(
      loadKubeConnection({ KUBERNETES_SERVICE_HOST: '10.96.0.1', KUBERNETES_SERVICE_PORT: '443' }, join(dir, 'none')),
    ).rejects.toThrow(/cannot read the service account token .*none\/token: ENOENT/);
  });
});

test('neither: unavailable, with the reason', async () => {
  expect(await loadKubeConnection({})).toEqual({
    unavailable: expect.stringMatching(/neither KUBECONFIG nor the in-cluster variables/),
  });
});
