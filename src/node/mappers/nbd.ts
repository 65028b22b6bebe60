import { z } from 'zod';
import { CliMapper, type MappedImage } from './cli-mapper.js';

/** `rbd-nbd list-mapped --format json`; `id` is the pid of the rbd-nbd daemon serving the device. */
const nbdListSchema = z.array(
  z.object({
    id: z.coerce.number().int(),
    pool: z.string(),
    namespace: z.string().default(''),
    image: z.string(),
    snap: z.string().default('-'),
    device: z.string(),
  }),
);

export function parseNbdList(stdout: string): MappedImage[] {
  const text = stdout.trim();
  if (!text) return [];
  return nbdListSchema
    .parse(JSON.parse(text))
    .map((e) => ({ device: e.device, pool: e.pool, namespace: e.namespace, image: e.image, snap: e.snap, pid: e.id }));
}

/**
 * rbd-nbd: librbd in a userspace daemon behind /dev/nbdN. The daemon forks itself off (so it
 * outlives the plugin) and resizes the nbd device when the image grows.
 */
export class NbdMapper extends CliMapper {
  readonly kind = 'nbd' as const;
  protected readonly tool = 'rbd-nbd';
  protected readonly verbPrefix: string[] = [];
  protected parseList = parseNbdList;
}
