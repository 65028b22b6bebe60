import { existsSync } from 'node:fs';

/**
 * SELinux mounts (CSIDriver seLinuxMount: true). Kubelet passes the pod's label as one mount flag,
 * `context="system_u:object_r:container_file_t:s0:c1,c2"`: quoted, since a level's categories hold
 * commas. The filesystem is mounted with it once, at stage; every bind of that mount carries the same
 * label, so a volume has one context per node.
 */

/** user:role:type:level, the level a sensitivity (range) with optional categories: s0, s0-s0:c0.c1023, s0:c1,c2. */
const LABEL = /^[a-z][\w]*:[a-z][\w]*:[a-z][\w]*:s\d+(?:-s\d+)?(?::c\d+(?:[.,]c\d+)*)?$/;
const CONTEXT_FLAG = /^context=("?)([^"]*)\1$/;

/** A `context=` mount flag with a well-formed label (quoted or not); anything else starting so is not. */
export function isContextFlag(flag: string): boolean {
  const m = CONTEXT_FLAG.exec(flag);
  return !!m && LABEL.test(m[2]!) && (m[1] === '"' || !m[2]!.includes(','));
}

/** Mount flags → mount options: split at commas, except inside double quotes (a context label's). */
export function splitMountOptions(flags: string[]): string[] {
  return flags
    .flatMap((f) => f.match(/(?:[^,"]|"[^"]*")+/g) ?? [])
    .map((o) => o.trim())
    .filter(Boolean);
}

/** The label of the context= option among mount options, unquoted; undefined when there is none. */
export function seLinuxContext(options: string[]): string | undefined {
  for (const o of options) {
    const m = CONTEXT_FLAG.exec(o);
    if (m) return m[2];
  }
  return undefined;
}

/** Whether the host runs SELinux (selinuxfs is mounted): without it the kernel refuses context=. */
export const seLinuxEnabled = (): boolean => existsSync('/sys/fs/selinux/enforce');
