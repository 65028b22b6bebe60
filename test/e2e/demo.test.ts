import { jest } from '@jest/globals';
import { spawn } from 'node:child_process';
import { mkdirSync, readdirSync, readFileSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { leftovers } from '../../demo/leftovers.js';
import { PACKAGE_ROOT } from '../../src/package-info.js';
import { TestVolumes } from '../../harness/cinder-volumes.js';
import { scratchDir } from '../../harness/local-stack.js';
import { nodeLeaks } from '../../harness/node-leaks.js';

// `npm run demo` as a newcomer runs it, not on a terminal: the demo (dist/demo, built by npm test's
// set-up) finds no driver, starts one against deploy/local with the paths given in the environment
// (start-local.sh's twins), walks a volume into a qemu guest and back, and leaves nothing.

jest.setTimeout(600_000);

interface DemoRun {
  code: number | null;
  out: string;
  base: string;
}

function demo(
  args: string[],
  o: { interruptAt?: RegExp; signal?: NodeJS.Signals; base?: string; onOutput?: (out: string) => void } = {},
): Promise<DemoRun> {
  const base = o.base ?? scratchDir('demo');
  mkdirSync(join(base, 'kata'), { recursive: true });
  const env = {
    PATH: process.env.PATH,
    CSI_ENDPOINT: `unix://${base}/csi.sock`,
    KUBELET_ROOT: join(base, 'kubelet'),
    CSI_STATE_DIR: join(base, 'state'),
    KATA_DIRECT_VOLUME_ROOT: join(base, 'kata'),
    METRICS_ADDRESS: '127.0.0.1:0',
    ...(process.env.STACKUBE_LOCAL ? { STACKUBE_LOCAL: process.env.STACKUBE_LOCAL } : {}),
  };
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [join(PACKAGE_ROOT, 'dist', 'src', 'main.js'), 'demo', ...args], {
      env,
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let out = '';
    const take = (d: Buffer) => {
      out += d;
      o.onOutput?.(out);
      if (o.interruptAt?.test(out)) {
        o.interruptAt = undefined;
        child.kill(o.signal ?? 'SIGINT');
      }
    };
    child.stdout.on('data', take);
    child.stderr.on('data', take);
    child.on('exit', (code) => resolve({ code, out, base }));
  });
}

/** The processes started for this run's endpoint (the driver the demo started). */
function driversOf(run: DemoRun): number[] {
  return readdirSync('/proc')
    .filter((p) => /^\d+$/.test(p))
    .filter((pid) => {
      try {
        return readFileSync(`/proc/${pid}/environ`, 'utf8').includes(`CSI_ENDPOINT=unix://${run.base}/csi.sock`);
      } catch {
        return false; // gone
      }
    })
    .map(Number);
}

/** What the run left on this node under its own dirs, and whether its driver still runs. */
function leftOnNode(run: DemoRun): string[] {
  const left = nodeLeaks({ stateDir: join(run.base, 'state'), kubeletRoot: join(run.base, 'kubelet') });
  if (readdirSync(join(run.base, 'kata')).length)
    left.push(`Kata files: ${readdirSync(join(run.base, 'kata')).join(', ')}`);
  for (const pid of driversOf(run)) left.push(`process ${pid} still running`);
  return left;
}

const STEPS = [
  'tenant-a creates a 1 GiB volume',
  'attach, stage and mount it as ext4 for an ordinary (runc) pod; write a file',
  'hand the same device to a qemu guest (Kata direct volume); the guest reads and writes',
  "back on the host: an ordinary pod reads the guest's file",
  'snapshot it, clone the snapshot, expand it while attached',
  "tenant-b tries to publish tenant-a's volume",
  'clean up, and show that nothing is left',
];

test('the whole story, step by step, in plain lines; the guest’s file is read on the host, tenant-b is refused, nothing is left', async () => {
  const run = await demo([]);
  try {
    expect([run.code, run.out.slice(-3000)]).toEqual([0, expect.stringContaining('demo: done in')]);
    const out = run.out;
    expect(out).toMatch(/^demo: no driver on unix:\/\/.*: starting one against deploy\/local/m);
    // each step starts and ends, in order
    let at = 0;
    STEPS.forEach((title, i) => {
      const start = out.indexOf(`[${i + 1}/7] ${title} ...\n`, at);
      const end = out.indexOf(`[${i + 1}/7] ok in `, start);
      expect([title, start >= at, end > start]).toEqual([title, true, true]);
      at = end;
    });
    const name = /Cinder volume ([0-9a-f-]{36}) \(1 GiB\)/.exec(out)?.[1];
    expect(name).toBeDefined();
    const [, demoName] = /wrote from-host\.txt: (demo-[0-9a-f]+)-written-on-the-host/.exec(out)!;
    expect(out).toMatch(/mountInfo\.json: \{"volume-type":"directvol","device":"\/dev\/loop\d+","fstype":"ext4"/);
    expect(out).toContain(`guest read from-host.txt: ok; wrote from-guest.txt: ${demoName}-written-in-the-guest`);
    expect(out).toMatch(/host mounts of \/dev\/loop\d+ while the guest ran \(mount table read [1-9]\d* times\): none/);
    expect(out).toContain(`from-guest.txt on the host: ${demoName}-written-in-the-guest`);
    expect(out).toMatch(/volume 2 GiB; its ext4 grew from 0\.9\d to 1\.9\d GiB/);
    expect(out).toMatch(/refused: NOT_FOUND \(5\): volume [0-9a-f-]{36} does not exist/);
    expect(out).toContain(
      'left: nothing (volumes, snapshots, attachments, mappings, loop devices, rbd-fuse, mounts, Kata files)',
    );
    // the closing table: a row per step, with the raw figure where there is one
    const table = out.slice(out.indexOf('\nstep '));
    STEPS.forEach((title, i) =>
      expect(table).toMatch(
        new RegExp(`^${i + 1}\\. ${title.replace(/[()]/g, '\\$&')} +\\d+\\.\\d\\d s  (\\d+\\.\\d\\d s  \\S|—)`, 'm'),
      ),
    );
    expect(table).toMatch(/Cinder POST \/volumes until available/);
    expect(leftOnNode(run)).toEqual([]);
  } finally {
    rmSync(run.base, { recursive: true, force: true });
  }
});

test('Ctrl-C in the middle: the step in flight ends, what the demo made is removed, exit 130', async () => {
  const run = await demo([], { interruptAt: /\[3\/7\] hand the same device/ });
  try {
    expect([run.code, run.out.slice(-2000)]).toEqual([
      130,
      expect.stringContaining('demo: interrupted; cleaned up: nothing the demo made is left'),
    ]);
    expect(run.out).not.toContain('[4/7]');
    expect(leftOnNode(run)).toEqual([]);
    const id = /Cinder volume ([0-9a-f-]{36})/.exec(run.out)![1]!;
    const probe = TestVolumes.open('demo-test');
    try {
      expect((await probe.cinder.call('GET', `/volumes/${id}`, { expect: [200, 404] })).status).toBe(404);
    } finally {
      await probe.cleanup();
    }
  } finally {
    rmSync(run.base, { recursive: true, force: true });
  }
});

test('kill -9 of the demo half way: the next run removes what it left (staged, attached, its plain Cinder volume), then tells its own story', async () => {
  const killed = await demo([], { interruptAt: /wrote from-host\.txt: demo-/, signal: 'SIGKILL' });
  const rerun = await demo([], { base: killed.base });
  try {
    expect(killed.code).toBeNull();
    const [, first] = /wrote from-host\.txt: (demo-[0-9a-f]+)-written-on-the-host/.exec(killed.out)!;
    const id = /Cinder volume ([0-9a-f-]{36})/.exec(killed.out)![1]!;
    expect([rerun.code, rerun.out.slice(-1500)]).toEqual([0, expect.stringContaining('demo: done in')]);
    // the killed run's driver still serves (its own process group): the rerun uses it and says what it swept
    expect(rerun.out).not.toContain('starting one against deploy/local');
    expect(rerun.out).toContain(`demo: removed what earlier runs could not clean up: ${first}`);
    const probe = TestVolumes.open('demo-test');
    try {
      expect((await probe.cinder.call('GET', `/volumes/${id}`, { expect: [200, 404] })).status).toBe(404);
      const all = (await probe.cinder.call<{ volumes: { name: string }[] }>('GET', '/volumes')).body.volumes;
      expect(all.map((v) => v.name).filter((n) => n?.startsWith(first!))).toEqual([]);
    } finally {
      await probe.cleanup();
    }
  } finally {
    for (const pid of driversOf(killed)) process.kill(pid, 'SIGTERM');
    for (let i = 0; i < 100 && driversOf(killed).length; i++) await new Promise((r) => setTimeout(r, 100));
    expect(leftOnNode(killed)).toEqual([]);
    rmSync(killed.base, { recursive: true, force: true });
  }
});

test("two demos at once: the second one's sweep leaves the first, still running, alone; both tell their story", async () => {
  let startSecond!: () => void;
  const firstAtStep2 = new Promise<void>((r) => (startSecond = r));
  const first = demo([], { onOutput: (out) => /\[2\/7\] ok in/.test(out) && startSecond() });
  await firstAtStep2;
  const second = await demo([]);
  const done = await first;
  try {
    expect([done.code, second.code]).toEqual([0, 0]);
    expect(second.out).not.toContain('removed what earlier runs');
    for (const r of [done, second]) expect(leftOnNode(r)).toEqual([]);
  } finally {
    for (const r of [done, second]) rmSync(r.base, { recursive: true, force: true });
  }
});

test('the leftovers check finds a volume, its attachment and its snapshot while they are there', async () => {
  const volumes = TestVolumes.open('demo-leftovers');
  const base = scratchDir('demo-leftovers');
  try {
    const v = await volumes.createAttached('demo-node');
    const snap = await volumes.snapshot(v.volumeId);
    const traces = { volumeIds: [v.volumeId], image: `volume-${v.volumeId}`, kubeletDirs: [], kataRoot: base };
    const found = await leftovers(traces);
    expect(found).toEqual(
      expect.arrayContaining([
        expect.stringMatching(`^volume ${v.volumeId} \\(in-use\\)`),
        `snapshot ${snap} of ${v.volumeId} (available)`,
        `attachment ${v.attachmentId} of ${v.volumeId}`,
      ]),
    );
    await volumes.cleanup();
    expect(await leftovers(traces)).toEqual([]);
  } finally {
    await volumes.cleanup().catch(() => undefined);
    rmSync(base, { recursive: true, force: true });
  }
});

test('an --endpoint where nothing serves is not started over: exit 1 saying so; a bad flag exits 2', async () => {
  const none = await demo(['--endpoint', 'unix:///nonexistent/csi.sock']);
  expect([none.code, none.out.trim()]).toEqual([
    1,
    'demo: no CSI driver answers Probe on unix:///nonexistent/csi.sock: start it, or leave out --endpoint and the demo starts one',
  ]);
  const bad = await demo(['--no-such-flag']);
  expect(bad.code).toBe(2);
  expect(bad.out).toMatch(/Unknown option '--no-such-flag'/);
  for (const r of [none, bad]) rmSync(r.base, { recursive: true, force: true });
});
