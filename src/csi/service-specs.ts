import type { handleServerStreamingCall, handleUnaryCall, UntypedServiceImplementation } from '@grpc/grpc-js';
import type { RpcSpec, StreamSpec } from '../server/interceptors.js';

/**
 * A CSI service's RPCs as this driver implements them, each with the request and response types the
 * generated handlers name (`ServiceSpecs<ControllerHandlers>`): a handler gets its own request type, and a
 * server-streaming RPC is a stream of its response type.
 */
export type ServiceSpecs<H extends UntypedServiceImplementation> = Partial<{
  [M in keyof H as string extends M ? never : M]: H[M] extends handleUnaryCall<infer Req, infer Res>
    ? RpcSpec<Req, Res>
    : H[M] extends handleServerStreamingCall<infer Req, infer Res>
      ? StreamSpec<Req, Res>
      : never;
}>;
