import { deviceSize, readProblem, waitForDevice, waitForSize } from '../host/block-device.js';
import { CommandError, type Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import type { MapperKind } from '../host/capabilities.js';
import { processAlive, stopProcess } from '../host/processes.js';
import {
  cephClientArgs,
  confFile,
  imageSpecString,
  type ImageSpec,
  type MapRequest,
  type Mapping,
  type RbdMapper,
} from './mapper.js';
import { mapFailure, mappedDevicePath } from './map-output.js';

/** One image a mapper tool lists as mapped on this host. */
export interface MappedImage {
  device: string;
  pool: string;
  namespace: string;
  image: string;
  snap: string;
  /** The userspace daemon serving it (rbd-nbd), when there is one. */
  pid?: number;
}

export interface CliMapperOptions {
  run: Runner;
  /** How the map command runs: `run`, or (rbd-nbd, whose daemon forks off it) in the node pod's mapper host. */
  mapRun?: Runner;
  cephConf?: string;
  /** How long udev may take to create the device node after a map. */
  deviceTimeoutMs?: number;
}

/**
 * A mapper driven by one Ceph tool that maps, lists and unmaps (krbd: `rbd device …`, nbd:
 * `rbd-nbd …`). Both follow image resizes by themselves, so refresh only waits for the new size.
 */
export abstract class CliMapper implements RbdMapper {
  abstract readonly kind: MapperKind;
  /** The executable, and the arguments before a subcommand's own. */
  protected abstract readonly tool: string;
  protected abstract readonly verbPrefix: string[];
  protected abstract parseList(stdout: string): MappedImage[];

  constructor(protected readonly o: CliMapperOptions) {}

  mapArgs(req: Pick<MapRequest, 'spec' | 'keyringFile' | 'readonly'>): string[] {
    return [
      ...this.verbPrefix,
      'map',
      ...(req.readonly ? ['--read-only'] : []),
      ...cephClientArgs(req.spec, req.keyringFile),
      '-c',
      confFile(this.o.cephConf),
      imageSpecString(req.spec),
    ];
  }

  listArgs(): string[] {
    return [...this.verbPrefix, this.kind === 'nbd' ? 'list-mapped' : 'list', '--format', 'json'];
  }

  unmapArgs(device: string): string[] {
    return [...this.verbPrefix, 'unmap', device];
  }

  async list(): Promise<MappedImage[]> {
    return this.parseList((await this.o.run(this.tool, this.listArgs(), { timeoutMs: 15_000 })).stdout);
  }

  private async find(spec: ImageSpec): Promise<MappedImage | undefined> {
    return (await this.list()).find(
      (e) => e.pool === spec.pool && e.image === spec.image && e.namespace === '' && (e.snap === '-' || e.snap === ''),
    );
  }

  async map(req: MapRequest): Promise<Mapping> {
    // a map that outlived a crashed stage is taken over rather than mapped twice
    let found = await this.find(req.spec);
    let device = found?.device;
    if (!device) {
      await req.beforeOpen;
      try {
        const run = this.o.mapRun ?? this.o.run;
        device = mappedDevicePath(
          (await run(this.tool, this.mapArgs(req), { signal: req.signal, timeoutMs: 90_000 })).stdout,
          `${this.tool} map`,
        );
      } catch (e) {
        throw mapFailure(e, this.tool, req.spec);
      }
      found = this.kind === 'nbd' ? await this.find(req.spec) : undefined;
    }
    const mapping = { kind: this.kind, device, ...(found?.pid ? { pid: found.pid } : {}) } as Mapping;
    try {
      await waitForDevice(device, this.o.deviceTimeoutMs ?? 10_000, req.signal);
    } catch (e) {
      await this.unmap(req.spec, req.volumeKey, mapping);
      throw e;
    }
    return mapping;
  }

  async unmap(spec: ImageSpec, _volumeKey: string, mapping?: Mapping): Promise<void> {
    const devices = new Set<string>();
    if (mapping?.device) devices.add(mapping.device);
    const listed = await this.find(spec);
    if (listed) devices.add(listed.device);
    for (const device of devices) {
      try {
        await this.o.run(this.tool, this.unmapArgs(device), { timeoutMs: 60_000 });
      } catch (e) {
        // already gone is what we wanted
        if (
          e instanceof CommandError &&
          /not mapped|No such file or directory|\(2\)|\(22\)|Invalid argument/.test(e.stderr)
        )
          continue;
        throw new NodeError('internal', `cannot unmap ${device} (${imageSpecString(spec)}): ${(e as Error).message}`);
      }
    }
  }

  /** rbd-nbd's daemon dies at once; krbd has none (the kernel client fails a fenced write by itself). */
  async kill(mapping: Mapping): Promise<void> {
    if (mapping.kind === 'nbd' && mapping.pid) await stopProcess(mapping.pid, 0, 'SIGKILL');
  }

  async health(mapping: Mapping): Promise<string | undefined> {
    const listed = (await this.list()).find((e) => e.device === mapping.device);
    if (!listed) return `${mapping.device} is no longer mapped by ${this.tool}`;
    if (listed.pid && !processAlive(listed.pid))
      return `the ${this.tool} daemon (pid ${listed.pid}) serving ${mapping.device} has exited`;
    return readProblem(this.o.run, mapping.device);
  }

  async refresh(mapping: Mapping, minBytes = 0, signal?: AbortSignal): Promise<number> {
    return minBytes ? waitForSize(mapping.device, minBytes, 10_000, signal) : deviceSize(mapping.device);
  }
}
