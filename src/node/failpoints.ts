/**
 * Named points inside the node's multi-step operations where the crash tests SIGKILL the plugin, to
 * prove that a kill at each of them leaves what the next call repairs. Armed only through
 * STACKUBE_FAILPOINTS ("name=kill" or "name=kill-in-<ms>", comma-separated), which nothing but those tests
 * sets; unarmed, a point costs one Map lookup.
 */
const armed = new Map<string, number>();
for (const item of (process.env.STACKUBE_FAILPOINTS ?? '').split(',').filter(Boolean)) {
  const m = /^([\w:-]+)=kill(?:-in-(\d+))?$/.exec(item.trim());
  if (m) armed.set(m[1]!, Number(m[2] ?? 0));
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
  const inMs = armed.get(name);
  if (inMs === undefined) return;
  if (inMs === 0) kill();
  else setTimeout(kill, inMs);
}
