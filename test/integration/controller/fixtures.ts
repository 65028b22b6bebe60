import { type CsiClient } from '../../helpers/csi-client.js';
import {
  adminCinder,
  createVolumeType,
  deleteVolumeType,
  directCinder,
  type DirectCinder,
  removeByPrefix,
  uniquePrefix,
} from '../../../harness/cinder.js';
import { startTestDriver, type TestDriver, type TestDriverOptions } from '../../../harness/driver.js';

export const GiB = 1024 ** 3;

export const mount = (mode = 'SINGLE_NODE_WRITER', fs_type = 'ext4') => ({
  mount: { fs_type, mount_flags: [] },
  access_mode: { mode },
});
export const block = (mode = 'SINGLE_NODE_WRITER') => ({ block: {}, access_mode: { mode } });

export interface ControllerEnv {
  driver: TestDriver;
  ctl: CsiClient['Controller'];
  /** tenant-a's Cinder, straight through the OpenStack layer: what really happened. */
  direct: DirectCinder;
  /** Every volume and snapshot this file creates is named with it. */
  prefix: string;
  /** A fresh name under the prefix. */
  name(what?: string): string;
  /** CreateVolume with the usual defaults (1 GiB, mount ext4); returns the volume. */
  create(extra?: Record<string, unknown>): Promise<{
    volume_id: string;
    capacity_bytes: number;
    volume_context: Record<string, string>;
    accessible_topology: any[];
    content_source: any;
  }>;
}

/**
 * One controller driver (in process, on a temp socket, deploy/local's tenant-a) per test file,
 * and cleanup of everything the file named with its prefix — which must leave nothing behind.
 * `options` may depend on the prefix (a cluster id named with it, so its volume groups are cleaned too).
 */
export function controllerEnv(
  area: string,
  options: TestDriverOptions | ((prefix: string) => TestDriverOptions) = {},
): ControllerEnv {
  const env = { prefix: uniquePrefix(`ctl-${area}`) } as ControllerEnv;
  const driverOptions = typeof options === 'function' ? options(env.prefix) : options;
  let n = 0;
  env.name = (what = 'v') => `${env.prefix}${what}${++n}`;
  env.create = async (extra = {}) =>
    (
      await env.ctl.CreateVolume({
        name: env.name(),
        capacity_range: { required_bytes: GiB },
        volume_capabilities: [mount()],
        ...extra,
      })
    ).volume;
  beforeAll(async () => {
    env.driver = await startTestDriver({ mode: 'controller', ...driverOptions });
    env.ctl = env.driver.client.Controller;
    env.direct = await directCinder();
  });
  afterAll(async () => {
    try {
      expect(await removeByPrefix(env.direct.cinder, env.prefix)).toEqual([]);
    } finally {
      await env.direct?.close();
      await env.driver?.stop();
    }
  });
  return env;
}

/**
 * A volume type on deploy/local's ceph backend for the tests of one describe block (admin-made,
 * public). Its volumes are deleted before the type itself, after the block.
 */
export function testVolumeType(
  env: ControllerEnv,
  suffix: string,
  extraSpecs: Record<string, string> = {},
): { name: string } {
  const type = { name: `${env.prefix}${suffix}` };
  let admin: DirectCinder;
  let id: string;
  beforeAll(async () => {
    admin = await adminCinder();
    id = await createVolumeType(admin.cinder, type.name, extraSpecs);
  });
  afterAll(async () => {
    try {
      for (const v of await env.direct.cinder.listVolumes({})) {
        if (!v.name?.startsWith(env.prefix) || v.volume_type !== type.name) continue;
        for (const a of await env.direct.cinder.volumeAttachments(v.id)) await env.direct.cinder.deleteAttachment(a.id);
        await env.ctl.DeleteVolume({ volume_id: v.id });
      }
      await deleteVolumeType(admin.cinder, id);
    } finally {
      await admin?.close();
    }
  });
  return type;
}
