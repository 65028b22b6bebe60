import {
  decide,
  handlerMatcher,
  podFromVolumeContext,
  POD_INFO_KEYS,
  type PodRef,
} from '../../../src/node/kata/runtime.js';

const POD: PodRef = { namespace: 'team-a', name: 'app-0' };
const kata = { vm: true, handler: 'kata-qemu', runtimeClass: 'kata-qemu' };
const runc = { vm: false, handler: 'runc', runtimeClass: 'runc' };
const defaultRuntime = { vm: false };

describe('handler globs', () => {
  test('kata* matches what kata-deploy installs and nothing else', () => {
    const m = handlerMatcher(['kata*']);
    expect(['kata', 'kata-qemu', 'kata-clh', 'kata-fc'].map(m)).toEqual([true, true, true, true]);
    expect(['runc', 'crun', 'gvisor', 'xkata', ''].map(m)).toEqual([false, false, false, false, false]);
  });
  test('several globs; dots are literal', () => {
    const m = handlerMatcher(['kata-qemu', 'vm.*']);
    expect(['kata-qemu', 'kata-clh', 'vm.fc', 'vmXfc'].map(m)).toEqual([true, false, true, false]);
  });
});

describe('pod info from volume_context (podInfoOnMount)', () => {
  test('name and namespace (and uid) when kubelet sent them', () => {
    expect(
      podFromVolumeContext({
        [POD_INFO_KEYS.name]: 'p',
        [POD_INFO_KEYS.namespace]: 'ns',
        [POD_INFO_KEYS.uid]: 'u-1',
        [POD_INFO_KEYS.ephemeral]: 'false',
      }),
    ).toEqual({ name: 'p', namespace: 'ns', uid: 'u-1' });
  });
  test('nothing when either is missing', () => {
    expect(podFromVolumeContext(undefined)).toBeUndefined();
    expect(podFromVolumeContext({ [POD_INFO_KEYS.name]: 'p' })).toBeUndefined();
    expect(podFromVolumeContext({ fsType: 'ext4' })).toBeUndefined();
  });
});

describe('the decision', () => {
  test('filesystem: always a host mount, nothing looked up', () => {
    expect(decide('filesystem', POD, kata)).toEqual({ mode: 'filesystem', why: 'attachMode is filesystem' });
    expect(decide('filesystem', undefined, undefined)).toMatchObject({ mode: 'filesystem' });
  });

  test('auto: a VM pod gets the device, a runc pod or the default runtime a host mount', () => {
    expect(decide('auto', POD, kata)).toEqual({
      mode: 'passthrough',
      why: 'attachMode is auto and pod team-a/app-0 runs in a VM via RuntimeClass kata-qemu (handler kata-qemu)',
    });
    expect(decide('auto', POD, runc)).toMatchObject({
      mode: 'filesystem',
      why: expect.stringMatching(/on the host via RuntimeClass runc/),
    });
    expect(decide('auto', POD, defaultRuntime)).toMatchObject({
      mode: 'filesystem',
      why: expect.stringMatching(/default runtime \(no runtimeClassName\)/),
    });
    expect(decide('auto', POD, kata)).not.toHaveProperty('warning');
  });

  test('auto without pod info: host mount, with a warning naming podInfoOnMount', () => {
    const d = decide('auto', undefined, undefined);
    expect(d).toMatchObject({ mode: 'filesystem', warning: expect.stringMatching(/podInfoOnMount: true/) });
  });

  test('auto without API access (or forbidden): host mount, with a warning carrying the reason', () => {
    const d = decide('auto', POD, { unknown: 'no Kubernetes API access: neither KUBECONFIG nor …', transient: false });
    expect(d).toMatchObject({
      mode: 'filesystem',
      warning: expect.stringMatching(/pod team-a\/app-0.*no Kubernetes API access/),
    });
  });

  test('auto with a transient API failure: UNAVAILABLE (kubelet retries) rather than the wrong mode for the pod’s life', () => {
    expect(
      decide('auto', POD, { unknown: 'the Kubernetes API … did not answer within 5000 ms', transient: true }),
    ).toEqual({
      error: 'unavailable',
      why: expect.stringMatching(
        /cannot be found out right now \(the Kubernetes API … did not answer within 5000 ms\); retry/,
      ),
    });
  });

  test('passthrough for a pod known not to be a VM: FAILED_PRECONDITION saying why and what to use', () => {
    expect(decide('passthrough', POD, runc)).toEqual({
      error: 'failed-precondition',
      why: expect.stringMatching(
        /pod team-a\/app-0 runs with RuntimeClass runc \(handler runc\), not in a VM.*attachMode auto or filesystem/,
      ),
    });
    expect(decide('passthrough', POD, defaultRuntime)).toMatchObject({
      error: 'failed-precondition',
      why: expect.stringMatching(/default runtime/),
    });
  });

  test('passthrough for a VM pod; and when the pod cannot be checked, as asked but with a warning', () => {
    expect(decide('passthrough', POD, kata)).toEqual({
      mode: 'passthrough',
      why: expect.stringMatching(/runs in a VM via RuntimeClass kata-qemu/),
    });
    expect(decide('passthrough', undefined, undefined)).toMatchObject({
      mode: 'passthrough',
      warning: expect.stringMatching(/cannot be checked \(kubelet sent no pod name/),
    });
    expect(decide('passthrough', POD, { unknown: 'timeout', transient: true })).toMatchObject({
      mode: 'passthrough',
      warning: expect.stringMatching(/\(timeout\)/),
    });
  });
});
