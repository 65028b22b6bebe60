import type { RawOptions } from '../../../src/config.js';
import { TestVolumes } from '../../../harness/cinder-volumes.js';
import { nodeDirs, nodeOps, startNodeDriver, type NodeDirs, type NodeDriver } from '../../../harness/node-driver.js';
import { CoPaths, forceCleanup, nodeLeaks } from '../../../harness/node-leaks.js';

export interface NodeSuite {
  dirs: NodeDirs;
  co: CoPaths;
  node: NodeDriver;
  ops: ReturnType<typeof nodeOps>;
  volumes: TestVolumes;
  /** Stop the plugin and start a fresh one on the same state dir (a restart). */
  restart(): Promise<void>;
}

/**
 * One node plugin per test file, on its own dirs, with the checks every node test ends with:
 * after each test nothing is left (mounts, loops, rbd-fuse, records, files); after the file the
 * plugin stops, its Cinder volumes are deleted, and anything a failure left is taken down.
 */
export function nodeSuite(
  prefix: string,
  options: RawOptions = {},
  kubeEnv: NodeJS.ProcessEnv = {},
  layout: { symlinkedRoot?: boolean } = {},
): NodeSuite {
  const dirs = nodeDirs(prefix, layout);
  const s = { dirs, co: new CoPaths(dirs.kubeletRoot) } as NodeSuite;
  s.restart = async () => {
    await s.node?.stop();
    s.node = await startNodeDriver(dirs, options, { kubeEnv });
    s.ops = nodeOps(s.node.csi);
  };
  beforeAll(async () => {
    s.volumes = TestVolumes.open(prefix);
    await s.restart();
  });
  afterAll(async () => {
    await s.node?.stop();
    forceCleanup(dirs.base);
    await s.volumes?.cleanup();
  });
  afterEach(() => {
    expect([...s.co.release(), ...nodeLeaks(dirs)]).toEqual([]);
  });
  return s;
}
