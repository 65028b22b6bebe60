import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { setTimeout as sleep } from 'node:timers/promises';
import { invalidArgument } from '../../../src/server/errors.js';
import type { RpcSpec } from '../../../src/server/interceptors.js';
import { OperationLocks } from '../../../src/server/locks.js';
import { Metrics } from '../../../src/server/metrics.js';
import { CsiServer } from '../../../src/server/server.js';
import { csiClient, expectCode, type CsiClient } from '../../helpers/csi-client.js';
import { capturedLogger } from '../../../harness/log-capture.js';

// A real gRPC server and client over a unix socket; only the RPC bodies are small test handlers,
// so what is checked is the interceptor chain: locks, error mapping, secret scrubbing, logs, metrics.
const SECRET = 'Sup3r-Secret-Value-42';
let server: CsiServer;
let client: CsiClient;
let metrics: Metrics;
const capture = capturedLogger('debug');
const release = new Map<string, () => void>();

const slowCreate: RpcSpec<{ name: string }, unknown> = {
  lockKeys: (r: { name: string }) => [`name:${r.name}`],
  handler: async (r: { name: string }) => {
    await new Promise<void>((resolve) => release.set(r.name, resolve));
    return { volume: { volume_id: `id-${r.name}`, capacity_bytes: 1 } };
  },
};
const leakyDelete: RpcSpec<{ volume_id: string }, unknown> = {
  lockKeys: (r: { volume_id: string }) => [`vol:${r.volume_id}`],
  handler: async () => {
    throw invalidArgument(`backend said: bad password ${SECRET} for user`);
  },
};
const crashing: RpcSpec<unknown, unknown> = {
  handler: async () => {
    throw new TypeError(`cannot read property of undefined near ${SECRET}`);
  },
};

beforeAll(async () => {
  const dir = mkdtempSync(join(tmpdir(), 'csi-icpt-'));
  metrics = new Metrics(false);
  server = new CsiServer({ log: capture.log, metrics, locks: new OperationLocks() });
  await server.start(`unix://${dir}/csi.sock`, {
    Identity: {},
    Controller: { CreateVolume: slowCreate, DeleteVolume: leakyDelete, ControllerPublishVolume: crashing },
  });
  client = csiClient(`unix://${dir}/csi.sock`);
});
afterAll(async () => {
  client.close();
  await server.shutdown(1000);
});

/** Until the slow handler has begun for `name` (it holds the name's lock from then on). */
async function started(name: string): Promise<void> {
  while (!release.has(name)) await sleep(5);
}

test('a second concurrent operation on the same volume name answers ABORTED; others proceed', async () => {
  const first = client.Controller.CreateVolume({ name: 'pvc-1' });
  await started('pvc-1');
  const err = await expectCode(client.Controller.CreateVolume({ name: 'pvc-1' }), status.ABORTED);
  expect(err.details).toMatch(/an operation for this volume is in progress/);
  const other = client.Controller.CreateVolume({ name: 'pvc-2' });
  await started('pvc-2');
  release.get('pvc-2')!();
  await expect(other).resolves.toMatchObject({ volume: { volume_id: 'id-pvc-2' } });
  release.get('pvc-1')!();
  release.delete('pvc-1');
  await expect(first).resolves.toMatchObject({ volume: { volume_id: 'id-pvc-1' } });
  // the lock is gone once the first finished
  const again = client.Controller.CreateVolume({ name: 'pvc-1' });
  await started('pvc-1');
  release.get('pvc-1')!();
  await expect(again).resolves.toBeTruthy();
  expect(await metrics.registry.getSingleMetricAsString('csi_operations_aborted_total')).toMatch(/CreateVolume"} 1/);
});

test('an error message quoting a request secret reaches neither the caller nor the log', async () => {
  const err = await expectCode(
    client.Controller.DeleteVolume({ volume_id: 'v1', secrets: { password: SECRET, username: 'u' } }),
    status.INVALID_ARGUMENT,
  );
  expect(err.details).toContain('backend said: bad password [redacted] for user');
  expect(capture.text()).not.toContain(SECRET);
  const line = capture.lines().find((l) => l.rpc === 'DeleteVolume' && l.code === 'INVALID_ARGUMENT');
  expect(line).toMatchObject({ volumeId: 'v1', error: expect.stringContaining('[redacted]') });
  expect(typeof line?.durationMs).toBe('number');
  // the debug request line exists and has its secrets stripped
  const req = capture.lines().find((l) => l.rpc === 'DeleteVolume' && l.msg === 'request') as {
    request: { secrets: unknown };
  };
  expect(req.request.secrets).toBe('[redacted]');
});

test('an unexpected exception is INTERNAL with its message kept and the secret scrubbed', async () => {
  const err = await expectCode(
    client.Controller.ControllerPublishVolume({ volume_id: 'v2', node_id: 'n', secrets: { x: SECRET } }),
    status.INTERNAL,
  );
  expect(err.details).toMatch(/^internal error: cannot read property of undefined near \[redacted\]/);
  expect(capture.text()).not.toContain(SECRET);
});

test('an RPC without an implementation answers UNIMPLEMENTED and is counted', async () => {
  const err = await expectCode(client.Controller.ListSnapshots({}), status.UNIMPLEMENTED);
  expect(err.details).toBe('ListSnapshots is not implemented by this plugin');
  expect(await metrics.registry.getSingleMetricAsString('csi_operations_total')).toMatch(
    /method="\/csi.v1.Controller\/ListSnapshots",code="UNIMPLEMENTED"} 1/,
  );
});

test('a service this mode does not serve answers UNIMPLEMENTED', async () => {
  await expectCode(client.Node.NodeGetInfo({}), status.UNIMPLEMENTED);
});
