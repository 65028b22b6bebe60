import type { Runner } from '../host/command.js';
import { NodeError } from '../errors.js';
import { chooseMapper, detectHost, mapperUnusable, type MapperKind } from '../host/capabilities.js';
import { FuseMapper } from './fuse.js';
import { KrbdMapper } from './krbd.js';
import type { RbdMapper } from './mapper.js';
import { NbdMapper } from './nbd.js';
import { LoopDevices, readLoopTable } from '../host/loop.js';
import { localDaemons, type MapperHostClient, mapperHostRunner } from './mapper-host.js';

export interface MapperSet {
  /** The mapper new stages use. */
  active: RbdMapper;
  /** Why `active` was chosen (for the start-up log and doctor). */
  reason: string;
  /** Every kind, so a volume staged under another --rbd-mapper can still be checked and undone. */
  byKind: Record<MapperKind, RbdMapper>;
  /** Loop devices (rbd-fuse's, and read-only block publishes'), on the side whose mounts they hold. */
  loops: LoopDevices;
}

export interface MapperDeps {
  run: Runner;
  stateDir: string;
  cephConf?: string;
  /** The node pod's mapper host (--mapper-host): daemons start there; absent, as this plugin's own. */
  mapperHost?: MapperHostClient;
}

/** The configured mapper, or for `auto` the best this host supports (krbd, then nbd, then fuse). */
export async function createMappers(choice: MapperKind | 'auto', deps: MapperDeps): Promise<MapperSet> {
  const host = deps.mapperHost;
  const loops = new LoopDevices(
    host ? { run: mapperHostRunner(host), table: () => host.loops() } : { run: deps.run, table: readLoopTable },
  );
  const byKind: Record<MapperKind, RbdMapper> = {
    krbd: new KrbdMapper({ run: deps.run, cephConf: deps.cephConf }),
    nbd: new NbdMapper({ run: deps.run, cephConf: deps.cephConf, ...(host ? { mapRun: mapperHostRunner(host) } : {}) }),
    fuse: new FuseMapper({
      run: deps.run,
      stateDir: deps.stateDir,
      cephConf: deps.cephConf,
      daemons: host ?? localDaemons,
      loops,
    }),
  };
  const found = await detectHost();
  if (choice !== 'auto') {
    const why = mapperUnusable(choice, found);
    return { active: byKind[choice], reason: why ? `configured, but: ${why}` : 'configured', byKind, loops };
  }
  const { kind, reasons } = chooseMapper(found);
  const others = Object.entries(reasons)
    .filter(([, r]) => r)
    .map(([k, r]) => `${k}: ${r}`)
    .join('; ');
  if (!kind)
    throw new NodeError(
      'failed-precondition',
      `no RBD mapper can run on this host (${others}); run \`stackube-csi doctor\``,
    );
  return { active: byKind[kind], reason: `auto${others ? ` (${others})` : ''}`, byKind, loops };
}
