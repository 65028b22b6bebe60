#!/bin/busybox sh
# PID 1 of the e2e guest: plays the Kata agent's part for one direct-assigned volume. Driven by the
# kernel command line, reports on the serial console (lines starting CSI-) for the host to parse.
#   csi.disk=vda          block device to mount (the volume handed in as virtio-blk)
#   csi.9p=TAG            mount this virtio-9p share instead of a disk
#   csi.fstype=ext4       filesystem (from mountInfo.json "fstype")
#   csi.opts=rw           mount options (from mountInfo.json "options", comma-separated)
#   csi.check=PATH:TEXT   the file PATH (relative to the volume) must hold TEXT   (repeatable)
#   csi.write=PATH:TEXT   write TEXT to PATH on the volume                        (repeatable)
#   csi.bench=MIB:OPS     run randio on the volume: MIB MiB sequential, OPS random 4 KiB ops
#   csi.sync=1            before each cold read, print CSI-SYNC and wait for a line on the console
/bin/busybox mount -t proc proc /proc
/bin/busybox --install -s /bin
mount -t sysfs sys /sys
mount -t devtmpfs dev /dev
echo "CSI-BOOT uptime=$(cut -d' ' -f1 /proc/uptime) kernel=$(uname -r)"
fail() { echo "CSI-FAIL $*"; sync; poweroff -f; }
disk=vda; share=; fstype=ext4; opts=rw; bench=; sync_points=0
for a in $(cat /proc/cmdline); do
  case "$a" in
    csi.disk=*) disk=${a#csi.disk=} ;;
    csi.9p=*) share=${a#csi.9p=} ;;
    csi.fstype=*) fstype=${a#csi.fstype=} ;;
    csi.opts=*) opts=${a#csi.opts=} ;;
    csi.bench=*) bench=${a#csi.bench=} ;;
    csi.sync=1) sync_points=1 ;;
  esac
done
# modules in modprobe --show-depends order (no modprobe or depmod in the guest)
for m in $(cat /lib/modules/load-order); do
  insmod "/lib/modules/$m" 2>/tmp/insmod.err || grep -q 'File exists' /tmp/insmod.err || echo "CSI-WARN insmod $m: $(cat /tmp/insmod.err)"
done
mkdir -p /vol
if [ -n "$share" ]; then
  mount -t 9p -o trans=virtio,version=9p2000.L "$share" /vol 2>/tmp/mount.err || fail "mount 9p $share: $(cat /tmp/mount.err)"
else
  i=0; while [ ! -b "/dev/$disk" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done
  [ -b "/dev/$disk" ] || fail "no /dev/$disk; partitions: $(tr '\n' ' ' < /proc/partitions)"
  echo "CSI-DISK $disk bytes=$(( $(cat /sys/block/$disk/size) * 512 )) ro=$(cat /sys/block/$disk/ro)"
  mount -t "$fstype" -o "$opts" "/dev/$disk" /vol 2>/tmp/mount.err || fail "mount -t $fstype -o $opts /dev/$disk: $(cat /tmp/mount.err)"
fi
echo "CSI-MOUNT $(grep ' /vol ' /proc/mounts)"
for a in $(cat /proc/cmdline); do
  case "$a" in
    csi.check=*)
      kv=${a#csi.check=}; path=${kv%%:*}; want=${kv#*:}
      got=$(cat "/vol/$path" 2>&1)
      if [ "$got" = "$want" ]; then echo "CSI-CHECK $path ok"; else echo "CSI-CHECK $path mismatch got=$(echo "$got" | head -1 | cut -c1-120)"; fi ;;
  esac
done
for a in $(cat /proc/cmdline); do
  case "$a" in
    csi.write=*)
      kv=${a#csi.write=}; path=${kv%%:*}; text=${kv#*:}
      if (echo "$text" > "/vol/$path") 2>/tmp/write.err && sync; then echo "CSI-WROTE $path $text"; else echo "CSI-WRITE-REFUSED $path $(cat /tmp/write.err | head -1)"; fi ;;
  esac
done
if [ -n "$bench" ]; then
  mib=${bench%%:*}; ops=${bench#*:}
  cold() { sync; echo 3 > /proc/sys/vm/drop_caches; if [ $sync_points = 1 ]; then echo "CSI-SYNC $1"; read -r _ack; fi; }
  run() { out=$(/bin/randio "$@" 2>&1) && echo "CSI-BENCH $out" || fail "randio $*: $out"; }
  run seqwrite /vol/bench.bin "$mib"
  cold seqread;   run seqread /vol/bench.bin "$mib"
  cold randread;  run randread /vol/bench.bin "$mib" "$ops"
  run randwrite /vol/bench.bin "$mib" "$ops"
  rm -f /vol/bench.bin
fi
cd /
umount /vol || fail "umount /vol"
echo "CSI-DONE uptime=$(cut -d' ' -f1 /proc/uptime)"
poweroff -f
