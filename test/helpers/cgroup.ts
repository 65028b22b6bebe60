import { existsSync, mkdirSync, readFileSync, rmdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';

/**
 * A memory cgroup of a test's own, below this process's (v2 or v1), with a limit: what runs in it is
 * measured alone, as the node pod's mapper container is, whatever else the machine is doing.
 */
export interface MemoryCgroup {
  dir: string;
  /** The file a process writes its pid to, to join (`echo $$ > procs`, then exec). */
  procs: string;
  remove(): void;
}

export function memoryCgroup(name: string, limitMiB: number): MemoryCgroup {
  const self = readFileSync('/proc/self/cgroup', 'utf8');
  const v1 = /^\d+:(?:[^:]*,)?memory(?:,[^:]*)?:(\S*)$/m.exec(self)?.[1];
  const v2 = /^0::(\S*)$/m.exec(self)?.[1];
  const unified = existsSync('/sys/fs/cgroup/cgroup.controllers');
  const dir = unified ? join('/sys/fs/cgroup', v2 ?? '/', name) : join('/sys/fs/cgroup/memory', v1 ?? '/', name);
  mkdirSync(dir);
  const bytes = String(limitMiB * 1024 * 1024);
  writeFileSync(join(dir, unified ? 'memory.max' : 'memory.limit_in_bytes'), bytes);
  return {
    dir,
    procs: join(dir, 'cgroup.procs'),
    remove: () => {
      for (let i = 0; i < 50; i++) {
        try {
          return rmdirSync(dir);
        } catch {
          // its last process is still exiting
          Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
        }
      }
    },
  };
}
