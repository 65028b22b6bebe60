/** Names that reach rbd's arguments, as Ceph and Cinder's RBD backend spell them (no imports: config reads these). */

/** A Ceph pool. */
export const POOL_NAME = /^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$/;

/** A Kubernetes node name (DNS-1123 subdomain): this driver's node id, and the name of its fencing object. */
export const NODE_NAME = /^(?=.{1,253}$)[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*$/;

/** A Ceph client id, without `client.`. */
export const CLIENT_ID = /^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$/;

const UUID = '[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}';

/** What Cinder's RBD backend names images and snapshots: `volume-<uuid>`, `snapshot-<uuid>`. */
export const CINDER_RBD_NAME = new RegExp(`^(volume|snapshot)-${UUID}$`);

const CINDER_ID = new RegExp(`^${UUID}$`);

/** Whether `id` is one Cinder's RBD backend names an image or snapshot after. */
export const isCinderId = (id: string): boolean => CINDER_ID.test(id);
