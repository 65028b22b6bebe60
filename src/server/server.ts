import {
  type sendUnaryData,
  Server,
  ServerCredentials,
  type ServerUnaryCall,
  type ServerWritableStream,
  type UntypedServiceImplementation,
} from '@grpc/grpc-js';
import type { Logger } from '../log.js';
import { unimplemented } from './errors.js';
import { prepareSocket, parseEndpoint } from './endpoint.js';
import {
  type AnyRpcSpec,
  type AnyStreamSpec,
  intercept,
  interceptStream,
  type InterceptorDeps,
} from './interceptors.js';
import { csiPackage, type CsiServiceName } from './proto.js';

export type ServiceImpls = Partial<Record<CsiServiceName, Record<string, AnyRpcSpec | AnyStreamSpec | undefined>>>;

/**
 * The gRPC server: registers the CSI services this mode serves (every method goes through the
 * interceptors; those not built answer UNIMPLEMENTED), binds the endpoint, drains on shutdown.
 */
export class CsiServer {
  private readonly server = new Server({ 'grpc.max_receive_message_length': 4 * 1024 * 1024 });
  private state: 'new' | 'serving' | 'draining' | 'stopped' = 'new';
  private inFlight = 0;
  private readonly log: Logger;

  constructor(private readonly deps: InterceptorDeps) {
    this.log = deps.log;
  }

  get serving(): boolean {
    return this.state === 'serving';
  }

  async start(endpoint: string, services: ServiceImpls): Promise<string> {
    const pkg = csiPackage(Object.keys(services) as CsiServiceName[]);
    for (const [name, impl] of Object.entries(services) as [
      CsiServiceName,
      Record<string, AnyRpcSpec | AnyStreamSpec | undefined>,
    ][]) {
      const definition = pkg[name].service;
      const handlers: UntypedServiceImplementation = {};
      for (const [method, def] of Object.entries(definition)) {
        const given = impl[method];
        if (def.responseStream) {
          const spec: AnyStreamSpec =
            given && 'stream' in given
              ? given
              : {
                  // eslint-disable-next-line require-yield -- a stream that fails before its first message
                  stream: async function* () {
                    throw unimplemented(`${method} is not implemented by this plugin`);
                  },
                };
          const wrapped = interceptStream(name, method, spec, this.deps);
          handlers[method] = (call: ServerWritableStream<Record<string, unknown> | undefined, unknown>) => {
            this.inFlight++;
            void wrapped(call).finally(() => this.inFlight--);
          };
          continue;
        }
        const spec: AnyRpcSpec =
          given && 'handler' in given
            ? given
            : {
                handler: async () => {
                  throw unimplemented(`${method} is not implemented by this plugin`);
                },
              };
        const wrapped = intercept(name, method, spec, this.deps);
        handlers[method] = (
          call: ServerUnaryCall<Record<string, unknown> | undefined, unknown>,
          cb: sendUnaryData<unknown>,
        ) => {
          this.inFlight++;
          wrapped(call, (err, res) => {
            this.inFlight--;
            cb(err, res);
          });
        };
      }
      this.server.addService(definition, handlers);
    }
    const ep = parseEndpoint(endpoint);
    if (ep.kind === 'unix') await prepareSocket(ep.path);
    await new Promise<number>((resolve, reject) =>
      this.server.bindAsync(ep.bind, ServerCredentials.createInsecure(), (err, port) =>
        err ? reject(new Error(`cannot listen on ${endpoint}: ${err.message}`)) : resolve(port),
      ),
    );
    this.state = 'serving';
    this.log.info({ endpoint, services: Object.keys(services) }, 'serving');
    return endpoint;
  }

  /**
   * Stop taking new RPCs and let the ones in flight finish; after `graceMs` cut what is left.
   * A kubelet or sidecar retries what was cut: every CSI RPC is idempotent.
   */
  async shutdown(graceMs = 30_000): Promise<void> {
    if (this.state === 'stopped' || this.state === 'draining') return;
    this.state = 'draining';
    this.log.info({ inFlight: this.inFlight, graceMs }, 'draining: refusing new RPCs, letting in-flight ones finish');
    await new Promise<void>((resolve) => {
      const timer = setTimeout(() => {
        this.log.warn({ inFlight: this.inFlight }, 'grace period over: cancelling RPCs still running');
        this.server.forceShutdown();
        resolve();
      }, graceMs);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    this.state = 'stopped';
    this.log.info('stopped');
  }
}
