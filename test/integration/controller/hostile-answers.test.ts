import { readFileSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expectCode } from '../../helpers/csi-client.js';
import { CLOUD_CONF, localSecret, scratchDir } from '../../../harness/local-stack.js';
import { startDriverProcess } from '../../helpers/plugin-process.js';
import { controllerEnv, mount } from './fixtures.js';

/**
 * No single answer or request stalls or grows the controller: an allowed Keystone that answers 16 MiB of
 * `<` (a proxy's error page, or a hostile host on the allow list) costs the caller a bounded error and
 * the other RPCs nothing; 10,000 distinct regions in tenant Secrets keep one token and no session each.
 * Against the real Keystone and Cinder; the listener stands where an allowed Keystone would.
 */
const SIXTEEN_MIB = 16 << 20;
let hostile: Server;
let hostileUrl: string;
let bodiesStarted = 0;

beforeAll(async () => {
  const page = Buffer.alloc(SIXTEEN_MIB, '<');
  hostile = createServer((req, res) => {
    req.resume();
    bodiesStarted++;
    res.on('error', () => undefined);
    res.writeHead(400, { 'content-type': 'text/html', 'content-length': String(page.length) });
    res.end(page);
  });
  await new Promise<void>((resolve) => hostile.listen(0, '127.0.0.1', resolve));
  hostileUrl = `http://127.0.0.1:${(hostile.address() as AddressInfo).port}/v3`;
});
const scratch = scratchDir('ctl-hostile');
afterAll(async () => {
  await new Promise<void>((resolve) => hostile.close(() => resolve()));
  rmSync(scratch, { recursive: true, force: true });
});

const env = controllerEnv('hostile', {
  get options() {
    return { allowedAuthUrls: `http://127.0.0.1:5000/v3,${hostileUrl}` };
  },
});
const appcredB = () => localSecret('tenant-b');

test('an allowed Keystone answering 16 MiB of "<": a bounded INVALID_ARGUMENT within the deadline, and Probe answers all the while', async () => {
  let probing = true;
  let probes = 0;
  const prober = (async () => {
    while (probing) {
      expect((await env.driver.client.Identity.Probe({})).ready).toEqual({ value: true });
      probes++;
    }
  })();
  const err = await expectCode(
    env.ctl.CreateVolume(
      { name: env.name(), volume_capabilities: [mount()], secrets: { ...appcredB(), 'auth-url': hostileUrl } },
      { deadlineMs: 30_000 },
    ),
    status.INVALID_ARGUMENT,
  );
  probing = false;
  await prober;
  expect(bodiesStarted).toBeGreaterThan(0);
  // Keystone's words, cut: 300 characters of the page at most, however much it sent
  expect(err.details).toMatch(/^Keystone: <{200,299}… \(HTTP 400 on POST /);
  expect(err.details.length).toBeLessThan(400);
  expect(probes).toBeGreaterThan(0);
});

test('10,000 distinct regions: each INVALID_ARGUMENT before any session is kept; one token for them all, the process bounded', async () => {
  // the controller as its own process, so its memory is its own
  const socket = join(scratch, 'csi.sock');
  const metricsPort = 19_000 + (process.pid % 1000);
  const driver = await startDriverProcess(socket, {
    CSI_MODE: 'controller',
    CSI_CONFIG: CLOUD_CONF,
    METRICS_ADDRESS: `127.0.0.1:${metricsPort}`,
    LOG_LEVEL: 'warn',
  });
  const ctl = driver.csi.Controller;
  const tokens = async () => {
    const text = await (await fetch(`http://127.0.0.1:${metricsPort}/metrics`)).text();
    return Number(/^openstack_api_requests_total\{[^}]*request="token_create"[^}]*\} (\d+)$/m.exec(text)?.[1] ?? 0);
  };
  const rssMiB = () =>
    Number(/^VmRSS:\s+(\d+) kB/m.exec(readFileSync(`/proc/${driver.child.pid}/status`, 'utf8'))?.[1]) / 1024;
  const secret = appcredB();
  let next = 0;
  const regions = async (upTo: number) => {
    const worker = async () => {
      for (let i = next++; i < upTo; i = next++) {
        const err = await expectCode(
          ctl.CreateVolume({
            name: `${env.prefix}r${i}`,
            volume_capabilities: [mount()],
            secrets: { ...secret, region: `r-${i}-${'x'.repeat(64)}` },
          }),
          status.INVALID_ARGUMENT,
        );
        if (i % 1000 === 0)
          expect(err.details).toMatch(/region: the Keystone catalog has no block-storage endpoint in it/);
      }
    };
    await Promise.all(Array.from({ length: 16 }, worker));
  };
  try {
    await regions(1000);
    const [tokensAfter1k, rssAfter1k] = [await tokens(), rssMiB()];
    await regions(10_000);
    const [tokensAfter10k, rssAfter10k] = [await tokens(), rssMiB()];
    console.log(
      JSON.stringify({
        regions: 10_000,
        tokenRequests: tokensAfter10k,
        rssAfter1kMiB: Math.round(rssAfter1k),
        rssAfter10kMiB: Math.round(rssAfter10k),
      }),
    );
    expect(tokensAfter1k).toBe(1); // the region never made a new token: Keystone does not see it
    expect(tokensAfter10k).toBe(1);
    expect(rssAfter10k - rssAfter1k).toBeLessThan(32); // 9,000 more regions, no more memory to speak of
    // and a real region still works for the same credential
    const real = { ...secret, region: 'RegionOne' };
    const { volume } = await ctl.CreateVolume({ name: env.name(), volume_capabilities: [mount()], secrets: real });
    await ctl.DeleteVolume({ volume_id: volume.volume_id, secrets: real });
  } finally {
    await driver.stop();
  }
}, 300_000);
