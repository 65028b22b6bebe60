import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { configSchema, loadConfig, SERVE_OPTIONS } from '../../../src/config.js';
import { CREDENTIAL_KEYS } from '../../../src/openstack/credentials.js';
import { PACKAGE_ROOT } from '../../../src/package-info.js';
import { Metrics } from '../../../src/server/metrics.js';
import { loadManifests, yamlFiles } from '../../helpers/manifests.js';

// The operator docs must list what the code has (every option, credential key and metric), point
// at files and sections that exist, and name the images the manifests pin.

const DOCS = join(PACKAGE_ROOT, 'docs');
const read = (name: string) => readFileSync(join(DOCS, name), 'utf8');
const docNames = readdirSync(DOCS).filter((f) => f.endsWith('.md'));
/** Table rows of a markdown text, as arrays of trimmed cells. */
const rows = (md: string) =>
  md
    .split('\n')
    .filter((l) => /^\|.*\|$/.test(l.trim()) && !/^\|[\s|:-]+\|$/.test(l.trim()))
    .map((l) =>
      l
        .trim()
        .slice(1, -1)
        .split(' | ')
        .map((c) => c.trim()),
    );

test('the operator documents exist', () => {
  expect(docNames).toEqual(
    expect.arrayContaining([
      'configure.md',
      'install.md',
      'migrate-from-cinder-csi-plugin.md',
      'tenants.md',
      'troubleshoot.md',
      'upgrade.md',
    ]),
  );
});

describe('configure.md', () => {
  const md = read('configure.md');

  test('one table row per driver option: its flag, its environment twin and its real default', () => {
    // nodeId has no default; it is given only so that the schema (mode `all` needs one) parses.
    const { nodeId: _given, ...defaults } = configSchema.parse({ nodeId: 'n' }) as Record<string, unknown>;
    const table = rows(md);
    for (const [name, o] of Object.entries(SERVE_OPTIONS)) {
      const row = table.find((r) => r[0] === `\`--${o.flag}\``);
      expect([o.flag, row?.[1]]).toEqual([o.flag, `\`${'env' in o ? o.env : ''}\``]);
      const d = defaults[name];
      if (d !== undefined)
        expect([o.flag, row?.[2]]).toEqual([o.flag, `\`${Array.isArray(d) ? d.join(',') : String(d)}\``]);
    }
    expect(table.filter((r) => r[0]?.startsWith('`--')).length).toBe(Object.keys(SERVE_OPTIONS).length);
  });

  test('every cloud.conf [Global] credential key is described', () => {
    const described = new Set(rows(md).map((r) => r[0]));
    expect(CREDENTIAL_KEYS.filter((k) => !described.has(`\`${k}\``))).toEqual([]);
  });
});

test('troubleshoot.md describes every metric the driver exports', async () => {
  const metrics = new Metrics(false);
  const names = (await metrics.registry.getMetricsAsJSON()).map((m) => m.name);
  expect(names.length).toBeGreaterThanOrEqual(3);
  const described = new Set(rows(read('troubleshoot.md')).map((r) => r[0]));
  expect(names.filter((n) => !described.has(`\`${n}\``))).toEqual([]);
});

test('images named in the docs are the ones the manifests pin', () => {
  const pinned = new Set(
    loadManifests([...yamlFiles('deploy/kubernetes'), ...yamlFiles('deploy/snapshot-metadata')]).flatMap(
      (m) => JSON.stringify(m.doc).match(/registry\.k8s\.io\/[^"]+/g) ?? [],
    ),
  );
  const mentioned = docNames.flatMap((d) => read(d).match(/registry\.k8s\.io\/sig-storage\/[a-z-]+:v[\d.]+/g) ?? []);
  expect(mentioned.length).toBeGreaterThan(0);
  expect(mentioned.filter((i) => !pinned.has(i))).toEqual([]);
  expect([...pinned].filter((i) => !mentioned.includes(i))).toEqual([]);
});

describe('links', () => {
  /** GitHub's heading anchors: lower case, punctuation dropped, spaces to hyphens. */
  const anchors = (md: string) =>
    new Set(
      md
        .split('\n')
        .filter((l) => /^#{1,6} /.test(l))
        .map((l) =>
          l
            .replace(/^#+ /, '')
            .toLowerCase()
            .replace(/[^\p{L}\p{N} _-]/gu, '')
            .replace(/ /g, '-'),
        ),
    );

  test.each(docNames)('%s: relative links reach files and sections that exist', (name) => {
    const md = read(name);
    const links = [...md.matchAll(/\]\(([^)\s]+)\)/g)].map((m) => m[1]!).filter((l) => !/^[a-z]+:/.test(l));
    for (const link of links) {
      const [file, anchor] = link.split('#') as [string, string | undefined];
      const target = file ? resolve(DOCS, file) : join(DOCS, name);
      expect([link, existsSync(target)]).toEqual([link, true]);
      if (anchor) expect([link, anchors(readFileSync(target, 'utf8')).has(anchor)]).toEqual([link, true]);
    }
  });

  test.each(docNames)('%s: paths into the repository exist', (name) => {
    const paths = [...read(name).matchAll(/`((?:deploy|docs|src)\/[\w./*-]+)`/g)].map((m) => m[1]!);
    for (const p of paths.map((x) => x.replace(/\/\*.*$/, '').replace(/-\*\.yaml$/, '-ext4.yaml')))
      expect([p, existsSync(join(PACKAGE_ROOT, p))]).toEqual([p, true]);
  });
});

describe('migrate-from-cinder-csi-plugin.md', () => {
  test('a cinder-csi-plugin cloud.conf loads unchanged, with the keys the guide calls ignored', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'migrate-'));
    try {
      const conf = join(dir, 'cloud.conf');
      writeFileSync(
        conf,
        `[Global]
auth-url = https://keystone.example.com:5000/v3
username = k8s
password = "s3cret;#"
domain-name = Default
tenant-id = 5b9f1a2c3d4e4f5a8b7c6d5e4f3a2b1c
region = RegionOne
ca-file = /etc/stackube-csi/ca.crt

[BlockStorage]
rescan-on-resize = true
ignore-volume-az = true
ignore-volume-microversion = true
node-volume-attach-limit = 40

[Metadata]
search-order = configDrive,metadataService
`,
      );
      const c = await loadConfig({ mode: 'controller', config: conf }, {});
      expect(c.credential).toMatchObject({
        authUrl: 'https://keystone.example.com:5000/v3',
        region: 'RegionOne',
        caFile: '/etc/stackube-csi/ca.crt',
        auth: {
          kind: 'password',
          username: 'k8s',
          password: 's3cret;#',
          userDomainName: 'Default',
          projectId: '5b9f1a2c3d4e4f5a8b7c6d5e4f3a2b1c',
          projectDomainName: 'Default',
        },
      });
      expect(c.maxVolumesPerNode).toBe(40);
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });

  test('every [Global] key the guide says is read the same way is a credential key', () => {
    const row = rows(read('migrate-from-cinder-csi-plugin.md')).find((r) => r[1]?.startsWith('Read the same way'))!;
    const keys = [...row[0]!.matchAll(/`([a-z-]+)`/g)].map((m) => m[1]!);
    expect(keys.length).toBeGreaterThan(10);
    expect(keys.filter((k) => !(CREDENTIAL_KEYS as readonly string[]).includes(k))).toEqual([]);
  });
});
