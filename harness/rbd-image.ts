import { execa } from 'execa';
import { CEPH_CONF, STACK } from './local-stack.js';

/**
 * A Cinder volume's RBD image in deploy/local's pool, written and read straight through librbd as
 * client.cinder (Cinder's own identity): what a pod would have written, laid down exactly where a test
 * wants it, and the bytes of a snapshot as a file.
 */
export interface RbdWrite {
  offset: number;
  length: number;
  /** Every byte of the range; `discard` deallocates the range instead (it reads back as zeros). */
  byte?: number;
  discard?: boolean;
}

const POOL = STACK.CEPH_POOL!;
const CEPH = ['-c', CEPH_CONF, '--id', 'cinder'];

// python3-rbd (deploy/local installs it) writes at exact offsets; the rbd CLI cannot
const WRITER = `
import json, sys, rados, rbd
conf, pool, image = sys.argv[1:4]
ops = json.load(sys.stdin)
c = rados.Rados(conffile=conf, name='client.cinder'); c.connect()
try:
    io = c.open_ioctx(pool)
    with rbd.Image(io, image) as im:
        for op in ops:
            if op.get('discard'):
                im.discard(op['offset'], op['length'])
            else:
                im.write(bytes([op['byte']]) * op['length'], op['offset'])
        im.flush()
    io.close()
finally:
    c.shutdown()
`;

export const imageOf = (volumeId: string) => `volume-${volumeId}`;

/** Apply `ops`, in order, to the image of Cinder volume `volumeId`. */
export async function writeImage(volumeId: string, ops: RbdWrite[]): Promise<void> {
  await execa('/usr/bin/python3', ['-c', WRITER, CEPH_CONF, POOL, imageOf(volumeId)], {
    input: JSON.stringify(ops),
  });
}

/** The bytes of Cinder snapshot `snapshotId` of volume `volumeId`, into `file` (sparse). */
export async function exportSnapshot(volumeId: string, snapshotId: string, file: string): Promise<void> {
  await execa('rbd', [...CEPH, 'export', '--no-progress', `${POOL}/${imageOf(volumeId)}@snapshot-${snapshotId}`, file]);
}

const READER = `
import sys, rados, rbd
conf, pool, image, offset, length = sys.argv[1:6]
c = rados.Rados(conffile=conf, name='client.cinder'); c.connect()
try:
    io = c.open_ioctx(pool)
    with rbd.Image(io, image, read_only=True) as im:
        sys.stdout.buffer.write(im.read(int(offset), int(length)))
    io.close()
finally:
    c.shutdown()
`;

/** `length` bytes of the image of Cinder volume `volumeId` from `offset`, as Ceph holds them now. */
export async function readImage(volumeId: string, offset: number, length: number): Promise<Buffer> {
  const r = await execa(
    '/usr/bin/python3',
    ['-c', READER, CEPH_CONF, POOL, imageOf(volumeId), String(offset), String(length)],
    {
      encoding: 'buffer',
    },
  );
  return Buffer.from(r.stdout);
}

/** The client instances on Ceph's blocklist now (as the cluster's admin sees it). */
export async function blocklisted(): Promise<string[]> {
  const r = await execa('ceph', ['-c', STACK.CEPH_ADMIN_CONF!, 'osd', 'blocklist', 'ls', '--format', 'json']);
  // two JSON lists back to back: the entries, then the range entries
  const out = r.stdout.trim();
  const json = out.includes('][') ? out.slice(0, out.indexOf('][') + 1) : out || '[]';
  return (JSON.parse(json) as { addr: string }[]).map((e) => e.addr);
}

/** A node's fencing records in deploy/local's pool (src/fencing-records.ts), read as client.cinder. */
export async function fencingRecords(node: string): Promise<Record<string, unknown>> {
  const rados = (verb: string, ...args: string[]) =>
    execa('rados', [...CEPH, '-p', POOL, verb, `stackube-csi.fencing.${node}`, ...args], { reject: false });
  const keys = await rados('listomapkeys');
  const out: Record<string, unknown> = {};
  for (const key of keys.exitCode === 0 ? keys.stdout.split('\n').filter(Boolean) : [])
    out[key] = JSON.parse((await rados('getomapval', key, '-')).stdout.trim());
  return out;
}

/** Remove a test node's fencing records (its whole fencing object) from deploy/local's pool. */
export async function removeFencingRecords(node: string): Promise<void> {
  await execa('rados', [...CEPH, '-p', POOL, 'rm', `stackube-csi.fencing.${node}`], { reject: false });
}
