/**
 * Named points inside multi-step operations (the node's stage, the controller's group snapshot) where
 * the crash tests SIGKILL the driver, to prove that a kill at each of them leaves what the next call
 * repairs, or make the step fail, to prove the operation undoes itself. Armed only through
 * STACKUBE_FAILPOINTS ("name=kill", "name=kill-in-<ms>" or "name=fail", comma-separated), which nothing
 * but those tests sets; unarmed, a point costs one Map lookup.
 */
const armed = new Map<string, number | 'fail'>();
for (const item of (process.env.STACKUBE_FAILPOINTS ?? '').split(',').filter(Boolean)) {
  const m = /^([\w:-]+)=(?:kill(?:-in-(\d+))?|(fail))$/.exec(item.trim());
  if (m) armed.set(m[1]!, m[3] ? 'fail' : Number(m[2] ?? 0));
}

/** SIGKILL the plugin with its process group (the mkfs or mount it runs dies with it, as in a container kill). */
function kill(): void {
  try {
    process.kill(-process.pid, 'SIGKILL');
  } catch {
    process.kill(process.pid, 'SIGKILL'); // not a group leader
  }
}

export function failpoint(name: string): void {
  const how = armed.get(name);
  if (how === undefined) return;
  if (how === 'fail') throw new Error(`failpoint ${name}: an injected failure`);
  if (how === 0) kill();
  else setTimeout(kill, how);
}
