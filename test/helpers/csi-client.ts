import type { ServiceError } from '@grpc/grpc-js';

export { csiClient, type CsiClient, type CsiService } from '../../src/client/csi-client.js';

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
