#!/usr/bin/env bash
# scripts/fresh-root/run.sh — `npm run test:fresh` and CI: prove the README's `npm ci && npm test` on a
# machine that has nothing but what a new machine of this kind has.
#   1. a pristine Debian 12 root (base.sh; cached, keyed by what built it, never written by a run)
#   2. a clean clone of the commit (HEAD of this checkout; uncommitted changes are not in it)
#   3. its own network namespace: loopback (so ports never clash with a stack on the host) and a veth
#      to a proxy that reaches only the package registries; its own pid, mount and UTS namespaces
#   4. inner.sh: `npm ci && npm run setup` with the proxy, then `npm test` with the veth gone
#   5. every process, mount and loop device of the run goes with it; the run's files are deleted
# Needs root, debootstrap (installed when missing), iproute2 and overlayfs. Exit code: npm test's.
# On a failure the root's logs (deploy/local's, npm's) are copied to $FRESH_ROOT_WORK/last-failure/.
set -euo pipefail
HERE=$(cd "$(dirname "$0")" && pwd)
REPO=$(cd "$HERE/../.." && pwd)
WORK=${FRESH_ROOT_WORK:-/var/tmp/stackube-fresh}
say() { echo "fresh-root: $*"; }

[ "$(id -u)" = 0 ] || { echo "fresh-root: must run as root (debootstrap, namespaces, mounts)" >&2; exit 2; }
command -v ip >/dev/null || DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends iproute2
T0=$SECONDS
BASE=$(bash "$HERE/base.sh")
say "base root $BASE ($((SECONDS - T0)) s)"

COMMIT=$(git -C "$REPO" rev-parse HEAD)
[ -z "$(git -C "$REPO" status --porcelain --untracked-files=no)" ] ||
  say "note: the checkout has uncommitted changes; the fresh root tests commit ${COMMIT:0:12} without them"

mkdir -p "$WORK"
RUN=$(mktemp -d "$WORK/run-XXXXXX")
ID=${RUN##*-}
NS=stackube-fresh-$ID
HOST_IF=sfr${ID:0:6}h CHILD_IF=sfr${ID:0:6}c
# a /30 of 10.213.0.0/16 no interface on the host uses yet
for _ in $(seq 1 50); do
  N=$((RANDOM % 16000)) ; NET=10.213.$((N / 64)).$(((N % 64) * 4))
  ip -o addr show | grep -qF " ${NET%.*}.$((${NET##*.} + 1))/" || break
done
HOST_IP=${NET%.*}.$((${NET##*.} + 1)) CHILD_IP=${NET%.*}.$((${NET##*.} + 2))
PROXY_PORT=3128
INNER_PID= PROXY_PID=

loops() { for d in /sys/block/loop*; do if [ -e "$d/loop/backing_file" ]; then echo "${d##*/}"; fi; done | sort; }
LOOPS_BEFORE=$(loops)

finish() {
  local rc=$?
  trap - EXIT INT TERM
  if [ -n "$INNER_PID" ] && kill -0 "$INNER_PID" 2>/dev/null; then   # cut short: let inner.sh clean up
    kill -TERM "$INNER_PID" 2>/dev/null
    for _ in $(seq 1 300); do kill -0 "$INNER_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$INNER_PID" 2>/dev/null || true
  fi
  [ -z "$PROXY_PID" ] || kill "$PROXY_PID" 2>/dev/null || true
  ip netns del "$NS" 2>/dev/null || true
  ip link del "$HOST_IF" 2>/dev/null || true
  # a loop device the run left: backed by a file of the run, or by one no path on this host reaches (the
  # kernel names a file on a mount of a namespace that is gone from that mount's own root: /volume-…)
  local left l file
  left=$(comm -13 <(echo "$LOOPS_BEFORE") <(loops) | while read -r l; do
    file=$(cat "/sys/block/$l/loop/backing_file" 2>/dev/null) || continue
    case "$file" in "$RUN"/*) echo "$l" ;; *) [ -e "${file% (deleted)}" ] || echo "$l" ;; esac; done)
  if [ -n "$left" ]; then
    say "LEAK: loop devices still attached to files of the run:" $left
    for l in $left; do losetup -d "/dev/$l" 2>/dev/null || say "could not detach /dev/$l"; done
    [ "$rc" != 0 ] || rc=1
  fi
  if findmnt -rn -o TARGET | grep -qF "$RUN"; then say "LEAK: mounts under $RUN remain"; fi
  if [ "$rc" != 0 ] && [ -d "$RUN/upper" ]; then
    rm -rf "$WORK/last-failure"; mkdir -p "$WORK/last-failure"
    cp -a "$RUN/upper/var/tmp/stackube/log" "$WORK/last-failure/stackube-log" 2>/dev/null || true
    cp -a "$RUN/upper/root/.npm/_logs" "$WORK/last-failure/npm-logs" 2>/dev/null || true
    say "the root's logs are in $WORK/last-failure/"
  fi
  rm -rf --one-file-system "$RUN" 2>/dev/null || say "could not remove $RUN"
  say "done in $((SECONDS - T0)) s: exit $rc"
  exit "$rc"
}
trap finish EXIT
trap 'exit 130' INT TERM

git clone --quiet --no-hardlinks "$REPO" "$RUN/project"
git -C "$RUN/project" checkout --quiet --detach "$COMMIT"
say "clean clone of $COMMIT in $RUN/project"

ip netns add "$NS"
ip link add "$HOST_IF" type veth peer name "$CHILD_IF" netns "$NS"
ip addr add "$HOST_IP/30" dev "$HOST_IF"
ip link set "$HOST_IF" up
ip -n "$NS" link set lo up
ip -n "$NS" addr add "$CHILD_IP/30" dev "$CHILD_IF"
ip -n "$NS" link set "$CHILD_IF" up

node "$HERE/registry-proxy.mjs" "$HOST_IP" "$PROXY_PORT" >"$RUN/proxy.log" 2>&1 &
PROXY_PID=$!
for _ in $(seq 1 50); do grep -q listening "$RUN/proxy.log" && break; sleep 0.1; done

# nsenter, not `ip netns exec`: that one remounts /sys, and the cgroup mounts below it (podman's, in the
# image tests) would be gone from the new mount namespace
nsenter --net="/run/netns/$NS" -- unshare --mount --pid --uts --fork --propagation private -- \
  bash "$HERE/inner.sh" "$RUN" "$BASE" "http://$HOST_IP:$PROXY_PORT" "$CHILD_IF" &
INNER_PID=$!
rc=0
wait "$INNER_PID" || rc=$?
INNER_PID=
say "registry requests through the proxy: $(grep -cv listening "$RUN/proxy.log" || true)" \
    "($(grep -c refused "$RUN/proxy.log" || true) refused)"
grep refused "$RUN/proxy.log" | sed 's/^/  /' | head -20 || true
exit "$rc"
