# Shared by deploy/local/{up,down,status,smoke}: paths, logging, step runner, pid helpers.
# shellcheck shell=bash

# --- paths -------------------------------------------------------------------
# Everything the stack writes lives under BASE; `down` removes BASE as a whole.
BASE=${STACKUBE_LOCAL:-/var/tmp/stackube}
BASE=${BASE%/}
HERE=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)   # deploy/local
LIB=$HERE/lib
PY=/usr/bin/python3           # Debian's python: the one with the OpenStack and Ceph modules

# The layout shared with lib/stack.py and harness/local-stack.ts: STATE (the stack's own state), RUN (pid
# files, admin sockets), LOG (every log `up` and the daemons write), CLOUD_CONF, SECRETS, CEPH_CONF, …
while IFS='=' read -r key value; do
  [[ $key =~ ^[A-Z_]+$ ]] && printf -v "$key" '%s' "${value//\$\{BASE\}/$BASE}"
done <"$HERE/layout.env"
CEPH_STATE=$STATE/ceph        # cluster conf with the admin keyring, mon/mgr/osd data
KS_STATE=$STATE/keystone
KS_KEY_REPOS=(fernet-keys credential-keys receipt-keys)   # under KS_STATE; lib/health.py checks them
CINDER_STATE=$STATE/cinder

# What the driver and its tests read (the interface; see README.md).
GUEST_DEBS=${STACKUBE_VM_CACHE:-$BASE/vm}/debs   # the VM tests' kernel package (harness/vm/assets.ts)
CINDER_PORT=${CINDER_URL##*:}; CINDER_PORT=${CINDER_PORT%%/*}
CEPH_OSD_BYTES=${STACKUBE_OSD_BYTES:-6G}   # memstore keeps every object in RAM, up to this much
BACKENDS=(ceph)                            # cinder backends; the first is the default volume type

# Packages `up` installs when missing.
PACKAGES=(ceph-mon ceph-mgr ceph-osd ceph-common rbd-fuse rbd-nbd python3-rbd python3-rados
  keystone cinder-api cinder-scheduler cinder-volume uwsgi-plugin-python3 python3-requests
  e2fsprogs xfsprogs util-linux kmod qemu-system-x86 qemu-utils busybox-static cpio xz-utils
  curl uuid-runtime gcc libc6-dev openssl)

ME="deploy/local/${0##*/}"

# Everything the stack talks to is on loopback: never through a proxy the environment may name for the
# package registries (curl, python-requests and the daemons started from here all honour no_proxy).
export no_proxy="127.0.0.1,localhost,::1${no_proxy:+,$no_proxy}" NO_PROXY="127.0.0.1,localhost,::1${NO_PROXY:+,$NO_PROXY}"

# --- output --------------------------------------------------------------------
T0=$EPOCHREALTIME
elapsed() { awk -v a="$T0" -v b="$EPOCHREALTIME" 'BEGIN{printf "%.1f", b-a}'; }
say() { echo "$ME: $*"; }
die() { echo "$ME: $*" >&2; exit 1; }

# step NAME LOGFILE COMMAND...  runs COMMAND (usually a function) in a subshell with errexit on,
# its output appended to LOGFILE. On failure it names the step and the log, and exits non-zero.
# (A function called as `f || handle` runs with errexit silently off; running it as a plain
# statement inside `set +e` keeps errexit working inside the step.)
step() {
  local name=$1 log=$2 rc; shift 2
  step_start "$name" "$log"
  set +e
  # fd 9 is the lock: daemons started by the step must not inherit it
  ( set -e; "$@" ) >>"$log" 2>&1 </dev/null 9>&-
  rc=$?
  set -e
  [ $rc -eq 0 ] || step_failed "$name" "$log" $rc
}
step_start() {
  mkdir -p "$(dirname "$2")"
  echo "=== $(date -Is) step $1" >>"$2"
}
# Name the step and its log, show the step's last lines, exit with its status (after any other
# background step has finished, so nothing of this run keeps going once `up` has returned).
step_failed() {
  echo "$ME: step '$1' failed; see $2" >&2
  awk -v m="=== .* step $1\$" '$0 ~ m {n=NR; k=0} NF && n {l[++k]=$0} END {for (i=(k>4?k-3:1); i<=k; i++) print "    " l[i]}' "$2" >&2
  wait || true
  exit "$3"
}

# step_bg NAME LOGFILE COMMAND...: the same, in the background; step_wait NAME collects it.
# Independent steps (Ceph, Keystone's and Cinder's databases) overlap so bring-up stays short.
declare -A STEP_PID STEP_LOG
step_bg() {
  local name=$1 log=$2; shift 2
  step_start "$name" "$log"
  ( set -e; "$@" ) >>"$log" 2>&1 </dev/null 9>&- &
  STEP_PID[$name]=$!; STEP_LOG[$name]=$log
}
step_wait() {
  local name=$1 rc=0
  [ -n "${STEP_PID[$name]:-}" ] || return 0   # not started, or already collected
  wait "${STEP_PID[$name]}" || rc=$?
  unset "STEP_PID[$name]"
  [ $rc -eq 0 ] || step_failed "$name" "${STEP_LOG[$name]}" $rc
}

# --- processes -------------------------------------------------------------------
# pid_of NAME: print the pid recorded in $RUN/NAME.pid if that process is ours and running: its command
# line names our state dir (so a stale pid file, e.g. after a reboot, never points at a stranger)
# and it is not a zombie.
pid_of() {
  local f=$RUN/$1.pid pid
  [ -s "$f" ] || return 1
  pid=$(<"$f")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  { tr '\0' ' ' <"/proc/$pid/cmdline"; } 2>/dev/null | grep -qF "$STATE/" || return 1
  running "$pid" && echo "$pid"
}
# running PID: exists and is not a zombie (an unreaped dead process still answers kill -0)
running() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1)
  [ -n "$st" ] && [ "$st" != Z ]
}
pid_alive() { pid_of "$1" >/dev/null; }

# stop_pids SIGNAL NAME...: signal each recorded process, wait up to 15 s, then SIGKILL.
# Only processes from our own pid files are ever touched.
stop_pids() {
  local sig=$1 name pid pids=() i alive; shift
  for name in "$@"; do
    if pid=$(pid_of "$name"); then
      kill "-$sig" "$pid" 2>/dev/null || true
      pids+=("$pid")
    fi
    rm -f "$RUN/$name.pid"
  done
  [ ${#pids[@]} -gt 0 ] || return 0
  for i in $(seq 1 150); do
    alive=0
    for pid in "${pids[@]}"; do running "$pid" && alive=1; done
    [ $alive = 0 ] && return 0
    sleep 0.1
  done
  for pid in "${pids[@]}"; do kill -KILL "$pid" 2>/dev/null || true; done
}

# need_free_port PORT...: fail clearly when something (another stack?) already listens there.
need_free_port() {
  local port
  for port in "$@"; do
    if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
      echo "127.0.0.1:$port is already taken (another stack with a different STACKUBE_LOCAL?):"
      { command -v ss >/dev/null && ss -ltnp "sport = :$port"; } || true
      return 1
    fi
  done
}

# One `up`/`down` at a time per BASE (npm test may race with a developer's shell).
# The lock lives outside BASE because `down` deletes BASE.
take_lock() {
  local lock
  lock=${TMPDIR:-/tmp}/stackube-$(printf %s "$BASE" | md5sum | cut -c1-8).lock
  exec 9>"$lock"
  flock -w 900 9 || die "another deploy/local command holds $lock"
}

# mark_created DIR: the last act of creating a part (Ceph, Keystone, Cinder). A part whose state exists
# without this record was cut short (a killed or failed `up`) and is rebuilt, never trusted.
mark_created() { date -Is >"$1/created.tmp" && mv "$1/created.tmp" "$1/created"; }

require_root() { [ "$(id -u)" = 0 ] || die "must run as root (it installs packages and mounts)"; }
