import { existsSync } from 'node:fs';
import { rm, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';

/**
 * Named points inside multi-step operations (the node's stage, the controller's group snapshot) where
 * the crash tests SIGKILL the driver, to prove that a kill at each of them leaves what the next call
 * repairs, make the step fail, to prove the operation undoes itself, or hold it for a while, to change
 * the world under it (a race made certain). Armed only through STACKUBE_FAILPOINTS ("name=kill",
 * "name=kill-in-<ms>", "name=fail" or "name=pause", comma-separated), which nothing but those tests
 * sets; unarmed, a point costs one Map lookup. A paused point writes `<name>.paused` into
 * STACKUBE_FAILPOINT_DIR and goes on once the test has written `<name>.continue` there (`:` in the
 * name as `_`); only a point its caller awaits can pause.
 */
type Action = { kill: number } | { fail: true } | { pause: true };
const armed = new Map<string, Action>();
for (const item of (process.env.STACKUBE_FAILPOINTS ?? '').split(',').filter(Boolean)) {
  const m = /^([\w:-]+)=(?:kill(?:-in-(\d+))?|(fail)|(pause))$/.exec(item.trim());
  if (m) armed.set(m[1]!, m[3] ? { fail: true } : m[4] ? { pause: true } : { kill: Number(m[2] ?? 0) });
}

/** SIGKILL the plugin with its process group (the mkfs or mount it runs dies with it, as in a container kill). */
function kill(): void {
  try {
    process.kill(-process.pid, 'SIGKILL');
  } catch {
    process.kill(process.pid, 'SIGKILL'); // not a group leader
  }
}

export function failpoint(name: string): void | Promise<void> {
  const how = armed.get(name);
  if (how === undefined) return;
  if ('fail' in how) throw new Error(`failpoint ${name}: an injected failure`);
  if ('pause' in how) return pause(name);
  if (how.kill === 0) kill();
  else setTimeout(kill, how.kill);
}

/** Wait at a point until the test says go on (see above). */
async function pause(name: string): Promise<void> {
  const base = join(process.env.STACKUBE_FAILPOINT_DIR ?? tmpdir(), name.replaceAll(':', '_'));
  await writeFile(`${base}.paused`, '');
  while (!existsSync(`${base}.continue`)) await sleep(20);
  await rm(`${base}.paused`, { force: true });
  await rm(`${base}.continue`, { force: true });
}
