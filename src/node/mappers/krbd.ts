import { z } from 'zod';
import { CliMapper, type MappedImage } from './cli-mapper.js';

/** `rbd device list --format json`. */
const krbdListSchema = z.array(
  z.object({
    id: z.union([z.string(), z.number()]),
    pool: z.string(),
    namespace: z.string().default(''),
    name: z.string(),
    snap: z.string().default('-'),
    device: z.string(),
  }),
);

export function parseKrbdList(stdout: string): MappedImage[] {
  const text = stdout.trim();
  if (!text) return [];
  return krbdListSchema
    .parse(JSON.parse(text))
    .map((e) => ({ device: e.device, pool: e.pool, namespace: e.namespace, image: e.name, snap: e.snap }));
}

/** The kernel RBD client: `rbd device map` makes /dev/rbdN; the kernel follows resizes itself. */
export class KrbdMapper extends CliMapper {
  readonly kind = 'krbd' as const;
  protected readonly tool = 'rbd';
  protected readonly verbPrefix = ['device'];
  protected parseList = parseKrbdList;
}
