import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { ConfigError, loadConfig } from '../../src/config.js';
import { parseIni } from '../../src/cloud-files.js';

const dir = mkdtempSync(join(tmpdir(), 'csi-config-'));
const file = (name: string, text: string) => {
  const p = join(dir, name);
  writeFileSync(p, text);
  return p;
};

const CLOUD_CONF = file(
  'cloud.conf',
  `# cloud-provider-openstack style
[Global]
auth-url = "http://keystone.example:5000/v3"
username = alice
password = "p@ss; word # not a comment"
user-domain-name = Default
tenant-name = tenant-a
project-domain-name = Default
region = RegionOne

[BlockStorage]
node-volume-attach-limit = 40
`,
);

const CLOUDS_YAML = file(
  'clouds.yaml',
  `clouds:
  a:
    auth_type: v3applicationcredential
    auth:
      auth_url: http://keystone.example:5000/v3
      application_credential_id: ac-id
      application_credential_secret: ac-secret
    region_name: RegionTwo
    interface: internal
  b:
    auth:
      auth_url: https://k.example/v3
      username: bob
      password: bobpw
      project_name: tenant-b
    verify: false
`,
);

async function problemsOf(p: Promise<unknown>): Promise<string[]> {
  try {
    await p;
  } catch (e) {
    if (e instanceof ConfigError) return e.problems;
    throw e;
  }
  throw new Error('expected a ConfigError');
}

describe('configuration sources', () => {
  test('cloud.conf [Global] gives the default credential; quotes keep ; and # inside values', async () => {
    const c = await loadConfig({ config: CLOUD_CONF, nodeId: 'n1' }, {});
    expect(c.credential?.authUrl).toBe('http://keystone.example:5000/v3');
    expect(c.credential?.auth).toMatchObject({
      kind: 'password',
      username: 'alice',
      password: 'p@ss; word # not a comment',
      projectName: 'tenant-a',
      userDomainName: 'Default',
    });
    expect(c.credential?.region).toBe('RegionOne');
    expect(c.maxVolumesPerNode).toBe(40);
    expect(c.mode).toBe('all');
    expect(c.endpoint).toBe('unix:///csi/csi.sock');
    expect(c.kubeletRoot).toBe('/var/lib/kubelet');
    expect(c.hypervisorRuntimeHandlers).toEqual(['kata*']);
  });

  test('clouds.yaml: the cloud is chosen by --cloud, then OS_CLOUD; application credentials and verify:false map over', async () => {
    const a = await loadConfig({ config: CLOUDS_YAML, nodeId: 'n1' }, { OS_CLOUD: 'a' });
    expect(a.credential?.auth).toMatchObject({ kind: 'application-credential', id: 'ac-id', secret: 'ac-secret' });
    expect(a.credential?.interface).toBe('internal');
    expect(a.credential?.region).toBe('RegionTwo');
    const b = await loadConfig({ config: CLOUDS_YAML, cloud: 'b', nodeId: 'n1' }, { OS_CLOUD: 'a' });
    expect(b.credential?.auth).toMatchObject({ kind: 'password', username: 'bob', projectName: 'tenant-b' });
    expect(b.credential?.tlsInsecure).toBe(true);
  });

  test('later wins: file < environment < flags', async () => {
    const env = {
      CSI_ENDPOINT: 'tcp://127.0.0.1:10000',
      CSI_MODE: 'node',
      NODE_ID: 'from-env',
      OS_PASSWORD: 'env-pass',
      KUBELET_ROOT: '/env/kubelet',
      MAX_VOLUMES_PER_NODE: '7',
    };
    const c = await loadConfig({ config: CLOUD_CONF, mode: 'all', nodeId: 'from-flag' }, env);
    expect(c.mode).toBe('all');
    expect(c.nodeId).toBe('from-flag');
    expect(c.endpoint).toBe('tcp://127.0.0.1:10000');
    expect(c.kubeletRoot).toBe('/env/kubelet');
    expect(c.maxVolumesPerNode).toBe(7);
    expect(c.credential?.auth).toMatchObject({ kind: 'password', password: 'env-pass', username: 'alice' });
  });

  test('an application credential from the environment replaces the file user/password entirely', async () => {
    const c = await loadConfig(
      { config: CLOUD_CONF, nodeId: 'n' },
      { OS_APPLICATION_CREDENTIAL_ID: 'x', OS_APPLICATION_CREDENTIAL_SECRET: 'y' },
    );
    expect(c.credential?.auth).toEqual({
      kind: 'application-credential',
      id: 'x',
      secret: 'y',
      userDomainName: 'Default',
    });
  });

  test('node mode needs no credential; comma lists and booleans parse', async () => {
    const c = await loadConfig(
      { mode: 'node', nodeId: 'n1', hypervisorRuntimeHandlers: 'kata*, gvisor-vm ', allowDefaultCredential: 'yes' },
      {},
    );
    expect(c.credential).toBeUndefined();
    expect(c.hypervisorRuntimeHandlers).toEqual(['kata*', 'gvisor-vm']);
    expect(c.allowDefaultCredential).toBe(true);
  });

  test('the default credential is not used unless --allow-default-credential; a controller then needs only auth-url', async () => {
    const c = await loadConfig({ mode: 'controller' }, { OS_AUTH_URL: 'http://k:5000/v3' });
    expect(c.allowDefaultCredential).toBe(false);
    expect(c.credential).toBeUndefined();
    expect(c.connection).toMatchObject({ authUrl: 'http://k:5000/v3', interface: 'public', tlsInsecure: false });
    expect(
      (
        await problemsOf(
          loadConfig({ mode: 'controller', allowDefaultCredential: true }, { OS_AUTH_URL: 'http://k:5000/v3' }),
        )
      )[0],
    ).toMatch(/password: is required/);
  });

  test('--require-tenant-credentials is the default now: true is accepted, false (or with --allow-default-credential) says what to use', async () => {
    expect(
      (await loadConfig({ mode: 'controller', requireTenantCredentials: true }, { OS_AUTH_URL: 'http://k:5000/v3' }))
        .allowDefaultCredential,
    ).toBe(false);
    for (const flags of [
      { requireTenantCredentials: 'false' },
      { requireTenantCredentials: true, allowDefaultCredential: true },
    ])
      expect(
        (await problemsOf(loadConfig({ mode: 'controller', ...flags }, { OS_AUTH_URL: 'http://k:5000/v3' })))[0],
      ).toMatch(
        /^--require-tenant-credentials \(REQUIRE_TENANT_CREDENTIALS\): is deprecated: .*--allow-default-credential/,
      );
  });
});

describe('configuration errors name the key and what is wrong', () => {
  const cases: [string, Record<string, string>, Record<string, string>, RegExp][] = [
    [
      'bad mode',
      { mode: 'both', nodeId: 'n' },
      {},
      /^--mode \(CSI_MODE\): must be controller, node or all \(got "both"\)/,
    ],
    [
      'bad endpoint',
      { mode: 'node', nodeId: 'n', endpoint: 'unix://relative.sock' },
      {},
      /^--endpoint \(CSI_ENDPOINT\): must be unix:\/\/\/absolute/,
    ],
    ['missing node id', { mode: 'node' }, {}, /^--node-id \(NODE_ID\): is required in node mode/],
    [
      'relative kubelet root',
      { mode: 'node', nodeId: 'n', kubeletRoot: 'var/lib/kubelet' },
      {},
      /^--kubelet-root \(KUBELET_ROOT\): kubelet root must be an absolute path/,
    ],
    [
      'bad mapper from env',
      { mode: 'node', nodeId: 'n' },
      { RBD_MAPPER: 'iscsi' },
      /^--rbd-mapper \(RBD_MAPPER\): must be auto, krbd, nbd or fuse \(got "iscsi"\)/,
    ],
    [
      'bad metrics address',
      { mode: 'node', nodeId: 'n', metricsAddress: 'localhost' },
      {},
      /^--metrics-address \(METRICS_ADDRESS\): must be host:port/,
    ],
    [
      'bad max volumes',
      { mode: 'node', nodeId: 'n', maxVolumesPerNode: 'many' },
      {},
      /^--max-volumes-per-node \(MAX_VOLUMES_PER_NODE\): must be a whole number/,
    ],
    [
      'bad handler glob',
      { mode: 'node', nodeId: 'n', hypervisorRuntimeHandlers: 'kata/qemu' },
      {},
      /^--hypervisor-runtime-handlers \(HYPERVISOR_RUNTIME_HANDLERS\): handler globs may hold/,
    ],
    ['no cloud in controller mode', { mode: 'controller' }, {}, /^no cloud: give --config/],
    [
      'no credential with --allow-default-credential',
      { mode: 'controller', allowDefaultCredential: 'true' },
      {},
      /^no cloud credential: give --config/,
    ],
    [
      'missing config file',
      { mode: 'node', nodeId: 'n', config: '/nonexistent/cloud.conf' },
      {},
      /^--config \(CSI_CONFIG\): cannot read config file \/nonexistent\/cloud.conf: ENOENT/,
    ],
  ];
  test.each(cases)('%s', async (_name, flags, env, expected) => {
    const problems = await problemsOf(loadConfig(flags, env));
    expect(problems.some((p) => expected.test(p))).toBe(true);
  });

  test('a credential missing its password names the key, never a value', async () => {
    const conf = file('nopw.conf', '[Global]\nauth-url = http://k:5000/v3\nusername = carol\nproject-name = p\n');
    const problems = await problemsOf(loadConfig({ config: conf, mode: 'controller' }, {}));
    expect(problems).toHaveLength(1);
    expect(problems[0]).toMatch(/password: is required/);
    expect(problems[0]).toContain(conf);
  });

  test('a credential with a secret but a bad URL: the error never holds the secret', async () => {
    const conf = file(
      'badurl.conf',
      '[Global]\nauth-url = keystone:5000\napplication-credential-id = id1\napplication-credential-secret = S3cr3tValue!\n',
    );
    const problems = await problemsOf(loadConfig({ config: conf, mode: 'controller' }, {}));
    expect(problems.join('\n')).toMatch(/auth-url: must be an http\(s\) URL/);
    expect(problems.join('\n')).not.toContain('S3cr3tValue!');
  });

  test('clouds.yaml with several clouds and none chosen lists them', async () => {
    const problems = await problemsOf(loadConfig({ config: CLOUDS_YAML, mode: 'controller' }, {}));
    expect(problems[0]).toMatch(/holds clouds a, b; choose the default with --cloud or OS_CLOUD/);
  });

  test('an unknown cloud name is named', async () => {
    const problems = await problemsOf(loadConfig({ config: CLOUDS_YAML, cloud: 'zz', mode: 'controller' }, {}));
    expect(problems[0]).toMatch(/no cloud named "zz" \(it holds a, b\)/);
  });

  test('all problems are reported at once', async () => {
    const problems = await problemsOf(loadConfig({ mode: 'node', endpoint: 'x', rbdMapper: 'y' }, {}));
    expect(problems).toHaveLength(3);
  });
});

describe('cloud.conf INI syntax', () => {
  test('sections merge, keys are case-insensitive, inline comments end unquoted values', () => {
    const ini = parseIni(
      '[Global]\nAuth-URL = http://a ; trailing\n[global]\nregion=R1 # c\nkey = "  spaced  "\n',
      't',
    );
    expect(ini.global).toEqual({ 'auth-url': 'http://a', region: 'R1', key: '  spaced  ' });
  });
  test('a key outside a section and a broken quote are errors with line numbers', () => {
    expect(() => parseIni('username = x\n', 'f.conf')).toThrow('f.conf:1: key "username" is outside any [Section]');
    expect(() => parseIni('[Global]\npassword = "abc\n', 'f.conf')).toThrow('f.conf:2: unterminated quote in value');
  });
});

describe('cloud.conf [Global "name"] subsections are separate clouds (cinder-csi-plugin multi-cloud)', () => {
  const MULTI = file(
    'multi.conf',
    `[Global]
auth-url = http://a.example/v3
username = alice
password = apw
project-name = pa
[Global "b"]
auth-url = http://b.example/v3
application-credential-id = bid
application-credential-secret = bsecret
[Global "c"]
auth-url = http://c.example/v3
username = carol
`,
  );

  test('[Global] is the default, never merged with a subsection; an incomplete subsection is named', async () => {
    const problems = await problemsOf(loadConfig({ config: MULTI, mode: 'controller' }, {}));
    expect(problems).toEqual([
      expect.stringMatching(/^cloud "c" of .*multi.conf: password: is required; project-name/),
    ]);
  });

  test('each complete subsection is a cloud; --cloud (--cloud-name) makes one the default', async () => {
    const ok = file('multi-ok.conf', readFileSync(MULTI, 'utf8').replace(/\[Global "c"\][\s\S]*$/, ''));
    const c = await loadConfig({ config: ok, mode: 'controller' }, {});
    expect(c.credential?.auth).toMatchObject({ kind: 'password', username: 'alice' });
    expect([...c.clouds.keys()]).toEqual(['b']);
    expect(c.clouds.get('b')?.credential?.auth).toMatchObject({ kind: 'application-credential', id: 'bid' });
    expect(c.clouds.get('b')?.connection).toMatchObject({ authUrl: 'http://b.example/v3' });
    const b = await loadConfig({ config: ok, mode: 'controller', cloud: 'b' }, {});
    expect(b.credential?.authUrl).toBe('http://b.example/v3');
    expect((await problemsOf(loadConfig({ config: ok, mode: 'controller', cloud: 'x' }, {})))[0]).toMatch(
      /no \[Global "x"\] section \(it holds \[Global\], \[Global "b"\]\); choose one with --cloud-name/,
    );
  });

  test('a subsection without a credential is a connection for tenant Secrets; a name that cannot be in an id is refused', async () => {
    const conf = file(
      'multi-conn.conf',
      '[Global]\nauth-url = http://a.example/v3\n[Global "east"]\nauth-url = http://east.example/v3\nregion = East\n[Global "bad name"]\nauth-url = http://x/v3\n',
    );
    expect(await problemsOf(loadConfig({ config: conf, mode: 'controller' }, {}))).toEqual([
      expect.stringMatching(/cloud "bad name" .*: a cloud name may hold only letters/),
    ]);
    const ok = file('multi-conn-ok.conf', readFileSync(conf, 'utf8').replace(/\[Global "bad name"\][\s\S]*$/, ''));
    const c = await loadConfig({ config: ok, mode: 'controller' }, {});
    expect(c.credential).toBeUndefined();
    expect(c.clouds.get('east')).toEqual({
      connection: {
        authUrl: 'http://east.example/v3',
        region: 'East',
        interface: 'public',
        caFile: undefined,
        tlsInsecure: false,
      },
    });
  });
});
