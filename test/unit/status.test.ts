import { status } from '@grpc/grpc-js';
import { toCsiError } from '../../src/csi/status.js';
import { NodeError } from '../../src/node/errors.js';
import { OpenStackError } from '../../src/openstack/errors.js';
import { type CsiError, invalidArgument } from '../../src/server/errors.js';

const live = { method: 'CreateVolume', signal: new AbortController().signal };

test.each([
  ['bad-request', status.INVALID_ARGUMENT],
  ['unauthenticated', status.UNAUTHENTICATED],
  ['forbidden', status.PERMISSION_DENIED],
  ['not-found', status.NOT_FOUND],
  ['conflict', status.FAILED_PRECONDITION],
  ['over-quota', status.RESOURCE_EXHAUSTED],
  ['too-large', status.RESOURCE_EXHAUSTED],
  ['unavailable', status.UNAVAILABLE],
  ['timeout', status.DEADLINE_EXCEEDED],
  ['unexpected', status.INTERNAL],
] as const)('%s → %s, keeping the service’s words', (kind, code) => {
  const e = toCsiError(new OpenStackError(kind, 'Cinder: the words'), live) as CsiError;
  expect(e.code).toBe(code);
  expect(e.message).toContain('Cinder: the words');
});

test.each([
  ['invalid-argument', status.INVALID_ARGUMENT],
  ['not-found', status.NOT_FOUND],
  ['already-exists', status.ALREADY_EXISTS],
  ['failed-precondition', status.FAILED_PRECONDITION],
  ['out-of-range', status.OUT_OF_RANGE],
  ['permission-denied', status.PERMISSION_DENIED],
  ['unavailable', status.UNAVAILABLE],
  ['aborted', status.ABORTED],
  ['internal', status.INTERNAL],
] as const)('node %s → %s, by the same table', (kind, code) => {
  expect((toCsiError(new NodeError(kind, 'the node says'), live) as CsiError).code).toBe(code);
});

test('Keystone refusing a credential names where it came from', () => {
  const e = toCsiError(
    new OpenStackError('unauthenticated', 'Keystone rejected user u'),
    live,
    "the credential in the request's secrets",
  ) as CsiError;
  expect(e.message).toBe("the credential in the request's secrets: Keystone rejected user u");
});

test('CSI errors pass through; anything else after the deadline is DEADLINE_EXCEEDED', () => {
  const given = invalidArgument('x');
  expect(toCsiError(given, live)).toBe(given);
  const expired = { method: 'NodeStageVolume', signal: AbortSignal.abort(new Error('deadline exceeded')) };
  const cut = toCsiError(new NodeError('internal', 'mkfs was killed'), expired) as CsiError;
  expect([cut.code, cut.message]).toEqual([
    status.DEADLINE_EXCEEDED,
    'NodeStageVolume was cut short (deadline exceeded); it is safe to call again: the retry finishes or undoes what was left',
  ]);
  expect((toCsiError(new Error('deadline exceeded'), expired) as CsiError).code).toBe(status.DEADLINE_EXCEEDED);
  const other = new Error('bug');
  expect(toCsiError(other, live)).toBe(other);
});
