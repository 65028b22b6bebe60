import { readFile } from 'node:fs/promises';
import { parseArgs } from 'node:util';
import type { ServiceError } from '@grpc/grpc-js';
import { csiPackage } from '../server/proto.js';
import { statusName } from '../server/errors.js';
import { csiClient, type CsiClient } from './csi-client.js';

// `stackube-csi call <RPC> [--json '{…}'] --endpoint …`: one CSI call, JSON in and out, for operators
// (what gocsi's csc does). Exit code: 0, or the gRPC status code of the failure; 2 for a usage error
// (which is also UNKNOWN's number: the driver never answers UNKNOWN, and stderr says which it was).

export const CALLABLE_SERVICES = ['Identity', 'Controller', 'GroupController', 'Node', 'SnapshotMetadata'] as const;
type Service = (typeof CALLABLE_SERVICES)[number];

export interface Rpc {
  service: Service;
  method: string;
}

interface MethodDefinition {
  responseStream: boolean;
  requestSerialize(value: object): Buffer;
  requestDeserialize(bytes: Buffer): object;
}

function methodDefinition(rpc: Rpc): MethodDefinition {
  return csiPackage()[rpc.service].service[rpc.method] as unknown as MethodDefinition;
}

/** Every RPC the driver can be called with, as `Service.Method`. */
export function allRpcs(): Rpc[] {
  return CALLABLE_SERVICES.flatMap((service) =>
    Object.keys(csiPackage()[service].service).map((method) => ({ service, method })),
  );
}

export class UsageError extends Error {}

/**
 * `CreateVolume`, `Controller.CreateVolume` or `csi.v1.Controller/CreateVolume`, in any case (CSI's RPC names are
 * unique).
 */
export function resolveRpc(name: string): Rpc {
  const m = /^(?:(?:csi\.v1\.)?(\w+)[./])?(\w+)$/.exec(name.trim());
  const found =
    m &&
    allRpcs().filter(
      (r) =>
        r.method.toLowerCase() === m[2]!.toLowerCase() && (!m[1] || r.service.toLowerCase() === m[1].toLowerCase()),
    );
  if (!found?.length) {
    const near = allRpcs().filter((r) => m && r.method.toLowerCase().includes(m[2]!.toLowerCase().slice(0, 6)));
    throw new UsageError(
      `unknown RPC "${name.slice(0, 80)}"${near.length ? `; did you mean ${near.map((r) => r.method).join(', ')}?` : ''} (stackube-csi call --list names them all)`,
    );
  }
  return found[0]!;
}

/** Input fields protobuf would drop without a word: keys the request does not have, enum names it does not know. */
function droppedFields(input: unknown, echoed: unknown, path: string): string[] {
  if (Array.isArray(input))
    return input.flatMap((v, i) => droppedFields(v, Array.isArray(echoed) ? echoed[i] : undefined, `${path}[${i}]`));
  if (input && typeof input === 'object') {
    const out = echoed && typeof echoed === 'object' ? (echoed as Record<string, unknown>) : {};
    return Object.entries(input).flatMap(([k, v]) =>
      k in out ? droppedFields(v, out[k], path ? `${path}.${k}` : k) : [`${path ? `${path}.` : ''}${k}: no such field`],
    );
  }
  // strings survive the round trip exactly, except an enum name the enum lacks (it turns into its zero value)
  if (typeof input === 'string' && typeof echoed === 'string' && input !== echoed)
    return [`${path}: "${input.slice(0, 40)}" is not a value of this enum`];
  return [];
}

/** The request as protobuf will send it, or a UsageError saying what in the JSON does not fit the message. */
export function checkRequest(rpc: Rpc, json: string): object {
  let input: unknown;
  try {
    input = JSON.parse(json);
  } catch (e) {
    throw new UsageError(`--json is not JSON: ${(e as Error).message.slice(0, 120)}`);
  }
  if (!input || typeof input !== 'object' || Array.isArray(input))
    throw new UsageError(
      `--json must be a JSON object (the ${rpc.method}Request message, fields in snake_case as in the CSI spec)`,
    );
  const def = methodDefinition(rpc);
  let echoed: object;
  try {
    echoed = def.requestDeserialize(def.requestSerialize(input));
  } catch (e) {
    throw new UsageError(`--json does not fit ${rpc.method}Request: ${(e as Error).message.slice(0, 160)}`);
  }
  const dropped = droppedFields(input, echoed, '');
  if (dropped.length)
    throw new UsageError(`--json does not fit ${rpc.method}Request: ${dropped.slice(0, 5).join('; ')}`);
  return input;
}

const USAGE = `usage: stackube-csi call <RPC> [--json '{…}' | --json @file | --json -] [--endpoint unix:///…] [--timeout SECONDS]
       stackube-csi call --list
The request is the RPC's message as JSON with the CSI spec's snake_case field names; the reply is printed as JSON
(a streaming RPC's replies, SnapshotMetadata's, one JSON line each as they come).
Exit code: 0, or the gRPC status code of the failure (3 INVALID_ARGUMENT, 5 NOT_FOUND, …); 2 for a usage error.`;

async function readJson(value: string | undefined): Promise<string> {
  if (value === undefined) return '{}';
  if (value === '-') {
    const chunks: Buffer[] = [];
    for await (const c of process.stdin) chunks.push(c as Buffer);
    return Buffer.concat(chunks).toString('utf8');
  }
  if (value.startsWith('@'))
    return readFile(value.slice(1), 'utf8').catch((e: Error) =>
      Promise.reject(new UsageError(`--json ${value.slice(0, 80)}: ${e.message}`)),
    );
  return value;
}

/** `stackube-csi call …`; returns the exit code. */
export async function runCall(
  args: string[],
  env: NodeJS.ProcessEnv = process.env,
  out = process.stdout,
  err = process.stderr,
): Promise<number> {
  let rpc: Rpc;
  let request: object;
  let endpoint: string;
  let timeoutMs: number;
  try {
    const { values, positionals } = parseArgs({
      args,
      options: {
        json: { type: 'string' },
        endpoint: { type: 'string' },
        timeout: { type: 'string' },
        list: { type: 'boolean' },
        help: { type: 'boolean', short: 'h' },
      },
      allowPositionals: true,
      strict: true,
    });
    if (values.help) {
      out.write(`${USAGE}\n`);
      return 0;
    }
    if (values.list) {
      out.write(
        `${allRpcs()
          .map((r) => `${r.service}.${r.method}`)
          .join('\n')}\n`,
      );
      return 0;
    }
    if (positionals.length !== 1)
      throw new UsageError(
        positionals.length
          ? `one RPC at a time, not ${positionals.length}`
          : 'which RPC? (stackube-csi call --list names them)',
      );
    rpc = resolveRpc(positionals[0]!);
    request = checkRequest(rpc, await readJson(values.json));
    endpoint = values.endpoint ?? env.CSI_ENDPOINT ?? '';
    if (!/^(unix:\/\/\/|tcp:\/\/)./.test(endpoint))
      throw new UsageError(
        `--endpoint (or CSI_ENDPOINT) must be unix:///path or tcp://host:port${endpoint ? `, not "${endpoint.slice(0, 80)}"` : ''}`,
      );
    timeoutMs = values.timeout === undefined ? 120_000 : Number(values.timeout) * 1000;
    if (!(timeoutMs > 0)) throw new UsageError(`--timeout must be a number of seconds above 0`);
  } catch (e) {
    if (!(e instanceof UsageError) && !(e as { code?: string }).code?.startsWith('ERR_PARSE_ARGS')) throw e;
    err.write(`stackube-csi call: ${(e as Error).message}\n${USAGE}\n`);
    return 2;
  }
  const client = csiClient(endpoint);
  try {
    if (methodDefinition(rpc).responseStream) {
      const { messages } = client.SnapshotMetadata[rpc.method as keyof CsiClient['SnapshotMetadata']](request, {
        deadlineMs: timeoutMs,
      });
      for await (const reply of messages) out.write(`${JSON.stringify(reply)}\n`);
      return 0;
    }
    const calls = client[rpc.service] as Record<
      string,
      (req: object, opts: { deadlineMs: number }) => Promise<unknown>
    >;
    const reply = await calls[rpc.method]!(request, { deadlineMs: timeoutMs });
    out.write(`${JSON.stringify(reply, null, 2)}\n`);
    return 0;
  } catch (e) {
    const se = e as ServiceError;
    if (typeof se.code !== 'number') throw e;
    err.write(`${rpc.service}.${rpc.method}: ${statusName(se.code)} (${se.code}): ${se.details ?? se.message}\n`);
    return se.code;
  } finally {
    client.close();
  }
}
