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
