# What `up` checks before it installs or creates anything: every problem at once, each with what to do.
# Sourced by `up`.
# shellcheck shell=bash

PREFLIGHT_DISK_MIB=4096     # packages (~1.3 GiB), the guest kernel, databases, logs, test scratch
PREFLIGHT_MEM_MIB=3072      # the stack idles at ~0.8 GiB; the memstore OSD grows with what is stored

# port_owner PORT: "ours" when a process of this stack listens there, else the listener (or nothing).
port_owner() {
  local port=$1 name
  (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null || return 0
  case $port in
    5000) name=keystone ;; 8776) name=cinder ;; 3300|6789) name=mon.a ;;
  esac
  if pid_alive "$name"; then echo ours; return; fi
  { command -v ss >/dev/null && ss -Hltnp "sport = :$port" | sed 's/.*users:((//; s/))$//'; } || echo "an unknown process"
}

free_mib() { df -Pm "$1" | awk 'NR==2 {print $4}'; }

preflight() {
  local problems=() port owner dir mem
  for port in 5000 8776 3300 6789; do
    owner=$(port_owner "$port")
    [ -z "$owner" ] || [ "$owner" = ours ] ||
      problems+=("127.0.0.1:$port is taken by $owner: stop it (another stack with a different STACKUBE_LOCAL?)")
  done
  [ -c /dev/fuse ] ||
    problems+=("/dev/fuse is missing: rbd-fuse needs FUSE (modprobe fuse; in a container, pass --device /dev/fuse)")
  if [ ! -c /dev/loop-control ]; then
    problems+=("/dev/loop-control is missing: the node side maps images onto loop devices (modprobe loop)")
  elif command -v losetup >/dev/null && ! losetup -f >/dev/null 2>&1; then
    problems+=("no free loop device: detach unused ones (losetup -D) or raise max_loop")
  fi
  if [ ! -e "$READY" ]; then   # something will be installed or created: room for it
    dir=$BASE
    while [ ! -d "$dir" ]; do dir=$(dirname "$dir"); done
    [ "$(free_mib "$dir")" -ge $PREFLIGHT_DISK_MIB ] ||
      problems+=("only $(free_mib "$dir") MiB free on $dir's filesystem; the stack needs $PREFLIGHT_DISK_MIB MiB")
    mem=$(awk '/^MemAvailable:/ {print int($2 / 1024)}' /proc/meminfo)
    [ "$mem" -ge $PREFLIGHT_MEM_MIB ] ||
      problems+=("only $mem MiB of memory available; the stack needs $PREFLIGHT_MEM_MIB MiB (STACKUBE_OSD_BYTES caps Ceph's share)")
  fi
  [ ${#problems[@]} -eq 0 ] && return 0
  printf '%s: cannot start:\n' "$ME" >&2
  printf '  - %s\n' "${problems[@]}" >&2
  exit 1
}
