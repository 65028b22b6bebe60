import { existsSync, writeFileSync } from 'node:fs';
import { createInterface } from 'node:readline';
import { execa } from 'execa';
import { directVolumeDir, readDirectVolume, type MountInfo } from '../../src/node/kata/direct-volume.js';
import { ensureGuestImage } from './assets.js';

// Boots the e2e guest under qemu and reads what its /init (guest-init.sh) reports on the serial
// console. runKataSandbox plays the Kata runtime's part for one direct-assigned volume: it reads the
// mountInfo.json the driver wrote for a target path, records a sandbox id beside it (as the runtime
// does), and hands the device to the VM as virtio-blk; the guest mounts it as the Kata agent would.

export type Accel = 'kvm' | 'tcg';

export interface BootOptions {
  /** Block devices (or files) handed to the guest as virtio-blk: vda, vdb, … */
  drives?: { path: string; readonly?: boolean }[];
  /** A host directory shared over virtio-9p (qemu's defaults: -virtfs local, security_model=none). */
  share?: { path: string; tag: string };
  /** csi.* kernel arguments for guest-init.sh, e.g. { 'csi.fstype': 'ext4' }; arrays repeat the key. */
  args: Record<string, string | string[] | undefined>;
  /** Called at each CSI-SYNC point (before a cold read); the guest waits until it returns. */
  onSync?: (tag: string) => Promise<void>;
  timeoutMs?: number;
  memMiB?: number;
  accel?: Accel | 'auto';
}

export interface BenchLine {
  mode: string;
  direct: boolean;
  bytes: number;
  ops: number;
  ns: number;
}

export interface GuestRun {
  accel: Accel;
  exitCode?: number;
  wallMs: number;
  console: string[];
  booted: boolean;
  done: boolean;
  failure?: string;
  disk?: { name: string; bytes: number; readonly: boolean };
  mount?: string;
  checks: Record<string, string>;
  wrote: Record<string, string>;
  refused: Record<string, string>;
  bench: BenchLine[];
}

/** Only hardware KVM: on a PVM host (kvm_pvm) a stock kernel crawls and then dies in the emulator. */
export function hardwareKvm(): boolean {
  return existsSync('/dev/kvm') && (existsSync('/sys/module/kvm_intel') || existsSync('/sys/module/kvm_amd'));
}

/** Tokens the kernel command line carries unquoted: no spaces, no quotes. */
const TOKEN = /^[\w./:=,+-]+$/;
function cmdline(args: BootOptions['args']): string[] {
  const out: string[] = [];
  for (const [k, v] of Object.entries(args))
    for (const one of v === undefined ? [] : Array.isArray(v) ? v : [v]) {
      if (!TOKEN.test(one))
        throw new Error(`kernel argument ${k}=${one} must be one token of letters, digits and ./:=,+-_`);
      out.push(`${k}=${one}`);
    }
  return out;
}

/** One line of randio output: mode=… direct=0|1 bytes=… ops=… ns=… */
export function parseRandio(line: string): BenchLine {
  const f = Object.fromEntries(
    line
      .trim()
      .split(' ')
      .map((kv) => kv.split('=') as [string, string]),
  );
  return { mode: f.mode!, direct: f.direct === '1', bytes: Number(f.bytes), ops: Number(f.ops), ns: Number(f.ns) };
}

export function parseConsole(lines: string[], accel: Accel, exitCode: number | undefined, wallMs: number): GuestRun {
  const run: GuestRun = {
    accel,
    exitCode,
    wallMs,
    console: lines,
    booted: false,
    done: false,
    checks: {},
    wrote: {},
    refused: {},
    bench: [],
  };
  for (const line of lines) {
    const m = /^CSI-([A-Z-]+) ?(.*)$/.exec(line);
    if (!m) continue;
    const [, kind, rest = ''] = m;
    const [first = '', ...others] = rest.split(' ');
    if (kind === 'BOOT') run.booted = true;
    else if (kind === 'DONE') run.done = true;
    else if (kind === 'FAIL') run.failure = rest;
    else if (kind === 'MOUNT') run.mount = rest;
    else if (kind === 'CHECK') run.checks[first] = others.join(' ');
    else if (kind === 'WROTE') run.wrote[first] = others.join(' ');
    else if (kind === 'WRITE-REFUSED') run.refused[first] = others.join(' ');
    else if (kind === 'DISK') {
      const f = Object.fromEntries(others.map((kv) => kv.split('=') as [string, string]));
      run.disk = { name: first, bytes: Number(f.bytes), readonly: f.ro === '1' };
    } else if (kind === 'BENCH') run.bench.push(parseRandio(rest));
  }
  return run;
}

async function bootWith(accel: Accel, o: BootOptions): Promise<GuestRun> {
  const image = await ensureGuestImage();
  const qemu = [
    '-accel',
    accel,
    // -cpu host alone aborts on some hosts ("failed to set MSR 0x10a"): drop ARCH_CAPABILITIES
    '-cpu',
    accel === 'kvm' ? 'host,-arch-capabilities' : 'max',
    '-m',
    String(o.memMiB ?? 512),
    '-smp',
    '1',
    '-M',
    'q35',
    '-display',
    'none',
    '-no-reboot',
    '-nodefaults',
    '-serial',
    'stdio',
    '-kernel',
    image.kernel,
    '-initrd',
    image.initrd,
    '-append',
    ['console=ttyS0', 'quiet', 'loglevel=4', 'panic=-1', ...cmdline(o.args)].join(' '),
  ];
  for (const d of o.drives ?? [])
    qemu.push('-drive', `file=${d.path},format=raw,if=virtio,cache=none${d.readonly ? ',readonly=on' : ''}`);
  if (o.share) qemu.push('-virtfs', `local,path=${o.share.path},mount_tag=${o.share.tag},security_model=none`);

  const started = performance.now();
  const child = execa('qemu-system-x86_64', qemu, {
    stdin: 'pipe',
    stderr: 'pipe',
    reject: false,
    timeout: o.timeoutMs ?? 300_000,
    forceKillAfterDelay: 2000,
  });
  const lines: string[] = [];
  const reader = createInterface({ input: child.stdout });
  const consumed = (async () => {
    for await (const raw of reader) {
      const line = raw.replace(/\r/g, '');
      lines.push(line);
      const sync = /^CSI-SYNC (\S+)/.exec(line);
      if (sync) {
        await o.onSync?.(sync[1]!);
        child.stdin.write('go\n');
      }
    }
  })();
  try {
    const r = await child;
    await consumed;
    if (r.timedOut) lines.push(`(host) qemu killed after ${o.timeoutMs ?? 300_000} ms`);
    if (r.stderr)
      lines.push(
        ...String(r.stderr)
          .split('\n')
          .filter(Boolean)
          .map((l) => `(qemu stderr) ${l}`),
      );
    return parseConsole(lines, accel, r.exitCode, performance.now() - started);
  } finally {
    child.kill('SIGKILL'); // an exception above must not leave a VM running
  }
}

/** Boot the guest: hardware KVM when the host has it (TCG if that guest never boots), else TCG. */
export async function bootGuest(o: BootOptions): Promise<GuestRun> {
  const accels: Accel[] = o.accel && o.accel !== 'auto' ? [o.accel] : hardwareKvm() ? ['kvm', 'tcg'] : ['tcg'];
  let run: GuestRun | undefined;
  for (const accel of accels) {
    run = await bootWith(accel, o);
    if (run.booted) return run; // once /init ran, its writes happened: never boot again
  }
  return run!;
}

/** What a guest run should do on the volume: files to check, files to write (relative paths → one-token texts). */
export interface GuestWork {
  checks?: Record<string, string>;
  writes?: Record<string, string>;
  bench?: { mib: number; ops: number };
  onSync?: (tag: string) => Promise<void>;
  timeoutMs?: number;
}

const pairs = (m: Record<string, string> | undefined) => Object.entries(m ?? {}).map(([p, t]) => `${p}:${t}`);

/**
 * Play the Kata runtime for the volume published at targetPath under the direct-volume root: read
 * its mountInfo.json (none → an error, as the pod would get an empty directory), record a sandbox
 * id file beside it, and boot a VM that mounts the device with the file's fstype and options.
 */
export async function runKataSandbox(
  root: string,
  targetPath: string,
  work: GuestWork,
  sandboxId = `e2e-sandbox-${process.pid}`,
): Promise<GuestRun & { mountInfo: MountInfo }> {
  const state = await readDirectVolume(root, targetPath);
  if (!state)
    throw new Error(
      `no direct-volume mountInfo.json for ${targetPath} under ${root}: Kata would share the (empty) target directory instead`,
    );
  writeFileSync(`${directVolumeDir(root, targetPath)}/${sandboxId}`, '');
  const info = state.info;
  const options = info.options?.length ? info.options : ['rw'];
  const run = await bootGuest({
    drives: [{ path: info.device, readonly: options.includes('ro') }],
    args: {
      'csi.disk': 'vda',
      'csi.fstype': info.fstype,
      'csi.opts': options.join(','),
      'csi.check': pairs(work.checks),
      'csi.write': pairs(work.writes),
      'csi.bench': work.bench && `${work.bench.mib}:${work.bench.ops}`,
      'csi.sync': work.onSync ? '1' : undefined,
    },
    onSync: work.onSync,
    timeoutMs: work.timeoutMs,
  });
  return { ...run, mountInfo: info };
}
