import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { status } from '@grpc/grpc-js';
import { expectCode } from '../../helpers/csi-client.js';
import { cap } from '../../../harness/node-leaks.js';
import { nodeSuite } from './suite.js';

/**
 * SELinux mounts (CSIDriver seLinuxMount: true) on a real filesystem: kubelet's quoted context flag
 * reaches mount(8) whole (its categories hold a comma), one context per staged volume, and a mount
 * option the kernel refuses is the CO's to fix. This kernel has SELinux built in but not enabled: it
 * takes context= and labels nothing, which is what a node without SELinux does.
 */
const suite = nodeSuite('node-selinux');
const { dirs, co } = suite;
const A = 'context="system_u:object_r:container_file_t:s0:c0,c1"';
const B = 'context="system_u:object_r:container_file_t:s0:c2,c3"';
const recordOf = (volumeId: string) =>
  JSON.parse(readFileSync(join(dirs.stateDir, 'volumes', `${volumeId}.json`), 'utf8')) as { mountOptions: string[] };

describe.each(['ext4', 'xfs'])('%s', (fsType) => {
  test('the context flag reaches mount(8) as one option; a pod with another context cannot share the staged mount', async () => {
    const v = await suite.volumes.createAttached('node-test');
    const staging = co.staging(`pv-se-${fsType}`);
    const [t1, t2, t3] = ['pod-1', 'pod-2', 'pod-3'].map((p) => co.target(p, `pv-se-${fsType}`)) as [
      string,
      string,
      string,
    ];
    const withA = cap.mount(fsType, 'SINGLE_NODE_MULTI_WRITER', [A]);
    await suite.ops.stage(v, staging, withA);
    expect(recordOf(v.volumeId).mountOptions).toContain(A);
    expect(readFileSync('/proc/self/mountinfo', 'utf8')).toMatch(
      new RegExp(` ${staging.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} .* - ${fsType} `),
    );

    // the same context (kubelet passes it to NodePublishVolume too) or none: the staged mount is shared
    await suite.ops.publish(v, staging, t1, withA);
    await suite.ops.publish(v, staging, t2, cap.mount(fsType, 'SINGLE_NODE_MULTI_WRITER'));
    // another context: refused, nothing made at the target
    const err = await expectCode(
      suite.ops.publish(v, staging, t3, cap.mount(fsType, 'SINGLE_NODE_MULTI_WRITER', [B])),
      status.FAILED_PRECONDITION,
    );
    expect(err.details).toContain('system_u:object_r:container_file_t:s0:c0,c1');
    expect(err.details).toContain('system_u:object_r:container_file_t:s0:c2,c3');
    // a second stage with another context is another stage: ALREADY_EXISTS
    await expectCode(
      suite.ops.stage(v, staging, cap.mount(fsType, 'SINGLE_NODE_MULTI_WRITER', [B])),
      status.ALREADY_EXISTS,
    );
    for (const t of [t1, t2]) await suite.ops.unpublish(v, t);
    await suite.ops.unstage(v, staging);
  });
});

test('a mount option the kernel refuses → INVALID_ARGUMENT naming the options; nothing is left', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-se-bad');
  const err = await expectCode(
    suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', [A, 'nosuchoption'])),
    status.INVALID_ARGUMENT,
  );
  expect(err.details).toContain(`${A},nosuchoption`);
  expect(err.details).toMatch(/kernel refused/);
});

test('malformed context flags → INVALID_ARGUMENT before anything is mapped', async () => {
  const v = await suite.volumes.createAttached('node-test');
  const staging = co.staging('pv-se-malformed');
  for (const flags of [
    ['context="not a label"'],
    ['context=system_u:object_r:x:s0:c0,c1'],
    ['noatime,context="system_u:object_r:x:s0"'],
    [A, B],
  ])
    await expectCode(
      suite.ops.stage(v, staging, cap.mount('ext4', 'SINGLE_NODE_WRITER', flags)),
      status.INVALID_ARGUMENT,
    );
});
