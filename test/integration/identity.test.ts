import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import type { RawOptions } from '../../src/config.js';
import { VERSION } from '../../src/package-info.js';
import { expectCode } from '../helpers/csi-client.js';
import { startTestDriver, type TestDriver } from '../../harness/driver.js';
import { CLOUD_CONF, scratchDir } from '../../harness/local-stack.js';

const running: TestDriver[] = [];
async function start(flags: RawOptions, env: NodeJS.ProcessEnv = {}) {
  const { mode, ...options } = flags;
  const d = await startTestDriver({
    mode: mode as TestDriver['config']['mode'],
    options: { kubeletRoot: scratchDir('identity'), ...options },
    env,
    logLevel: 'info',
  });
  running.push(d);
  return { client: d.client, capture: d.logs };
}
afterEach(async () => {
  for (const d of running.splice(0)) await d.stop();
});

describe('GetPluginInfo', () => {
  test('name in domain notation, at most 63 characters; vendor_version from package.json', async () => {
    const { client } = await start({ mode: 'node', nodeId: 'node-a' });
    const info = await client.Identity.GetPluginInfo({});
    expect(info.name).toBe('cinder.csi.stackube.io');
    expect(info.name.length).toBeLessThanOrEqual(63);
    expect(info.name).toMatch(/^[a-zA-Z0-9]([a-zA-Z0-9.-]*[a-zA-Z0-9])?$/);
    expect(info.vendor_version).toBe(VERSION);
    expect(info.manifest).toMatchObject({ mode: 'node' });
  });
});

describe('GetPluginCapabilities', () => {
  const kinds = (caps: { service?: { type: string }; volume_expansion?: { type: string } }[]) =>
    caps.map((c) => (c.service ? `service:${c.service.type}` : `expansion:${c.volume_expansion!.type}`)).sort();

  test('a controller advertises CONTROLLER_SERVICE, GROUP_CONTROLLER_SERVICE, topology and online expansion', async () => {
    const { client } = await start({ mode: 'controller', config: CLOUD_CONF });
    const res = await client.Identity.GetPluginCapabilities({});
    expect(kinds(res.capabilities)).toEqual([
      'expansion:ONLINE',
      'service:CONTROLLER_SERVICE',
      'service:GROUP_CONTROLLER_SERVICE',
      'service:VOLUME_ACCESSIBILITY_CONSTRAINTS',
    ]);
  });

  test('a node-only plugin does not claim the controller service', async () => {
    const { client } = await start({ mode: 'node', nodeId: 'node-a' });
    const res = await client.Identity.GetPluginCapabilities({});
    expect(kinds(res.capabilities)).toEqual(['expansion:ONLINE', 'service:VOLUME_ACCESSIBILITY_CONSTRAINTS']);
    await expectCode(client.Controller.CreateVolume({ name: 'x' }), status.UNIMPLEMENTED);
    await expectCode(client.GroupController.CreateVolumeGroupSnapshot({ name: 'x' }), status.UNIMPLEMENTED);
  });
});

describe('Probe reflects what the mode depends on', () => {
  test('controller: ready when Keystone issues a token and Cinder answers', async () => {
    const { client } = await start({ mode: 'controller', config: CLOUD_CONF });
    expect(await client.Identity.Probe({})).toEqual({ ready: { value: true } });
  });

  test('controller: not ready (and says why in the log) when Keystone does not answer', async () => {
    const { client, capture } = await start(
      { mode: 'controller', config: CLOUD_CONF },
      { OS_AUTH_URL: 'http://127.0.0.1:9/v3' },
    );
    expect(await client.Identity.Probe({})).toEqual({ ready: { value: false } });
    expect(capture.text()).toMatch(/Keystone at http:\/\/127.0.0.1:9 is unreachable: ECONNREFUSED/);
  });

  test('controller: not ready when Keystone rejects the credential', async () => {
    const { client, capture } = await start(
      { mode: 'controller', config: CLOUD_CONF },
      { OS_PASSWORD: 'definitely-wrong-password' },
    );
    expect(await client.Identity.Probe({})).toEqual({ ready: { value: false } });
    expect(capture.text()).toMatch(/Keystone rejected user tenant-a-member in project tenant-a/);
    expect(capture.text()).not.toContain('definitely-wrong-password');
  });

  test('node: ready when the fuse mapper can run and the kubelet root exists', async () => {
    const { client } = await start({ mode: 'node', nodeId: 'node-a', rbdMapper: 'fuse' });
    expect(await client.Identity.Probe({})).toEqual({ ready: { value: true } });
  });

  test('node: not ready with a mapper this host cannot run, or a missing kubelet root', async () => {
    const krbd = await start({ mode: 'node', nodeId: 'node-a', rbdMapper: 'krbd' });
    expect(await krbd.client.Identity.Probe({})).toEqual({ ready: { value: false } });
    expect(krbd.capture.text()).toMatch(/rbd mapper krbd: the kernel has no rbd module/);
    const noRoot = await start({
      mode: 'node',
      nodeId: 'node-a',
      kubeletRoot: join(scratchDir('identity'), 'missing'),
    });
    expect(await noRoot.client.Identity.Probe({})).toEqual({ ready: { value: false } });
  });
});

describe('NodeGetInfo', () => {
  test('node id, max volumes and the topology zone', async () => {
    const { client } = await start({ mode: 'node', nodeId: 'worker-7', zone: 'az-2', maxVolumesPerNode: '31' });
    expect(await client.Node.NodeGetInfo({})).toEqual({
      node_id: 'worker-7',
      max_volumes_per_node: 31,
      accessible_topology: { segments: { 'topology.cinder.csi.stackube.io/zone': 'az-2' } },
    });
  });
});

describe('metrics', () => {
  test('the controller counts its OpenStack API calls by service and kind, as cinder-csi-plugin names them (no ids as labels)', async () => {
    const address = '127.0.0.1:19809';
    const { client } = await start({ mode: 'controller', config: CLOUD_CONF, metricsAddress: address });
    const { volume } = await client.Controller.CreateVolume({
      name: `metrics-${process.pid}-${Date.now()}`,
      capacity_range: { required_bytes: 1 << 30 },
      volume_capabilities: [{ mount: {}, access_mode: { mode: 'SINGLE_NODE_WRITER' } }],
    });
    await client.Controller.DeleteVolume({ volume_id: volume.volume_id });
    const text = await (await fetch(`http://${address}/metrics`)).text();
    const value = (series: string) =>
      Number(
        text
          .split('\n')
          .find((l) => l.startsWith(`${series} `))
          ?.split(' ')[1] ?? 0,
      );
    expect(value('openstack_api_requests_total{service="cinder",request="volume_create"}')).toBe(1);
    expect(value('openstack_api_requests_total{service="cinder",request="volume_delete"}')).toBe(1);
    expect(value('openstack_api_requests_total{service="cinder",request="volume_get"}')).toBeGreaterThanOrEqual(1);
    expect(value('openstack_api_requests_total{service="keystone",request="token_create"}')).toBeGreaterThanOrEqual(1);
    expect(value('openstack_api_request_duration_seconds_count{service="cinder",request="volume_create"}')).toBe(1);
    // the polls after the delete end on a 404: an error of volume_get, none of volume_create
    expect(value('openstack_api_request_errors_total{service="cinder",request="volume_get"}')).toBeGreaterThanOrEqual(
      1,
    );
    expect(value('openstack_api_request_errors_total{service="cinder",request="volume_create"}')).toBe(0);
    const series = text.split('\n').filter((l) => l.startsWith('openstack_api_'));
    expect(series.filter((l) => /[0-9a-f]{8}-[0-9a-f]{4}-|[0-9a-f]{32}/.test(l))).toEqual([]);
    expect(series.some((l) => l.includes('request="other"'))).toBe(false);
  });

  test('/metrics counts RPCs by method and code with a latency histogram; /healthz answers while serving', async () => {
    const address = '127.0.0.1:19808';
    const { client } = await start({ mode: 'node', nodeId: 'node-m', metricsAddress: address });
    await client.Identity.GetPluginInfo({});
    await client.Identity.GetPluginInfo({});
    await expectCode(client.Node.NodeStageVolume({}), status.INVALID_ARGUMENT);
    const metrics = await (await fetch(`http://${address}/metrics`)).text();
    expect(metrics).toContain('csi_operations_total{method="/csi.v1.Identity/GetPluginInfo",code="OK"} 2');
    expect(metrics).toContain('csi_operations_total{method="/csi.v1.Node/NodeStageVolume",code="INVALID_ARGUMENT"} 1');
    expect(metrics).toMatch(
      /csi_operation_duration_seconds_bucket\{le="0.01",method="\/csi.v1.Identity\/GetPluginInfo",code="OK"\} [12]/,
    );
    expect(metrics).toMatch(/^stackube_csi_process_resident_memory_bytes \d+/m);
    const health = await fetch(`http://${address}/healthz`);
    expect([health.status, await health.text()]).toEqual([200, 'ok\n']);
    expect((await fetch(`http://${address}/nope`)).status).toBe(404);
    for (const d of running.splice(0)) await d.stop();
    await expect(fetch(`http://${address}/healthz`)).rejects.toThrow();
  });
});
