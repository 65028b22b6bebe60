#!/usr/bin/env bash
# scripts/fresh-root/inner.sh — PID 1 of the fresh root's own pid, mount and network namespaces (run.sh
# starts it). Mounts the root (an overlay over the pristine base), runs the README's test command inside it
# in two parts — `npm ci && npm run setup` while the registry proxy is reachable, then, with the network
# interface gone (loopback only), `npm test` — and, whatever happens, kills every process of the namespace,
# detaches the loop devices whose backing file lies in the root and unmounts everything.
# usage: inner.sh RUN_DIR BASE_ROOT PROXY_URL UPLINK_IFACE
set -uo pipefail
RUN=$1 BASE=$2 PROXY=$3 UPLINK=$4
ROOT=$RUN/root
PROJECT=/root/stackube-csi

say() { echo "fresh-root: $*"; }

# Processes of this namespace other than PID 1 and the caller, zombies not counted.
others() {
  local p n=0
  for p in /proc/[0-9]*; do
    p=${p#/proc/}
    [ "$p" = 1 ] || [ "$p" = "$BASHPID" ] || [ "$(sed 's/.*) //' "/proc/$p/stat" 2>/dev/null | cut -c1)" = Z ] || n=$((n + 1))
  done
  echo $n
}

cleanup() {
  trap - EXIT INT TERM
  kill -KILL -1 2>/dev/null                  # every other process of this pid namespace
  for _ in $(seq 1 100); do
    [ "$(others)" = 0 ] && break
    sleep 0.1
  done
  wait 2>/dev/null
  local dev file n=0
  for dev in /sys/block/loop*; do
    file=$(cat "$dev/loop/backing_file" 2>/dev/null) || continue
    case "$file" in "$RUN"/*) losetup -d "/dev/${dev##*/}" 2>/dev/null && n=$((n + 1)) ;; esac
  done
  [ $n = 0 ] || say "detached $n loop device(s) left by the run"
  umount -R "$ROOT" 2>/dev/null || umount -R -l "$ROOT" 2>/dev/null
}
trap cleanup EXIT
trap 'exit 143' INT TERM

# /proc of this pid namespace; the rest of the host's view is left alone (a private mount namespace).
mount -t proc proc /proc
hostname fresh-root                                 # its own UTS namespace, named as its /etc/hosts says
mkdir -p "$ROOT" "$RUN/upper" "$RUN/work"
mount -t overlay overlay -o "lowerdir=$BASE,upperdir=$RUN/upper,workdir=$RUN/work" "$ROOT"
mount -t proc proc "$ROOT/proc"
mount -t sysfs sysfs "$ROOT/sys"
mount --rbind /sys/fs/cgroup "$ROOT/sys/fs/cgroup"    # podman's containers (the image tests) need their cgroups
mount --bind /dev "$ROOT/dev"                       # loop devices, /dev/fuse, /dev/kvm as the host has them
mount -t devpts -o newinstance,ptmxmode=0666 devpts "$ROOT/dev/pts"
mount -t tmpfs tmpfs "$ROOT/dev/shm"
mount -t tmpfs -o mode=755 tmpfs "$ROOT/run"
mkdir -p "$ROOT$PROJECT"
mount --bind "$RUN/project" "$ROOT$PROJECT"          # the clean clone run.sh made
# podman's image store: its overlay driver cannot sit on the root's overlay, so a plain directory of the run
mkdir -p "$RUN/containers" "$ROOT/var/lib/containers"
mount --bind "$RUN/containers" "$ROOT/var/lib/containers"

# The trust-anchor variables a machine of this kind sets (its egress inspects TLS), as the host has them.
CA_ENV=()
for v in NODE_EXTRA_CA_CERTS SSL_CERT_FILE SSL_CERT_DIR CURL_CA_BUNDLE REQUESTS_CA_BUNDLE GIT_SSL_CAINFO; do
  [ -z "${!v:-}" ] || CA_ENV+=("$v=${!v}")
done

in_root() {   # in_root ENV... -- COMMAND: a login-free shell in the root with only the given environment
  local env=(HOME=/root PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin LANG=C.UTF-8 TERM=dumb CI=1
             "${CA_ENV[@]}")
  while [ "$1" != -- ]; do env+=("$1"); shift; done
  shift
  chroot "$ROOT" /usr/bin/env -i "${env[@]}" /bin/bash -c "cd $PROJECT && $*"
}

T0=$SECONDS
say "=== part 1 (registries reachable through the proxy): npm ci && npm run setup"
in_root "http_proxy=$PROXY" "https_proxy=$PROXY" "HTTP_PROXY=$PROXY" "HTTPS_PROXY=$PROXY" \
  "no_proxy=127.0.0.1,localhost,::1" "NO_PROXY=127.0.0.1,localhost,::1" -- 'npm ci --no-audit --no-fund && npm run setup'
rc=$?
T1=$SECONDS
if [ $rc != 0 ]; then say "part 1 failed (exit $rc) after $((T1 - T0)) s"; exit $rc; fi

ip link del "$UPLINK"                               # from here on: loopback only, no registry
say "network cut: $(ip -o link show | awk -F': ' '{print $2}' | tr '\n' ' ')"
say "=== part 2 (no network but loopback): npm run lint && npm test"
in_root -- 'npm run lint && npm test'
rc=$?
say "part 1 took $((T1 - T0)) s, part 2 $((SECONDS - T1)) s; npm test exited $rc"
STRESS=${STACKUBE_FRESH_STRESS:-}
if [ "$rc" = 0 ] && [[ "$STRESS" =~ ^[0-9]+$ ]]; then
  T2=$SECONDS
  say "=== part 3: the concurrency benchmark $STRESS times back to back (scripts/stress-lifecycles.sh)"
  in_root -- "npm run --silent stress -- $STRESS"
  rc=$?
  say "part 3 took $((SECONDS - T2)) s; it exited $rc"
fi
exit $rc
