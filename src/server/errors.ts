import { status as Status } from '@grpc/grpc-js';

export { Status };

/** An error that carries the gRPC status code the CSI spec names for it, and a message a user can act on. */
export class CsiError extends Error {
  constructor(
    readonly code: Status,
    message: string,
  ) {
    super(message);
    this.name = 'CsiError';
  }
}

export const invalidArgument = (msg: string) => new CsiError(Status.INVALID_ARGUMENT, msg);
export const notFound = (msg: string) => new CsiError(Status.NOT_FOUND, msg);
export const alreadyExists = (msg: string) => new CsiError(Status.ALREADY_EXISTS, msg);
export const failedPrecondition = (msg: string) => new CsiError(Status.FAILED_PRECONDITION, msg);
export const aborted = (msg: string) => new CsiError(Status.ABORTED, msg);
export const outOfRange = (msg: string) => new CsiError(Status.OUT_OF_RANGE, msg);
export const resourceExhausted = (msg: string) => new CsiError(Status.RESOURCE_EXHAUSTED, msg);
export const unavailable = (msg: string) => new CsiError(Status.UNAVAILABLE, msg);
export const internal = (msg: string) => new CsiError(Status.INTERNAL, msg);
export const unimplemented = (msg: string) => new CsiError(Status.UNIMPLEMENTED, msg);
export const unauthenticated = (msg: string) => new CsiError(Status.UNAUTHENTICATED, msg);

/** Anything thrown → a code and a message. Unknown errors are INTERNAL with their message kept. */
export function toStatus(err: unknown): { code: Status; message: string } {
  if (err instanceof CsiError) return { code: err.code, message: err.message };
  return { code: Status.INTERNAL, message: `internal error: ${err instanceof Error ? err.message : String(err)}` };
}

export const statusName = (code: Status): string => Status[code] ?? String(code);
