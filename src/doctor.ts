import { stat } from 'node:fs/promises';
import { type Config } from './config.js';
import { cephSessionProblem } from './node/ceph/session.js';
import { chooseMapper, detectHost, HOST_COMMANDS, PACKAGE_OF, type HostCommand } from './node/host/capabilities.js';
import { describeDirectVolumeTools } from './node/kata/direct-volume.js';
import { hostDirectVolumeTools } from './node/kata/passthrough.js';
import { CinderSession } from './openstack/cinder-session.js';
import { describeCredential } from './openstack/credentials.js';
import { HttpClient } from './openstack/http.js';
import { Keystone } from './openstack/keystone.js';

type Verdict = 'ok' | 'warn' | 'fail';
interface Line {
  role: 'node' | 'controller';
  verdict: Verdict;
  what: string;
  detail: string;
}

/** Which commands each role needs, and which only some setups need. */
const REQUIRED_NODE: HostCommand[] = ['losetup', 'mkfs.ext4', 'blkid', 'mount', 'umount', 'resize2fs'];

async function nodeLines(config: Pick<Config, 'rbdMapper' | 'kubeletRoot'>): Promise<Line[]> {
  const h = await detectHost();
  const lines: Line[] = [];
  const add = (verdict: Verdict, what: string, detail: string) => lines.push({ role: 'node', verdict, what, detail });
  for (const c of HOST_COMMANDS) {
    const path = h.commands[c];
    const needed = REQUIRED_NODE.includes(c);
    if (path) add('ok', c, path);
    else
      add(needed ? 'fail' : 'warn', c, `absent: install ${PACKAGE_OF[c]}${needed ? '' : ' if you use what needs it'}`);
  }
  add(
    h.devFuse ? 'ok' : 'warn',
    '/dev/fuse',
    h.devFuse ? 'present' : 'absent: the fuse mapper needs it (modprobe fuse; in a container, mount /dev)',
  );
  add(
    h.freeLoopDevice ? 'ok' : h.loopControl ? 'warn' : 'warn',
    'loop devices',
    h.freeLoopDevice
      ? `free: ${h.freeLoopDevice}`
      : h.loopControl
        ? 'none free now; /dev/loop-control will create more'
        : 'none: the fuse mapper needs loop (modprobe loop)',
  );
  add(
    h.kernelRbd ? 'ok' : 'warn',
    'kernel rbd',
    h.kernelRbd
      ? 'available: krbd mapper usable'
      : 'not available: krbd mapper unusable (modprobe rbd, or use nbd/fuse)',
  );
  add(
    h.kernelNbd ? 'ok' : 'warn',
    'kernel nbd',
    h.kernelNbd
      ? 'available: nbd mapper usable'
      : 'not available: nbd mapper unusable (modprobe nbd, or use krbd/fuse)',
  );
  const choice = chooseMapper(h);
  if (config.rbdMapper === 'auto')
    add(
      choice.kind ? 'ok' : 'fail',
      'rbd mapper (auto)',
      choice.kind
        ? `would use ${choice.kind}`
        : `none usable: ${Object.entries(choice.reasons)
            .map(([k, v]) => `${k}: ${v}`)
            .join('; ')}`,
    );
  else {
    const why = choice.reasons[config.rbdMapper];
    add(why ? 'fail' : 'ok', `rbd mapper (${config.rbdMapper})`, why ?? 'usable');
  }
  const session = await cephSessionProblem();
  add(
    session ? 'fail' : 'ok',
    'ceph session',
    session ?? "python3 with rados and rbd, for the node plugin's small Ceph calls",
  );
  const tools = await hostDirectVolumeTools();
  add(tools.length ? 'ok' : 'warn', 'kata direct-volume', describeDirectVolumeTools(tools));
  const root = await stat(config.kubeletRoot).catch(() => undefined);
  add(
    root?.isDirectory() ? 'ok' : 'fail',
    'kubelet root',
    root?.isDirectory() ? config.kubeletRoot : `${config.kubeletRoot} is not a directory: set --kubelet-root`,
  );
  lines.push(await kubernetesApiLine());
  return lines;
}

/** attachMode auto reads the pod's RuntimeClass: say whether (and where) the node can ask. */
async function kubernetesApiLine(): Promise<Line> {
  const { loadKubeConnection } = await import('./kube/config.js');
  const line = (verdict: Verdict, detail: string): Line => ({ role: 'node', verdict, what: 'kubernetes api', detail });
  try {
    const k = await loadKubeConnection();
    if ('connection' in k) return line('ok', `${k.connection.server} (${k.connection.source})`);
    return line(
      'warn',
      `${k.unavailable}: attachMode auto cannot see RuntimeClasses and mounts on the host (Kata pods then need attachMode passthrough)`,
    );
  } catch (e) {
    return line('fail', `${(e as Error).message}: fix KUBECONFIG or the service account mount`);
  }
}

/** Changed block tracking: whether the controller's Ceph identity reads each configured pool. */
async function cephLines(config: Config): Promise<Line[]> {
  if (!config.controllerCephConf) return [];
  const { RbdReader } = await import('./ceph/rbd.js');
  const rbd = new RbdReader({
    conf: config.controllerCephConf,
    id: config.controllerCephId,
    keyring: config.controllerCephKeyring,
    pools: config.rbdPools,
  });
  return (await rbd.pools(AbortSignal.timeout(30_000))).map(({ pool, images, problem }) => ({
    role: 'controller',
    verdict: problem ? 'fail' : 'ok',
    what: `ceph pool ${pool}`.slice(0, 40),
    detail: problem
      ? `${problem} — check --controller-ceph-conf and the caps of client.${config.controllerCephId} (docs/backup.md)`
      : `${images} images, read as client.${config.controllerCephId} (changed block tracking)`,
  }));
}

async function controllerLines(config: Config): Promise<Line[]> {
  const add = (verdict: Verdict, what: string, detail: string): Line => ({ role: 'controller', verdict, what, detail });
  if (!config.credential)
    return [
      add(
        'warn',
        'credential',
        'none configured: only per-request tenant secrets can be used (give --config for a default tenant)',
      ),
    ];
  const http = new HttpClient({
    caFile: config.credential.caFile,
    tlsInsecure: config.credential.tlsInsecure,
    attempts: 2,
    timeoutMs: 10_000,
  });
  const keystone = new Keystone(http);
  const cinder = new CinderSession(keystone, http, config.credential);
  const lines: Line[] = [];
  try {
    const s = await keystone.session(config.credential);
    lines.push(
      add('ok', 'keystone', `token issued for ${describeCredential(config.credential)} (project ${s.projectId})`),
    );
    const ep = await cinder.endpoint();
    lines.push(add('ok', 'cinder endpoint', ep));
    lines.push(add('ok', 'cinder microversion', await cinder.microversion()));
    await cinder.call('GET', '/volumes?limit=1');
    lines.push(add('ok', 'cinder volumes', 'the credential may list volumes in its project'));
  } catch (e) {
    lines.push(
      add(
        'fail',
        lines.length === 0 ? 'keystone' : 'cinder',
        `${(e as Error).message} — check auth-url, the credential and the catalog`,
      ),
    );
  } finally {
    await http.close();
  }
  return lines;
}

/** Print one line per check, each saying what to fix; exit 1 when anything failed. */
export async function runDoctor(config: Config): Promise<number> {
  const lines = [
    ...(config.mode !== 'controller' ? await nodeLines(config) : []),
    ...(config.mode !== 'node' ? [...(await controllerLines(config)), ...(await cephLines(config))] : []),
  ];
  const mark = { ok: 'ok  ', warn: 'warn', fail: 'FAIL' };
  for (const l of lines)
    process.stdout.write(`${mark[l.verdict]}  ${l.role.padEnd(10)} ${l.what.padEnd(22)} ${l.detail}\n`);
  const failed = lines.filter((l) => l.verdict === 'fail').length;
  process.stdout.write(`\n${failed ? `${failed} check(s) failed` : 'all required checks passed'}\n`);
  return failed ? 1 : 0;
}
