import { spawn, type ChildProcess } from 'node:child_process';
import { createHash } from 'node:crypto';
import { mkdirSync, openSync, readFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { csiClient, type CsiClient } from '../src/client/csi-client.js';
import { PACKAGE_ROOT } from '../src/package-info.js';
import { seconds } from './progress.js';
import { localSecret } from '../harness/local-stack.js';
import { DemoStory, StepFailure, type DemoPaths } from './story.js';
import { sweepEarlierRuns } from './sweep.js';

// `npm run demo` / `stackube-csi demo`: one volume's story on this machine, against a driver on
// --endpoint, or one the demo starts against deploy/local (scripts/start-local.sh, as `npm start`).

const USAGE = `usage: stackube-csi demo [--endpoint unix:///…] [--kubelet-root DIR] [--kata-root DIR] [--state-dir DIR]
Without --endpoint the demo uses the driver \`npm start\` serves, and starts one when none is serving.
The paths are that driver's --kubelet-root, --kata-direct-volume-root and --state-dir (defaults: npm start's).`;

/** Where `npm start` serves (scripts/start-local.sh). */
const defaultEndpoint = (local: string) => `unix://${local}/csi/csi.sock`;

interface Options extends DemoPaths {
  endpoint: string;
  /** Whether the endpoint was asked for: then the demo never starts a driver of its own there. */
  explicit: boolean;
  local: string;
}

function options(args: string[], env: NodeJS.ProcessEnv): Options | 'help' {
  const { values, positionals } = parseArgs({
    args,
    options: {
      endpoint: { type: 'string' },
      'kubelet-root': { type: 'string' },
      'kata-root': { type: 'string' },
      'state-dir': { type: 'string' },
      help: { type: 'boolean', short: 'h' },
    },
    strict: true,
    allowPositionals: true,
  });
  if (values.help) return 'help';
  if (positionals.length) throw new Error(`unexpected argument "${positionals[0]!.slice(0, 80)}"`);
  const local = env.STACKUBE_LOCAL ?? '/var/tmp/stackube';
  return {
    local,
    explicit: values.endpoint !== undefined,
    endpoint: values.endpoint ?? env.CSI_ENDPOINT ?? defaultEndpoint(local),
    kubeletRoot: values['kubelet-root'] ?? env.KUBELET_ROOT ?? join(local, 'kubelet'),
    kataRoot: values['kata-root'] ?? env.KATA_DIRECT_VOLUME_ROOT ?? join(local, 'kata-direct-volumes'),
    stateDir: values['state-dir'] ?? env.CSI_STATE_DIR ?? join(local, 'csi-state'),
  };
}

async function serving(csi: CsiClient): Promise<boolean> {
  return csi.Identity.Probe({}, { deadlineMs: 1500 }).then(
    () => true,
    () => false,
  );
}

/** The driver `npm start` runs, started for the demo with the same paths; its output goes to a log. */
async function startDriver(
  o: Options,
  csi: CsiClient,
  say: (l: string) => void,
): Promise<{ child: ChildProcess; log: string }> {
  mkdirSync(join(o.local, 'log'), { recursive: true });
  // one log per endpoint: two demos on two endpoints must not write into one file
  const log = join(
    o.local,
    'log',
    o.endpoint === defaultEndpoint(o.local)
      ? 'demo-driver.log'
      : `demo-driver-${createHash('sha256').update(o.endpoint).digest('hex').slice(0, 8)}.log`,
  );
  const fd = openSync(log, 'w');
  // the Node this runs on first: start-local.sh runs `node`, and the system's may be too old
  const env = {
    ...process.env,
    PATH: `${dirname(process.execPath)}:${process.env.PATH ?? ''}`,
    CSI_ENDPOINT: o.endpoint,
    KUBELET_ROOT: o.kubeletRoot,
    KATA_DIRECT_VOLUME_ROOT: o.kataRoot,
    CSI_STATE_DIR: o.stateDir,
    STACKUBE_BUILT: '1',
  };
  // its own process group: a Ctrl-C at the terminal is for the demo, which still needs the driver to clean up
  const child = spawn('bash', [join(PACKAGE_ROOT, 'scripts', 'start-local.sh')], {
    env,
    stdio: ['ignore', fd, fd],
    detached: true,
  });
  say(`demo: no driver on ${o.endpoint}: starting one against deploy/local (log: ${log})`);
  const until = Date.now() + 180_000;
  while (!(await serving(csi))) {
    if (child.exitCode !== null || Date.now() > until) {
      child.kill('SIGTERM');
      const tail = readFileSync(log, 'utf8').trim().split('\n').slice(-5).join('\n  ');
      throw new Error(
        `the driver did not come up on ${o.endpoint} (${child.exitCode !== null ? `it exited ${child.exitCode}` : 'no answer in 180 s'}); the end of ${log}:\n  ${tail}`,
      );
    }
    await sleep(250);
  }
  return { child, log };
}

async function stop(child: ChildProcess): Promise<void> {
  if (child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGTERM');
  await Promise.race([exited, sleep(15_000).then(() => child.kill('SIGKILL'))]);
}

/** `stackube-csi demo …`; returns the exit code: 0 told, 1 failed, 2 usage, 130 interrupted. */
export async function runDemo(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  out: NodeJS.WritableStream = process.stdout,
): Promise<number> {
  let o: Options | 'help';
  try {
    o = options(args, env);
  } catch (e) {
    process.stderr.write(`stackube-csi demo: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  if (o === 'help') {
    out.write(`${USAGE}\n`);
    return 0;
  }
  const say = (l: string) => out.write(`${l}\n`);
  const csi = csiClient(o.endpoint);
  let driver: { child: ChildProcess; log: string } | undefined;
  let story: DemoStory | undefined;
  let interrupts = 0;
  const onSigint = () => {
    interrupts++;
    if (interrupts === 1 && story) {
      say('\ndemo: interrupted — cleaning up after the call in flight (Ctrl-C again to leave now)');
      story.interrupt();
    } else {
      say(`\ndemo: leaving now; what the demo made is named ${story?.name ?? 'demo-…'} and may be left`);
      if (driver) driver.child.kill('SIGTERM');
      process.exit(130);
    }
  };
  process.on('SIGINT', onSigint);
  try {
    if (!(await serving(csi))) {
      if (o.explicit)
        throw new Error(
          `no CSI driver answers Probe on ${o.endpoint}: start it, or leave out --endpoint and the demo starts one`,
        );
      driver = await startDriver(o, csi, say);
    }
    const info = await csi.Identity.GetPluginInfo({});
    say(`demo: ${info.name} ${info.vendor_version} on ${o.endpoint}`);
    const { node_id: nodeId } = await csi.Node.NodeGetInfo({});
    const swept = await sweepEarlierRuns(csi, o.kubeletRoot, nodeId, localSecret('tenant-a'));
    if (swept.length) say(`demo: removed what earlier runs could not clean up: ${swept.join(', ')}`);
    story = new DemoStory(csi, o, nodeId, out);
    try {
      await story.tell();
      say(`\n${story.progress.table()}`);
      say(`\ndemo: done in ${seconds(story.progress.results.reduce((a, r) => a + r.ms, 0))}`);
      return 0;
    } catch (e) {
      const failed = await story.cleanUp();
      const left = await story.remaining().catch((l: Error) => [`(could not look: ${l.message})`]);
      const outcome =
        failed.length || left.length
          ? `could not undo: ${[...failed, ...left].join('; ')}`
          : 'cleaned up: nothing the demo made is left';
      if (story.interrupted) {
        say(`demo: interrupted; ${outcome}`);
        return 130;
      }
      if (!(e instanceof StepFailure)) throw e;
      say(`\ndemo: failed at ${e.message}`);
      say(`  what to do: ${e.hint}${driver ? ` (driver log: ${driver.log})` : ''}`);
      say(`  ${outcome}`);
      return 1;
    }
  } catch (e) {
    say(`demo: ${(e as Error).message}`);
    return 1;
  } finally {
    process.off('SIGINT', onSigint);
    csi.close();
    if (driver) await stop(driver.child);
  }
}

// run as a script (npm run demo), not when the CLI imports it
if (import.meta.url === `file://${process.argv[1]}`)
  void runDemo(process.argv.slice(2)).then((code) => process.exit(code));
