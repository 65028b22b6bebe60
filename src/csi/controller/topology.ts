import { TOPOLOGY_ZONE_KEY } from '../../package-info.js';
import { resourceExhausted } from '../../server/errors.js';
import type { Topology__Output } from '../generated/csi/v1/Topology.js';
import type { TopologyRequirement__Output } from '../generated/csi/v1/TopologyRequirement.js';

const zonesOf = (ts: Topology__Output[] | undefined) =>
  (ts ?? []).map((t) => t.segments?.[TOPOLOGY_ZONE_KEY]).filter((z): z is string => !!z);

/** Does the requirement say anything about zones (so Cinder's zone list must be consulted)? */
export const mentionsZones = (req: TopologyRequirement__Output | null | undefined) =>
  zonesOf(req?.preferred).length + zonesOf(req?.requisite).length > 0;

/**
 * The Cinder availability zone for a new volume: the first preferred zone Cinder has, else the
 * first requisite one; none of the requisite zones existing is RESOURCE_EXHAUSTED (the spec's
 * "unable to provision in accessible_topology"). Without requisite zones Cinder picks its default.
 */
export function chooseZone(
  req: TopologyRequirement__Output | null | undefined,
  cinderZones: string[],
): string | undefined {
  const preferred = zonesOf(req?.preferred);
  const requisite = zonesOf(req?.requisite);
  const pick = [...preferred, ...requisite].find((z) => cinderZones.includes(z));
  if (pick) return pick;
  if (requisite.length)
    throw resourceExhausted(
      `none of the requisite zones (${[...new Set(requisite)].join(', ')}) is a Cinder availability zone; Cinder has: ${cinderZones.join(', ') || 'none'}`,
    );
  return undefined;
}
