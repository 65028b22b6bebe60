import { createHash } from 'node:crypto';
import { constants } from 'node:fs';
import {
  access,
  chmod,
  copyFile,
  mkdir,
  mkdtemp,
  readdir,
  readFile,
  rename,
  rm,
  stat,
  writeFile,
} from 'node:fs/promises';
import { basename, dirname, join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { execa } from 'execa';
import { PACKAGE_ROOT } from '../../src/package-info.js';

// The guest the e2e tests and the passthrough benchmark boot: a Debian kernel (the linux-image-amd64
// package, unpacked, never installed) and a busybox-static initramfs with the modules the guest
// needs, guest-init.sh as /init and randio (a static C I/O probe) as /bin/randio. Built once and
// cached under /var/tmp/stackube/vm, keyed by everything that goes into it.

/** The guest's sources, from the package root (the benchmark runs compiled, from dist/). */
const HERE = join(PACKAGE_ROOT, 'harness', 'vm');
export const VM_CACHE = process.env.STACKUBE_VM_CACHE ?? join(process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube', 'vm');
/** virtio-blk for the passthrough disk, ext4 on it, virtio-9p for the benchmark's shared-directory path. */
const MODULES = ['virtio_pci', 'virtio_blk', 'crc32c_generic', 'ext4', '9pnet_virtio', '9p'];

export interface GuestImage {
  /** Uncompressed ELF vmlinux, booted through its PVH entry (skips the BIOS and the decompressor). */
  kernel: string;
  initrd: string;
  kernelVersion: string;
}

/** Host tools the build and the boot need, with the Debian package that brings each. */
const HOST_TOOLS: [check: () => Promise<boolean>, pkg: string][] = [
  [() => onPath('qemu-system-x86_64'), 'qemu-system-x86'],
  [() => onPath('qemu-img'), 'qemu-utils'],
  [() => staticBusybox(), 'busybox-static'],
  [() => onPath('cpio'), 'cpio'],
  [() => onPath('xz'), 'xz-utils'],
  [() => onPath('depmod'), 'kmod'],
  [() => onPath('gcc'), 'gcc'],
  [() => exists('/usr/include/stdio.h'), 'libc6-dev'],
  [() => onPath('mkfs.ext4'), 'e2fsprogs'],
];

async function exists(p: string): Promise<boolean> {
  return access(p, constants.F_OK).then(
    () => true,
    () => false,
  );
}
async function onPath(cmd: string): Promise<boolean> {
  return (await execa('sh', ['-c', `command -v ${cmd}`], { reject: false })).exitCode === 0;
}
async function staticBusybox(): Promise<boolean> {
  return (await execa('dpkg-query', ['-W', '-f=${Status}', 'busybox-static'], { reject: false })).stdout.includes(
    'install ok installed',
  );
}

/** The tests need no registry: deploy/local/up installs these packages and downloads the kernel. */
export async function ensureHostTools(): Promise<void> {
  const missing: string[] = [];
  for (const [check, pkg] of HOST_TOOLS) if (!(await check())) missing.push(pkg);
  if (missing.length)
    throw new Error(
      `the VM guest needs the Debian packages ${missing.join(' ')}: run deploy/local/up (it installs them)`,
    );
}

/** The kernel package deploy/local/up downloaded (linux-image-amd64's dependency), unpacked once. */
async function kernelPackage(): Promise<{ root: string; version: string }> {
  const debs = join(VM_CACHE, 'debs');
  const deb = (await readdir(debs).catch(() => [] as string[])).find((f) => /^linux-image-.*\.deb$/.test(f));
  if (!deb)
    throw new Error(
      `no Debian kernel package in ${debs}: run deploy/local/up (it downloads the one the VM tests boot)`,
    );
  const pkg = deb.slice(0, deb.indexOf('_'));
  const root = join(VM_CACHE, 'kpkg', pkg);
  if (!(await exists(join(root, 'boot')))) {
    const tmp = await mkdtemp(join(VM_CACHE, '.kpkg-'));
    await execa('dpkg', ['-x', join(debs, deb), tmp]);
    await mkdir(dirname(root), { recursive: true });
    await rename(tmp, root).catch(async () => rm(tmp, { recursive: true, force: true })); // another build won
  }
  const vmlinuz = (await readdir(join(root, 'boot'))).find((f) => f.startsWith('vmlinuz-'));
  if (!vmlinuz) throw new Error(`${root}/boot holds no vmlinuz`);
  const version = vmlinuz.slice('vmlinuz-'.length);
  if (!(await exists(join(root, 'lib/modules', version, 'modules.dep')))) await execa('depmod', ['-b', root, version]);
  return { root, version };
}

/** The ELF vmlinux inside the bzImage: the xz stream after the setup code, decompressed. */
async function extractVmlinux(vmlinuz: string, out: string): Promise<void> {
  if (await exists(out)) return;
  const image = await readFile(vmlinuz);
  const at = image.indexOf(Buffer.from([0xfd, 0x37, 0x7a, 0x58, 0x5a, 0x00]));
  if (at < 0) throw new Error(`${vmlinuz} holds no xz stream (not a Debian amd64 kernel?)`);
  const tmp = `${out}.${process.pid}.tmp`;
  const xz = execa('xz', ['-dc', '--single-stream'], {
    input: image.subarray(at),
    encoding: 'buffer',
    reject: false,
    maxBuffer: 512 * 1024 * 1024,
  });
  const r = await xz;
  // xz complains about the bytes after the stream; what it decompressed is the whole ELF
  const elf = Buffer.from(r.stdout);
  if (elf.subarray(0, 4).toString('latin1') !== '\x7fELF')
    throw new Error(`could not decompress the vmlinux in ${vmlinuz}: ${Buffer.from(r.stderr).toString()}`);
  await writeFile(tmp, elf);
  await rename(tmp, out);
}

/** Module files for MODULES in load order (dependencies first), as modprobe resolves them. */
async function moduleFiles(kroot: string, version: string): Promise<string[]> {
  const files: string[] = [];
  for (const m of MODULES) {
    const { stdout } = await execa('modprobe', ['-d', kroot, '-S', version, '--show-depends', m]);
    for (const line of stdout.split('\n')) {
      const ko = /^insmod (\S+)/.exec(line.trim())?.[1];
      // crc32c-intel needs SSE4.2, which TCG's CPU model may lack; crc32c_generic stands in
      if (ko && !files.includes(ko) && !ko.includes('crc32c-intel')) files.push(ko);
    }
  }
  return files;
}

async function hashFiles(paths: string[], extra: string): Promise<string> {
  const h = createHash('sha256').update(extra);
  for (const p of paths) h.update(await readFile(p));
  return h.digest('hex').slice(0, 16);
}

/** Build (or reuse) the guest kernel and initramfs. */
export async function ensureGuestImage(): Promise<GuestImage> {
  await ensureHostTools();
  await mkdir(VM_CACHE, { recursive: true });
  const k = await kernelPackage();
  const kernel = join(VM_CACHE, `vmlinux-${k.version}`);
  await extractVmlinux(join(k.root, 'boot', `vmlinuz-${k.version}`), kernel);

  const init = join(HERE, 'guest-init.sh');
  const randioSrc = join(HERE, 'randio.c');
  const key = await hashFiles([init, randioSrc, '/bin/busybox'], `${k.version} ${MODULES.join(',')}`);
  const initrd = join(VM_CACHE, `initramfs-${k.version}-${key}.cpio.gz`);
  if (await exists(initrd)) return { kernel, initrd, kernelVersion: k.version };

  const work = await mkdtemp(join(VM_CACHE, '.initramfs-'));
  try {
    const root = join(work, 'root');
    for (const d of ['bin', 'dev', 'proc', 'sys', 'tmp', 'lib/modules'])
      await mkdir(join(root, d), { recursive: true });
    await copyFile('/bin/busybox', join(root, 'bin/busybox'));
    await copyFile(init, join(root, 'init'));
    await chmod(join(root, 'init'), 0o755);
    await execa('gcc', ['-static', '-O2', '-Wall', '-o', join(root, 'bin/randio'), randioSrc]);
    const mods = await moduleFiles(k.root, k.version);
    for (const ko of mods) await copyFile(ko, join(root, 'lib/modules', basename(ko)));
    await writeFile(join(root, 'lib/modules/load-order'), `${mods.map((m) => basename(m)).join('\n')}\n`);
    const list = (await execa('find', ['.'], { cwd: root })).stdout;
    const cpio = execa('cpio', ['-o', '-H', 'newc', '--quiet'], {
      cwd: root,
      input: list,
      encoding: 'buffer',
      maxBuffer: 256 * 1024 * 1024,
    });
    const gz = join(work, 'initramfs.cpio.gz');
    await writeFile(gz, gzipSync((await cpio).stdout, { level: 1 }));
    await rename(gz, initrd);
  } finally {
    await rm(work, { recursive: true, force: true });
  }
  if (!(await stat(initrd)).size) throw new Error(`built an empty initramfs ${initrd}`);
  // earlier builds of this kernel's initramfs (an older init or probe) are dead weight
  for (const f of await readdir(VM_CACHE))
    if (f.startsWith(`initramfs-${k.version}-`) && f !== basename(initrd)) await rm(join(VM_CACHE, f), { force: true });
  return { kernel, initrd, kernelVersion: k.version };
}
