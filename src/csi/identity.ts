import { DRIVER_NAME, VERSION } from '../package-info.js';
import type { IdentityHandlers } from './generated/csi/v1/Identity.js';
import type { ServiceSpecs } from './service-specs.js';
import type { GetPluginCapabilitiesResponse } from './generated/csi/v1/GetPluginCapabilitiesResponse.js';
import type { GetPluginInfoResponse } from './generated/csi/v1/GetPluginInfoResponse.js';
import type { ProbeResponse } from './generated/csi/v1/ProbeResponse.js';
import type { ReadinessCheck } from './readiness.js';

export interface IdentityOptions {
  mode: 'controller' | 'node' | 'all';
  /** Whether this plugin serves SnapshotMetadata (the controller has a Ceph identity to read block maps with). */
  snapshotMetadata: boolean;
  readiness: ReadinessCheck;
}

export function identityService(o: IdentityOptions): ServiceSpecs<IdentityHandlers> {
  const controller = o.mode !== 'node';
  return {
    GetPluginInfo: {
      handler: async (): Promise<GetPluginInfoResponse> => ({
        name: DRIVER_NAME,
        vendor_version: VERSION,
        manifest: { backend: 'openstack-cinder+ceph-rbd', mode: o.mode },
      }),
    },
    GetPluginCapabilities: {
      handler: async (): Promise<GetPluginCapabilitiesResponse> => ({
        capabilities: [
          ...(controller
            ? [
                { service: { type: 'CONTROLLER_SERVICE' as const } },
                { service: { type: 'GROUP_CONTROLLER_SERVICE' as const } },
              ]
            : []),
          ...(o.snapshotMetadata ? [{ service: { type: 'SNAPSHOT_METADATA_SERVICE' as const } }] : []),
          { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
          { volume_expansion: { type: 'ONLINE' } },
        ],
      }),
    },
    Probe: {
      handler: async (_req, ctx): Promise<ProbeResponse> => {
        const r = await o.readiness(ctx.signal);
        if (!r.ready) ctx.log.info({ reason: r.reason }, 'probe: not ready');
        return { ready: { value: r.ready } };
      },
    },
  };
}
