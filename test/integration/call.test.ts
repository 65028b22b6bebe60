import { spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { allRpcs, checkRequest, resolveRpc, UsageError } from '../../src/client/call.js';
import { csiPackage } from '../../src/server/proto.js';
import { PACKAGE_ROOT } from '../../src/package-info.js';
import { startTestDriver, type TestDriver } from '../../harness/driver.js';
import { CEPH_CONF, localSecret, scratchDir } from '../../harness/local-stack.js';
import { writeImage } from '../../harness/rbd-image.js';

// `stackube-csi call`, the built CLI as an operator runs it, against a real driver (controller
// mode, deploy/local's Keystone and Cinder behind it).
const MAIN = join(PACKAGE_ROOT, 'dist', 'src', 'main.js');

function call(args: string[], stdin?: string): Promise<{ code: number | null; out: string; err: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [MAIN, 'call', ...args], {
      env: { PATH: process.env.PATH },
      stdio: ['pipe', 'pipe', 'pipe'],
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d) => (out += d));
    child.stderr.on('data', (d) => (err += d));
    child.stdin.end(stdin ?? '');
    child.on('exit', (code) => resolve({ code, out, err }));
  });
}

let driver: TestDriver;
beforeAll(async () => {
  driver = await startTestDriver({ mode: 'controller', logLevel: 'warn', options: { controllerCephConf: CEPH_CONF } });
});
afterAll(() => driver?.stop());

describe('RPC names', () => {
  test('every RPC of every service resolves, by name alone, qualified, or as a gRPC path', () => {
    const services = ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const;
    const methods = services.flatMap((s) => Object.keys(csiPackage()[s].service).map((m) => `${s}.${m}`));
    expect(allRpcs().map((r) => `${r.service}.${r.method}`)).toEqual(methods);
    expect(methods.length).toBeGreaterThan(25);
    for (const rpc of allRpcs()) {
      for (const name of [
        rpc.method,
        `${rpc.service}.${rpc.method}`,
        `csi.v1.${rpc.service}/${rpc.method}`,
        rpc.method.toLowerCase(),
      ])
        expect(resolveRpc(name)).toEqual(rpc);
    }
  });

  test('an unknown RPC is a usage error that suggests the near names', () => {
    expect(() => resolveRpc('CreateVolum')).toThrow(/unknown RPC "CreateVolum"; did you mean CreateVolume/);
    expect(() => resolveRpc('Node.CreateVolume')).toThrow(UsageError);
    expect(() => resolveRpc('rm -rf /')).toThrow(/unknown RPC/);
  });

  test('JSON that does not fit the request message is refused before anything is sent', () => {
    const createVolume = resolveRpc('CreateVolume');
    expect(() => checkRequest(createVolume, '{"name":')).toThrow(/--json is not JSON/);
    expect(() => checkRequest(createVolume, '[1]')).toThrow(/must be a JSON object/);
    expect(() => checkRequest(createVolume, '{"capacity_range":"1Gi"}')).toThrow(/capacity_range: object expected/);
    expect(() => checkRequest(createVolume, '{"capacityRange":{}}')).toThrow(/capacityRange: no such field/);
    expect(() =>
      checkRequest(createVolume, '{"volume_capabilities":[{"access_mode":{"mode":"SINGLE_NODE_WRITTER"}}]}'),
    ).toThrow(/volume_capabilities\[0\]\.access_mode\.mode: "SINGLE_NODE_WRITTER" is not a value of this enum/);
    expect(
      checkRequest(
        createVolume,
        '{"name":"v","secrets":{"a":"b"},"volume_capabilities":[{"mount":{},"access_mode":{"mode":"SINGLE_NODE_WRITER"}}]}',
      ),
    ).toMatchObject({ name: 'v' });
  });
});

describe('the CLI', () => {
  test('Probe and GetPluginInfo: JSON out, exit 0', async () => {
    const probe = await call(['Probe', '--endpoint', driver.endpoint]);
    expect([probe.code, probe.err]).toEqual([0, '']);
    expect(JSON.parse(probe.out)).toEqual({ ready: { value: true } });
    const info = await call(['Identity.GetPluginInfo', '--endpoint', driver.endpoint]);
    expect(JSON.parse(info.out)).toMatchObject({ name: 'cinder.csi.stackube.io' });
  });

  test("a failed RPC exits with the gRPC code and prints the driver's message", async () => {
    const r = await call(['CreateVolume', '--json', '{}', '--endpoint', driver.endpoint]);
    expect(r.code).toBe(3);
    expect(r.out).toBe('');
    expect(r.err).toMatch(/^Controller\.CreateVolume: INVALID_ARGUMENT \(3\): .*name/);
  });

  test('the request from a file or stdin, so a credential is never on the command line (tenant-a deletes a volume that is not there: OK)', async () => {
    const request = JSON.stringify({ volume_id: randomUUID(), secrets: localSecret('tenant-a') });
    const file = join(scratchDir('call'), 'req.json');
    writeFileSync(file, request);
    const fromFile = await call(['DeleteVolume', '--json', `@${file}`, '--endpoint', driver.endpoint]);
    expect([fromFile.code, fromFile.err, JSON.parse(fromFile.out)]).toEqual([0, '', {}]);
    const fromStdin = await call(['DeleteVolume', '--json', '-', '--endpoint', driver.endpoint], request);
    expect([fromStdin.code, fromStdin.err]).toEqual([0, '']);
    // ListVolumes has no secrets field in the spec: said, rather than sent without them
    const list = await call(['ListVolumes', '--json', '-', '--endpoint', driver.endpoint], request);
    expect([list.code, list.err.split('\n')[0]]).toEqual([
      2,
      'stackube-csi call: --json does not fit ListVolumesRequest: volume_id: no such field; secrets: no such field',
    ]);
  });

  test('usage errors exit 2 with a line that says what to fix: unknown RPC, bad JSON, no endpoint, no RPC', async () => {
    const cases: [string[], RegExp][] = [
      [['NoSuchRpc', '--endpoint', driver.endpoint], /unknown RPC "NoSuchRpc"/],
      [['CreateVolume', '--json', '{oops', '--endpoint', driver.endpoint], /--json is not JSON/],
      [['CreateVolume', '--json', '{"nmae":"x"}', '--endpoint', driver.endpoint], /nmae: no such field/],
      [['Probe'], /--endpoint \(or CSI_ENDPOINT\) must be unix:\/\/\/path or tcp:\/\/host:port/],
      [[], /which RPC\?/],
      [['Probe', '--bogus'], /Unknown option '--bogus'/],
    ];
    for (const [args, message] of cases) {
      const r = await call(args);
      expect([args, r.code, r.out]).toEqual([args, 2, '']);
      expect(r.err).toMatch(message);
      expect(r.err.length).toBeLessThan(1200);
    }
  });

  test("a streaming RPC's messages print one JSON line each, as they come", async () => {
    const ctl = driver.client.Controller;
    const name = `call-${randomUUID().slice(0, 8)}`;
    const { volume } = await ctl.CreateVolume({
      name,
      capacity_range: { required_bytes: 1024 ** 3 },
      volume_capabilities: [{ block: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    });
    let snapshotId = '';
    try {
      // three RADOS objects apart from each other: three extents, one a message
      await writeImage(
        volume.volume_id,
        [0, 100, 200].map((mib) => ({ offset: mib * 1024 ** 2, length: 4096, byte: 7 })),
      );
      snapshotId = (await ctl.CreateSnapshot({ name: `${name}-s`, source_volume_id: volume.volume_id })).snapshot
        .snapshot_id;
      const r = await call([
        'GetMetadataAllocated',
        '--json',
        JSON.stringify({ snapshot_id: snapshotId, max_results: 1 }),
        '--endpoint',
        driver.endpoint,
      ]);
      expect([r.code, r.err]).toEqual([0, '']);
      const lines = r.out
        .trim()
        .split('\n')
        .map((l) => JSON.parse(l));
      expect(lines.map((l) => l.block_metadata[0].byte_offset)).toEqual([0, 100 * 1024 ** 2, 200 * 1024 ** 2]);
      expect(lines[0]).toMatchObject({ block_metadata_type: 'VARIABLE_LENGTH', volume_capacity_bytes: 1024 ** 3 });
    } finally {
      if (snapshotId) await ctl.DeleteSnapshot({ snapshot_id: snapshotId });
      await ctl.DeleteVolume({ volume_id: volume.volume_id });
    }
  });

  test('--list names every RPC', async () => {
    const r = await call(['--list']);
    expect(r.code).toBe(0);
    expect(r.out.trim().split('\n')).toEqual(allRpcs().map((x) => `${x.service}.${x.method}`));
  });
});
