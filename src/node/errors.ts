/**
 * What went wrong on the node, in terms the CSI layer maps to a status code without knowing how
 * the node works. Messages say what to do and never hold a Ceph key.
 */
export type NodeErrorKind =
  | 'invalid-argument'
  | 'not-found'
  | 'already-exists'
  | 'failed-precondition'
  | 'out-of-range'
  | 'permission-denied'
  | 'unavailable'
  | 'aborted'
  | 'internal';

export class NodeError extends Error {
  constructor(
    readonly kind: NodeErrorKind,
    message: string,
  ) {
    super(message);
    this.name = 'NodeError';
  }
}
