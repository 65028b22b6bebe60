import { status } from '@grpc/grpc-js';
import { toCsiError } from '../../../src/csi/controller/status.js';
import { OpenStackError } from '../../../src/openstack/errors.js';
import { CsiError, invalidArgument } from '../../../src/server/errors.js';

const live = new AbortController().signal;

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

test('Keystone refusing a credential names where it came from', () => {
  const e = toCsiError(new OpenStackError('unauthenticated', 'Keystone rejected user u'), live, "the credential in the request's secrets") as CsiError;
  expect(e.message).toBe("the credential in the request's secrets: Keystone rejected user u");
});

test('CSI errors pass through; anything else after the deadline is DEADLINE_EXCEEDED', () => {
  const given = invalidArgument('x');
  expect(toCsiError(given, live)).toBe(given);
  const expired = AbortSignal.abort(new Error('deadline exceeded'));
  expect((toCsiError(new Error('deadline exceeded'), expired) as CsiError).code).toBe(status.DEADLINE_EXCEEDED);
  const other = new Error('bug');
  expect(toCsiError(other, live)).toBe(other);
});
