import { KubeClient, type KubeError } from '../../src/kube/client.js';
import { loadKubeConnection, type KubeConnection } from '../../src/kube/config.js';
import { POD_INFO_KEYS, RuntimeDetector } from '../../src/node/kata/runtime.js';
import { startKubeApi, type KubeApiStandIn } from '../helpers/kube-api.js';
import { capturedLogger } from '../../harness/log-capture.js';

// The Kubernetes API path of runtime detection, against a local HTTPS stand-in for the API server
// (test/helpers/kube-api.ts) reached through a real KUBECONFIG file or in-cluster files.

const TOKEN = 'stand-in-token-7f3a9c';
let api: KubeApiStandIn;
let workDir: string;
let cleanup: () => Promise<void>;
const clients: KubeClient[] = [];

beforeAll(async () => {
  ({ api, workDir, cleanup } = await startKubeApi({ token: TOKEN }));
  api.addRuntimeClass('kata-qemu', 'kata-qemu');
  api.addRuntimeClass('kata-clh', 'kata-clh');
  api.addRuntimeClass('gvisor', 'runsc');
  api.addPod('team-a', 'vm-pod', 'kata-qemu');
  api.addPod('team-a', 'vm-pod-2', 'kata-qemu');
  api.addPod('team-a', 'clh-pod', 'kata-clh');
  api.addPod('team-a', 'runc-pod');
  api.addPod('team-a', 'gvisor-pod', 'gvisor');
  api.addPod('team-a', 'orphan-class', 'deleted-class');
});
afterAll(async () => {
  await Promise.all(clients.map((c) => c.close()));
  await cleanup();
});

async function clientFrom(env: NodeJS.ProcessEnv, saDir?: string): Promise<KubeClient> {
  const r = await loadKubeConnection(env, saDir);
  if (!('connection' in r)) throw new Error(r.unavailable);
  const c = new KubeClient(r.connection, { timeoutMs: 1500 });
  clients.push(c);
  return c;
}
const podContext = (name: string, extra: Record<string, string> = {}) => ({
  [POD_INFO_KEYS.name]: name,
  [POD_INFO_KEYS.namespace]: 'team-a',
  [POD_INFO_KEYS.ephemeral]: 'false',
  ...extra,
});

describe('KubeClient', () => {
  test.each([
    ['token, CA file', { auth: 'token' as const }],
    ['tokenFile relative to the kubeconfig, inline CA', { auth: 'tokenFile' as const, caInline: true }],
    ['client certificate', { auth: 'cert' as const }],
  ])('KUBECONFIG with %s reads a Pod and a RuntimeClass', async (_name, o) => {
    const before = api.requests.length;
    const kube = await clientFrom({ KUBECONFIG: api.writeKubeconfig(workDir, o) });
    const pod = await kube.getPod('team-a', 'vm-pod');
    expect(pod).toEqual({
      metadata: { name: 'vm-pod', namespace: 'team-a', uid: 'uid-team-a-vm-pod' },
      spec: { runtimeClassName: 'kata-qemu', nodeName: 'node-1' },
    });
    expect(await kube.getRuntimeClass('kata-qemu')).toEqual({ metadata: { name: 'kata-qemu' }, handler: 'kata-qemu' });
    expect(api.requests.slice(before).map((r) => r.auth)).toEqual(
      o.auth === 'cert' ? ['cert', 'cert'] : ['token', 'token'],
    );
  });

  test('in-cluster service account files', async () => {
    const sa = api.writeServiceAccount(workDir);
    const kube = await clientFrom(sa.env, sa.dir);
    expect((await kube.getPod('team-a', 'runc-pod')).spec.runtimeClassName).toBeUndefined();
  });

  test('a server certificate from another CA is refused unless insecure-skip-tls-verify', async () => {
    const r = (await loadKubeConnection({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token' }) })) as {
      connection: KubeConnection;
    };
    const untrusting = new KubeClient({ ...r.connection, ca: undefined }, { timeoutMs: 1500 });
    clients.push(untrusting);
    await expect(untrusting.getPod('team-a', 'vm-pod')).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/unreachable.*(UNABLE_TO_VERIFY_LEAF_SIGNATURE|SELF_SIGNED|unable to verify)/i),
    });
    const insecure = await clientFrom({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token', insecure: true }) });
    expect((await insecure.getPod('team-a', 'vm-pod')).metadata.uid).toBe('uid-team-a-vm-pod');
  });

  test('errors carry the API server’s message and a kind; the token appears in none', async () => {
    const kube = await clientFrom({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token' }) });
    const missing = (await kube.getPod('team-a', 'nope').catch((e: KubeError) => e)) as KubeError;
    expect(missing).toMatchObject({
      kind: 'not-found',
      status: 404,
      message: expect.stringMatching(/pod team-a\/nope .* failed: pods "nope" not found \(HTTP 404\)/),
    });
    const wrong = await clientFrom({
      KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token', token: 'wrong-token-123' }),
    });
    const unauthorized = (await wrong.getRuntimeClass('kata-qemu').catch((e: KubeError) => e)) as KubeError;
    expect(unauthorized).toMatchObject({ kind: 'unauthorized', status: 401 });
    for (const e of [missing, unauthorized])
      expect(JSON.stringify({ m: e.message, s: e.stack })).not.toMatch(/stand-in-token|wrong-token/);
    await expect(kube.getPod('Team A', 'x')).rejects.toMatchObject({
      kind: 'not-found',
      message: expect.stringMatching(/namespace "Team A" is not a valid Kubernetes name/),
    });
  });

  test('a slow API server times out with a clear message; an absent one is unreachable', async () => {
    const kube = await clientFrom({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token' }) });
    api.delayMs = 3000;
    try {
      await expect(kube.getPod('team-a', 'vm-pod')).rejects.toMatchObject({
        kind: 'timeout',
        transient: true,
        message: expect.stringMatching(/did not answer within 1500 ms \(reading pod team-a\/vm-pod\)/),
      });
    } finally {
      api.delayMs = 0;
    }
    const r = (await loadKubeConnection({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token' }) })) as {
      connection: KubeConnection;
    };
    const gone = new KubeClient({ ...r.connection, server: 'https://127.0.0.1:1' }, { timeoutMs: 1500 });
    clients.push(gone);
    await expect(gone.getPod('team-a', 'vm-pod')).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/unreachable .*ECONNREFUSED/),
    });
  });
});

describe('RuntimeDetector through the API', () => {
  async function detector(o: { handlers?: string[]; cacheMs?: number } = {}) {
    const kube = await clientFrom({ KUBECONFIG: api.writeKubeconfig(workDir, { auth: 'token' }) });
    const logs = capturedLogger('debug');
    return {
      d: new RuntimeDetector({ hypervisorHandlers: o.handlers ?? ['kata*'], kube, log: logs.log, cacheMs: o.cacheMs }),
      logs,
    };
  }
  const warnings = (logs: ReturnType<typeof capturedLogger>) =>
    logs
      .lines()
      .filter((l) => l.level === 'warn')
      .map((l) => l.msg);

  test('auto: Kata pods (any kata* handler) get passthrough; runc, default and other sandboxes a host mount', async () => {
    const { d, logs } = await detector();
    expect(await d.decide('auto', podContext('vm-pod'))).toMatchObject({ mode: 'passthrough' });
    expect(await d.decide('auto', podContext('clh-pod'))).toMatchObject({ mode: 'passthrough' });
    expect(await d.decide('auto', podContext('runc-pod'))).toMatchObject({
      mode: 'filesystem',
      why: expect.stringMatching(/default runtime/),
    });
    expect(await d.decide('auto', podContext('gvisor-pod'))).toMatchObject({
      mode: 'filesystem',
      why: expect.stringMatching(/RuntimeClass gvisor \(handler runsc\)/),
    });
    expect(warnings(logs)).toEqual([]);
  });

  test('the configured globs decide: with only kata-clh, a kata-qemu pod is mounted on the host', async () => {
    const { d } = await detector({ handlers: ['kata-clh'] });
    expect(await d.decide('auto', podContext('vm-pod'))).toMatchObject({ mode: 'filesystem' });
    expect(await d.decide('auto', podContext('clh-pod'))).toMatchObject({ mode: 'passthrough' });
  });

  test('RuntimeClass lookups are cached; Pods are read every time', async () => {
    const { d } = await detector({ cacheMs: 60_000 });
    const rcPath = '/apis/node.k8s.io/v1/runtimeclasses/kata-qemu';
    const rcBefore = api.requestsTo(rcPath);
    const podBefore = api.requestsTo('/api/v1/namespaces/team-a/pods/vm-pod');
    await Promise.all([d.decide('auto', podContext('vm-pod')), d.decide('auto', podContext('vm-pod-2'))]);
    await d.decide('auto', podContext('vm-pod'));
    expect(api.requestsTo(rcPath) - rcBefore).toBe(1);
    expect(api.requestsTo('/api/v1/namespaces/team-a/pods/vm-pod') - podBefore).toBe(2);
    const { d: uncached } = await detector({ cacheMs: 0 });
    await uncached.decide('auto', podContext('vm-pod'));
    await uncached.decide('auto', podContext('vm-pod'));
    expect(api.requestsTo(rcPath) - rcBefore).toBe(3);
  });

  test('passthrough for a runc pod → failed-precondition; for a Kata pod → passthrough', async () => {
    const { d } = await detector();
    expect(await d.decide('passthrough', podContext('runc-pod'))).toMatchObject({
      error: 'failed-precondition',
      why: expect.stringMatching(/pod team-a\/runc-pod runs with the default runtime/),
    });
    expect(await d.decide('passthrough', podContext('vm-pod'))).toMatchObject({ mode: 'passthrough' });
  });

  test('filesystem asks the API nothing', async () => {
    const { d } = await detector();
    const before = api.requests.length;
    expect(await d.decide('filesystem', podContext('vm-pod'))).toMatchObject({ mode: 'filesystem' });
    expect(api.requests.length).toBe(before);
  });

  test('auto falls back to a host mount with ONE warning naming the reason: no pod info, forbidden, missing pod or class, no API', async () => {
    const { d, logs } = await detector();
    api.forbidden.add('/api/v1/namespaces/team-a/pods/clh-pod');
    try {
      expect(await d.decide('auto', undefined)).toMatchObject({ mode: 'filesystem' });
      expect(await d.decide('auto', podContext('clh-pod'))).toMatchObject({ mode: 'filesystem' });
      expect(await d.decide('auto', podContext('deleted'))).toMatchObject({ mode: 'filesystem' });
      expect(await d.decide('auto', podContext('orphan-class'))).toMatchObject({ mode: 'filesystem' });
    } finally {
      api.forbidden.clear();
    }
    const noApi = capturedLogger('debug');
    const offline = new RuntimeDetector({
      hypervisorHandlers: ['kata*'],
      kube: { unavailable: 'neither KUBECONFIG nor the in-cluster variables are set' },
      log: noApi.log,
    });
    expect(await offline.decide('auto', podContext('vm-pod'))).toMatchObject({ mode: 'filesystem' });
    const w = [...warnings(logs), ...warnings(noApi)];
    expect(w).toHaveLength(5);
    expect(w[0]).toMatch(/podInfoOnMount: true/);
    expect(w[1]).toMatch(/forbidden: User .* cannot get resource.*needs get on pods and runtimeclasses.node.k8s.io/);
    expect(w[2]).toMatch(/pods "deleted" not found/);
    expect(w[3]).toMatch(/runtimeclasses.node.k8s.io "deleted-class" not found/);
    expect(w[4]).toMatch(/no Kubernetes API access: neither KUBECONFIG/);
    expect(logs.text() + noApi.text()).not.toContain(TOKEN);
  });

  test('auto with the API slow or a pod uid that is not kubelet’s: unavailable, so kubelet retries', async () => {
    const { d } = await detector();
    expect(await d.decide('auto', podContext('vm-pod', { [POD_INFO_KEYS.uid]: 'some-older-pod' }))).toMatchObject({
      error: 'unavailable',
      why: expect.stringMatching(/is another pod \(uid uid-team-a-vm-pod, kubelet named some-older-pod\)/),
    });
    expect(await d.decide('auto', podContext('vm-pod', { [POD_INFO_KEYS.uid]: 'uid-team-a-vm-pod' }))).toMatchObject({
      mode: 'passthrough',
    });
    api.delayMs = 3000;
    try {
      expect(await d.decide('auto', podContext('runc-pod'))).toMatchObject({
        error: 'unavailable',
        why: expect.stringMatching(/did not answer within 1500 ms/),
      });
    } finally {
      api.delayMs = 0;
    }
  });

  test('the caller’s deadline cuts the lookup short', async () => {
    const { d } = await detector();
    api.delayMs = 1000;
    try {
      const t = performance.now();
      const r = await d.decide('auto', podContext('vm-pod'), AbortSignal.timeout(100));
      expect(r).toMatchObject({ error: 'unavailable', why: expect.stringMatching(/cancelled/) });
      expect(performance.now() - t).toBeLessThan(900);
    } finally {
      api.delayMs = 0;
    }
  });
});
