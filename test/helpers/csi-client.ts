import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import type { ControllerDefinition } from '../../src/csi/generated/csi/v1/Controller.js';
import type { IdentityDefinition } from '../../src/csi/generated/csi/v1/Identity.js';
import type { NodeDefinition } from '../../src/csi/generated/csi/v1/Node.js';
import { csiPackage } from '../../src/server/proto.js';

export type CsiService = 'Identity' | 'Controller' | 'Node';

type Call = (req?: object, opts?: { deadlineMs?: number; metadata?: Record<string, string> }) => Promise<any>;
/** The RPC names of a generated service definition (its string index signature dropped). */
type Methods<D> = Record<keyof { [K in keyof D as string extends K ? never : K]: D[K] }, Call>;

/** A promise-returning CSI client for tests and benchmarks: `await csi.Node.NodeGetInfo({})`. */
export type CsiClient = { Identity: Methods<IdentityDefinition>; Controller: Methods<ControllerDefinition>; Node: Methods<NodeDefinition> } & {
  close(): void;
};

export function csiClient(endpoint: string): CsiClient {
  const target = endpoint.startsWith('unix://') ? endpoint : endpoint.replace(/^tcp:\/\//, '');
  const pkg = csiPackage();
  const clients: Client[] = [];
  const out = { close: () => clients.forEach((c) => c.close()) } as CsiClient;
  for (const name of ['Identity', 'Controller', 'Node'] as const) {
    const client = new pkg[name](target, credentials.createInsecure()) as Client & Record<string, Function>;
    clients.push(client);
    (out as Record<CsiService, unknown>)[name] = new Proxy({} as Record<string, any>, {
      get: (_t, method: string) => (req: object = {}, opts: { deadlineMs?: number; metadata?: Record<string, string> } = {}) =>
        new Promise((resolve, reject) => {
          const md = new Metadata();
          for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
          const deadline = new Date(Date.now() + (opts.deadlineMs ?? 120_000));
          client[method]!.call(client, req, md, { deadline }, (err: ServiceError | null, res: unknown) => (err ? reject(err) : resolve(res)));
        }),
    });
  }
  return out;
}

/** Expect a gRPC failure with this status code; returns the error for further checks. */
export async function expectCode(p: Promise<unknown>, code: number): Promise<ServiceError> {
  try {
    await p;
  } catch (e) {
    const err = e as ServiceError;
    if (err.code !== code) throw new Error(`expected gRPC code ${code}, got ${err.code}: ${err.details ?? err.message}`);
    return err;
  }
  throw new Error(`expected gRPC code ${code}, but the call succeeded`);
}
