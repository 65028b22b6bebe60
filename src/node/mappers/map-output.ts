import { CommandError, lastLines } from '../host/command.js';
import { NodeError } from '../errors.js';
import { imageSpecString, type ImageSpec } from './mapper.js';

/** The device a map command printed (its last /dev/… line). */
export function mappedDevicePath(stdout: string, command: string): string {
  const line = stdout
    .trim()
    .split('\n')
    .map((l) => l.trim())
    .reverse()
    .find((l) => /^\/dev\/[\w/-]+$/.test(l));
  if (!line)
    throw new NodeError('internal', `${command} printed no device path (got "${stdout.trim().slice(0, 120)}")`);
  return line;
}

/**
 * What a Ceph client tool's failure means for the CO: the image is gone, the key is refused, the
 * monitors are unreachable, or something else (kept verbatim).
 */
export function cephFailure(output: string, tool: string, spec: ImageSpec, timedOut = false): NodeError {
  const image = imageSpecString(spec);
  const said = lastLines(output, 3);
  if (/\(2\) No such file or directory|image not found|does not exist/i.test(output))
    return new NodeError(
      'not-found',
      `RBD image ${image} does not exist (was its Cinder volume deleted?): ${tool}: ${said}`,
    );
  if (
    /\(1\) Operation not permitted|\(13\) Permission denied|handle_auth_bad_method|auth.*(fail|denied|reject)|EACCES|EPERM|no keyring found|unable to find a keyring|keyring not found|failed to load .*keyring/i.test(
      output,
    )
  )
    return new NodeError(
      'permission-denied',
      `Ceph refused client.${spec.user} for ${image}: check the key (node-stage secret userKey or --ceph-keyring) and the user's caps: ${tool}: ${said}`,
    );
  if (
    timedOut ||
    /\(110\) Connection timed out|timed out|monclient.*authenticate|failed to fetch mon config/i.test(output)
  )
    return new NodeError(
      'unavailable',
      `cannot reach the Ceph monitors ${spec.monitors.join(',')} for ${image}: ${tool}: ${said || 'timed out'}`,
    );
  return new NodeError('internal', `${tool} failed on ${image}: ${said || 'no output'}`);
}

/** A map command's CommandError (or anything else) → a NodeError the CSI layer can answer with. */
export function mapFailure(e: unknown, tool: string, spec: ImageSpec): Error {
  if (e instanceof NodeError) return e;
  if (e instanceof CommandError) {
    if (e.reason === 'cancelled')
      return new NodeError('aborted', `mapping ${imageSpecString(spec)} was cancelled by the caller`);
    return cephFailure(e.stderr, tool, spec, e.reason === 'timeout');
  }
  return e as Error;
}
