import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { directVolumeDir, readDirectVolume } from '../../../src/node/kata/direct-volume.js';
import type { Runner } from '../../../src/node/host/command.js';
import { PassthroughPublisher, publishConflict } from '../../../src/node/kata/passthrough.js';
import { capturedLogger } from '../../../harness/log-capture.js';

describe('one device, one kernel', () => {
  const free = { hostTargets: [], vmTargets: [] };
  test('a free device may go either way', () => {
    expect(publishConflict('filesystem', free, '/t1')).toBeUndefined();
    expect(publishConflict('passthrough', free, '/t1')).toBeUndefined();
  });
  test('mounted on the host (even with no pod using it): not to a VM, saying where and for whom', () => {
    expect(publishConflict('passthrough', { hostMount: '/staging', hostTargets: [], vmTargets: [] }, '/t2')).toBe(
      'its filesystem is mounted on the host at /staging; it cannot also be handed to a VM until the host publishes are gone',
    );
    expect(
      publishConflict('passthrough', { hostMount: '/staging', hostTargets: ['/t1'], vmTargets: [] }, '/t2'),
    ).toMatch(/mounted on the host at \/staging for \/t1/);
    expect(
      publishConflict('filesystem', { hostMount: '/staging', hostTargets: ['/t1'], vmTargets: [] }, '/t2'),
    ).toBeUndefined();
  });
  test('handed to a VM: not mounted on the host, not to a second VM; the same target again is no conflict', () => {
    const inVm = { hostTargets: [], vmTargets: ['/t1'] };
    expect(publishConflict('filesystem', inVm, '/t2')).toMatch(
      /handed to a VM \(published for a hypervisor pod at \/t1\)/,
    );
    expect(publishConflict('passthrough', inVm, '/t2')).toMatch(/two VMs cannot mount one filesystem/);
    expect(publishConflict('passthrough', inVm, '/t1')).toBeUndefined();
  });
});

describe('PassthroughPublisher', () => {
  let dir: string;
  let root: string;
  let target: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'passthrough-'));
    root = join(dir, 'direct-volumes');
    target = join(dir, 'pods/p1/volumes/kubernetes.io~csi/pv1/mount');
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));
  const vol = { device: '/dev/loop9', fsType: 'ext4', readonly: false };

  test('publish: the direct-volume file beside the empty target directory; unpublish removes it; twice is fine', async () => {
    const p = new PassthroughPublisher({ root, log: capturedLogger().log, tools: [] });
    mkdirSync(target, { recursive: true });
    await p.publish(target, target, vol);
    expect(statSync(target).isDirectory()).toBe(true);
    expect((await readDirectVolume(root, target))?.info.device).toBe('/dev/loop9');
    await p.publish(target, target, vol); // idempotent
    expect(await p.unpublish(target, vol.device)).toBe(true);
    expect(await p.unpublish(target, vol.device)).toBe(true);
    expect(existsSync(directVolumeDir(root, target))).toBe(false);
  });

  test("a publish over another device's file is ALREADY_EXISTS; that file is never removed by this device's unpublish", async () => {
    const p = new PassthroughPublisher({ root, log: capturedLogger().log, tools: [] });
    mkdirSync(target, { recursive: true });
    await p.publish(target, target, vol);
    await expect(p.publish(target, target, { ...vol, device: '/dev/loop8' })).rejects.toMatchObject({
      kind: 'already-exists',
      message: expect.stringMatching(/already hands \/dev\/loop9 to a VM/),
    });
    expect(await p.unpublish(target, '/dev/loop8')).toBe(false);
    expect((await readDirectVolume(root, target))?.info.device).toBe('/dev/loop9');
  });

  test('a target directory with content is refused', async () => {
    const p = new PassthroughPublisher({ root, log: capturedLogger().log, tools: [] });
    mkdirSync(target, { recursive: true });
    writeFileSync(join(target, 'x'), '');
    await expect(p.publish(target, target, vol)).rejects.toMatchObject({
      kind: 'already-exists',
      message: expect.stringMatching(/is not empty/),
    });
  });

  test('stats and expand without kata-runtime: the device size; the guest grows its filesystem', async () => {
    const p = new PassthroughPublisher({ root, log: capturedLogger().log, tools: [] });
    mkdirSync(target, { recursive: true });
    await p.publish(target, target, vol);
    expect(await p.stats(target, async () => 1073741824)).toEqual({
      bytes: { total: 1073741824, used: 0, available: 0 },
      source: 'device',
    });
    expect(await p.expand(target, 2147483648)).toBe('guest-grows');
  });

  test.each([
    [
      'kata-ctl (runtime-rs, Kata 4)',
      { kind: 'kata-ctl', path: '/opt/kata/bin/kata-ctl' },
      (t: string) => [
        ['/opt/kata/bin/kata-ctl', 'direct-volume', 'stats', t],
        ['/opt/kata/bin/kata-ctl', 'direct-volume', 'resize', t, '4096'],
      ],
    ],
    [
      'kata-runtime (the Go runtime)',
      { kind: 'kata-runtime', path: '/opt/kata/bin/kata-runtime' },
      (t: string) => [
        ['/opt/kata/bin/kata-runtime', 'direct-volume', 'stats', '--volume-path', t],
        ['/opt/kata/bin/kata-runtime', 'direct-volume', 'resize', '--volume-path', t, '--size', '4096'],
      ],
    ],
  ] as const)(
    'with %s and a sandbox using the volume: stats and resize go through it',
    async (_name, tool, expected) => {
      const calls: string[][] = [];
      const exec: Runner = async (cmd, args) => {
        calls.push([cmd, ...args]);
        return {
          stdout: args[1] === 'stats' ? '{"usage":[{"available":70,"total":100,"used":30,"unit":1}]}' : '',
          stderr: '',
          exitCode: 0,
        };
      };
      const p = new PassthroughPublisher({ root, log: capturedLogger().log, tools: [tool], run: exec });
      mkdirSync(target, { recursive: true });
      await p.publish(target, target, vol);
      // no sandbox yet: nothing to ask
      expect((await p.stats(target, async () => 5)).source).toBe('device');
      expect(calls).toEqual([]);
      writeFileSync(join(directVolumeDir(root, target), 'sandbox-abc'), '');
      expect(await p.stats(target, async () => 5)).toMatchObject({
        bytes: { total: 100, used: 30, available: 70 },
        source: 'guest',
      });
      expect(await p.expand(target, 4096)).toBe('guest-resized');
      expect(calls).toEqual(expected(target));
    },
  );

  test('kata-ctl first; when it cannot reach the sandbox (a Go-runtime one), kata-runtime', async () => {
    const calls: string[] = [];
    const exec: Runner = async (cmd, args) => {
      calls.push(`${cmd} ${args[1]}`);
      if (cmd === 'kata-ctl') throw new Error('kata-ctl direct-volume failed (exit 1): no shim-monitor socket');
      return {
        stdout: args[1] === 'stats' ? '{"usage":[{"available":1,"total":2,"used":1,"unit":"BYTES"}]}' : '',
        stderr: '',
        exitCode: 0,
      };
    };
    const logs = capturedLogger();
    const p = new PassthroughPublisher({
      root,
      log: logs.log,
      tools: [
        { kind: 'kata-ctl', path: 'kata-ctl' },
        { kind: 'kata-runtime', path: 'kata-runtime' },
      ],
      run: exec,
    });
    mkdirSync(target, { recursive: true });
    await p.publish(target, target, vol);
    writeFileSync(join(directVolumeDir(root, target), 'sandbox-go'), '');
    expect(await p.stats(target, async () => 5)).toMatchObject({ source: 'guest', bytes: { total: 2 } });
    expect(await p.expand(target, 8192)).toBe('guest-resized');
    expect(calls).toEqual(['kata-ctl stats', 'kata-runtime stats', 'kata-ctl resize', 'kata-runtime resize']);
    expect(logs.text()).toMatch(/no shim-monitor socket/);
  });

  test('every tool failing on stats: warnings, and the device size; on resize: the error', async () => {
    const logs = capturedLogger();
    const exec: Runner = async () => {
      throw new Error('kata-runtime direct-volume stats failed (exit 1): no sandbox found');
    };
    const p = new PassthroughPublisher({
      root,
      log: logs.log,
      tools: [{ kind: 'kata-runtime', path: 'kata-runtime' }],
      run: exec,
    });
    mkdirSync(target, { recursive: true });
    await p.publish(target, target, vol);
    writeFileSync(join(directVolumeDir(root, target), 'sandbox-abc'), '');
    expect(await p.stats(target, async () => 7)).toMatchObject({ source: 'device', bytes: { total: 7 } });
    expect(logs.text()).toMatch(/no sandbox found/);
    await expect(p.expand(target, 4096)).rejects.toThrow(/no sandbox found/);
  });
});
