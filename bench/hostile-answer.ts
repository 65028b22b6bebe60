/**
 * What one hostile answer costs the controller (issue 22): an allowed Keystone answering every token
 * request with HTTP 400 and 16 MiB of `<`. Measured in one run:
 *   1. Identity.Probe latency with nothing else going on (the raw operation), then while tenant calls
 *      aimed at that Keystone run back to back (goal: p99 during < 50 ms, and close to the raw p99);
 *   2. how long each of those calls takes to fail (bounded: it reads 64 KiB of the answer, not 16 MiB);
 *   3. summarize() over the 16 MiB body, beside the old expression /<[^>]+>/g over 40 KiB of it (for
 *      scale: that one is quadratic, 1 MiB of it took about 20 minutes).
 * Prints one JSON document on stdout and a table on stderr (bench/report.ts).
 */
import { createServer } from 'node:http';
import type { AddressInfo } from 'node:net';
import { summarize } from '../src/openstack/errors.js';
import { startTestDriver } from '../harness/driver.js';
import { localSecret } from '../harness/local-stack.js';
import { percentile, report, round } from './report.js';

const PROBES = Number(process.env.BENCH_PROBES ?? 2000);
const HOSTILE_CALLS = Number(process.env.BENCH_HOSTILE_CALLS ?? 20);
const PAGE = Buffer.alloc(16 << 20, '<');
const CAP = { mount: { fs_type: 'ext4' }, access_mode: { mode: 'SINGLE_NODE_WRITER' } };

const ms = (t0: number) => performance.now() - t0;
const stats = (xs: number[]) => {
  const s = [...xs].sort((a, b) => a - b);
  return { n: s.length, p50: round(percentile(s, 50)), p99: round(percentile(s, 99)), max: round(s.at(-1) ?? NaN) };
};

async function main() {
  const server = createServer((req, res) => {
    req.resume();
    res.on('error', () => undefined);
    res.writeHead(400, { 'content-type': 'text/html', 'content-length': String(PAGE.length) }).end(PAGE);
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  const hostileUrl = `http://127.0.0.1:${(server.address() as AddressInfo).port}/v3`;
  const driver = await startTestDriver({
    mode: 'controller',
    logLevel: 'warn',
    options: { allowedAuthUrls: `http://127.0.0.1:5000/v3,${hostileUrl}` },
  });
  const csi = driver.client;
  try {
    await csi.Identity.Probe({});
    const probe = async () => {
      const t0 = performance.now();
      await csi.Identity.Probe({});
      return ms(t0);
    };
    const raw: number[] = [];
    for (let i = 0; i < PROBES; i++) raw.push(await probe());

    const secrets = { ...localSecret('tenant-b'), 'auth-url': hostileUrl };
    const failures: number[] = [];
    let calling = true;
    const calls = (async () => {
      for (let i = 0; i < HOSTILE_CALLS; i++) {
        const t0 = performance.now();
        await csi.Controller.CreateVolume({ name: `bench-hostile-${i}`, volume_capabilities: [CAP], secrets }).then(
          () => {
            throw new Error('the hostile Keystone was believed');
          },
          (e: { code: number }) => {
            if (e.code !== 3) throw new Error(`expected INVALID_ARGUMENT, got ${e.code}`);
          },
        );
        failures.push(ms(t0));
      }
      calling = false;
    })();
    const during: number[] = [];
    while (calling) during.push(await probe());
    await calls;

    const text = PAGE.toString('latin1');
    let t0 = performance.now();
    summarize(text);
    const summarizeMs = ms(t0);
    const slice = text.slice(0, 40 * 1024);
    t0 = performance.now();
    slice.replace(/<[^>]+>/g, ' ');
    const oldRegexMs = ms(t0);

    const results = {
      probeRawMs: stats(raw),
      probeDuringMs: stats(during),
      hostileCallMs: stats(failures),
      summarize16MiBMs: round(summarizeMs),
      oldRegexOn40KiBMs: round(oldRegexMs),
    };
    report('hostile-answer', results, [
      ['Probe p50, nothing else (ms)', results.probeRawMs.p50],
      ['Probe p99, nothing else (ms)', results.probeRawMs.p99],
      ['Probe p50, hostile calls running (ms)', results.probeDuringMs.p50],
      ['Probe p99, hostile calls running (ms)', results.probeDuringMs.p99, 'goal < 50'],
      ['probes answered during the calls', results.probeDuringMs.n],
      ['hostile call → INVALID_ARGUMENT p50 (ms)', results.hostileCallMs.p50],
      ['hostile call p99 (ms)', results.hostileCallMs.p99],
      ['summarize(16 MiB of "<") (ms)', results.summarize16MiBMs],
      ['old /<[^>]+>/g over 40 KiB (ms)', results.oldRegexOn40KiBMs, 'quadratic'],
    ]);
  } finally {
    await driver.stop();
    server.close();
  }
}

await main();
