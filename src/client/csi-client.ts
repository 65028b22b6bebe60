import { credentials, Metadata, type Client, type ServiceError } from '@grpc/grpc-js';
import type { ControllerClient } from '../csi/generated/csi/v1/Controller.js';
import type { GroupControllerClient } from '../csi/generated/csi/v1/GroupController.js';
import type { IdentityClient } from '../csi/generated/csi/v1/Identity.js';
import type { NodeClient } from '../csi/generated/csi/v1/Node.js';
import type { SnapshotMetadataClient } from '../csi/generated/csi/v1/SnapshotMetadata.js';
import { csiPackage } from '../server/proto.js';

export type CsiService = 'Identity' | 'Controller' | 'GroupController' | 'Node' | 'SnapshotMetadata';
/** The RPC names of a generated client (its own methods, not grpc.Client's). */
type Methods<C> = Exclude<keyof C, keyof Client>;
// the answer is whatever JSON the RPC sends: `call` prints it, the tests and the demo read what they check
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Call = (req?: object, opts?: CallOptions) => Promise<any>;
interface CallOptions {
  deadlineMs?: number;
  metadata?: Record<string, string>;
}

/** A server-streaming call: its messages as they come (an error ends the iteration), and a way to cancel it. */
export interface Stream {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  messages: AsyncIterable<any>;
  cancel(): void;
}
type StreamCall = (req?: object, opts?: CallOptions) => Stream;

/**
 * A promise-returning CSI client (`stackube-csi call`, the demo, tests, benchmarks): `await csi.Node.NodeGetInfo({})`.
 */
export interface CsiClient {
  Identity: Record<Methods<IdentityClient>, Call>;
  Controller: Record<Methods<ControllerClient>, Call>;
  GroupController: Record<Methods<GroupControllerClient>, Call>;
  Node: Record<Methods<NodeClient>, Call>;
  SnapshotMetadata: Record<Methods<SnapshotMetadataClient>, StreamCall>;
  close(): void;
}

/** `channelOptions` are grpc-js channel options, e.g. a short reconnect backoff for start-up timing. */
export function csiClient(endpoint: string, channelOptions: Record<string, number> = {}): CsiClient {
  const target = endpoint.startsWith('unix://') ? endpoint : endpoint.replace(/^tcp:\/\//, '');
  const pkg = csiPackage();
  const clients: Client[] = [];
  const out = { close: () => clients.forEach((c) => c.close()) } as CsiClient;
  for (const name of ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const) {
    const client = new pkg[name](target, credentials.createInsecure(), channelOptions) as Client &
      Record<string, (...args: unknown[]) => unknown>;
    clients.push(client);
    const streaming = (method: string) =>
      (pkg[name].service[method] as { responseStream?: boolean } | undefined)?.responseStream;
    (out as unknown as Record<string, unknown>)[name] = new Proxy({} as Record<string, Call | StreamCall>, {
      get:
        (_t, method: string) =>
        (req: object = {}, opts: CallOptions = {}) => {
          const md = new Metadata();
          for (const [k, v] of Object.entries(opts.metadata ?? {})) md.set(k, v);
          const deadline = new Date(Date.now() + (opts.deadlineMs ?? 120_000));
          if (streaming(method)) {
            const call = client[method]!.call(client, req, md, { deadline }) as AsyncIterable<unknown> & {
              cancel(): void;
            };
            return { messages: call, cancel: () => call.cancel() };
          }
          return new Promise((resolve, reject) => {
            client[method]!.call(client, req, md, { deadline }, (err: ServiceError | null, res: unknown) =>
              err ? reject(err) : resolve(res),
            );
          });
        },
    });
  }
  return out;
}
