import { OpenStackError } from '../../openstack/errors.js';
import { type DurationEstimate, pollUntil } from '../../openstack/wait.js';

export interface Deletion<T extends { status: string }> {
  /** Ask Cinder to delete; false when it was already gone. */
  remove: () => Promise<boolean>;
  find: () => Promise<T | undefined>;
  /** The error for a delete Cinder refuses (it answered 400), given the resource and Cinder's words. */
  refused: (resource: T, cinderMessage: string) => Promise<Error>;
  what: string;
  signal: AbortSignal;
  estimate: DurationEstimate;
}

/**
 * Delete a volume or snapshot and wait until Cinder has really removed it (so a failure is seen, not
 * leaked). A repeated call joins the wait of one already `deleting`. Returns what is left when Cinder
 * gave up on the deletion, undefined when it is gone.
 */
export async function deleteUntilGone<T extends { status: string }>(d: Deletion<T>): Promise<T | undefined> {
  try {
    if (!(await d.remove())) return undefined;
  } catch (e) {
    if (!(e instanceof OpenStackError && e.kind === 'bad-request')) throw e;
    const now = await d.find();
    if (!now) return undefined;
    if (now.status !== 'deleting') throw await d.refused(now, e.message);
  }
  return pollUntil(d.find, (x) => !x || x.status !== 'deleting', {
    what: d.what,
    signal: d.signal,
    estimate: d.estimate,
  });
}
