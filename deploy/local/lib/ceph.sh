# Ceph 16 on one host: 1 mon, 1 mgr, 1 memstore OSD, cephx, everything on 127.0.0.1. Sourced by `up`/`down`.
# shellcheck shell=bash

cephc() { ceph -c "$CEPH_ADMIN_CONF" --connect-timeout 10 "$@"; }

# The cluster's own conf (daemons and the admin CLI). The driver gets a separate client conf.
ceph_write_conf() {
  local fsid=$1
  mkdir -p "$CEPH_STATE/data" "$RUN" "$LOG/ceph"
  cat >"$CEPH_ADMIN_CONF" <<CONF
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
public addr = 127.0.0.1
cluster addr = 127.0.0.1
auth cluster required = cephx
auth service required = cephx
auth client required = cephx
auth allow insecure global id reclaim = false
run dir = $RUN
crash dir = $LOG/ceph/crash
# one OSD: size-1 pools, no "no redundancy" warning, crush may place on one host
osd pool default size = 1
osd pool default min size = 1
osd pool default pg autoscale mode = off
osd crush chooseleaf type = 0
mon allow pool size one = true
mon allow pool delete = true
mon warn on pool no redundancy = false
mon max pg per osd = 1000
mon data avail warn = 2
mon data avail crit = 1
# default 1 s; 0.1 makes pool/snapshot operations about 10x faster
paxos propose interval = 0.1

[mon]
mon data = $CEPH_STATE/data/\$name
mon cluster log file = $LOG/ceph/cluster.log
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOG/ceph/\$name.log

[mgr]
mgr data = $CEPH_STATE/data/\$name
keyring = $CEPH_STATE/data/\$name/keyring
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOG/ceph/\$name.log

[osd]
osd data = $CEPH_STATE/data/\$name
keyring = $CEPH_STATE/data/\$name/keyring
pid file = $RUN/\$name.pid
admin socket = $RUN/\$name.asok
log file = $LOG/ceph/\$name.log
# memstore: objects live in the OSD's RAM (lost when it stops), no disk needed
osd objectstore = memstore
memstore device bytes = $(numfmt --from=iec "$CEPH_OSD_BYTES")
osd op num shards = 1
osd op num threads per shard = 2

[client]
# CLI clients need no admin socket (parallel calls would fight over one)
admin socket =

[client.admin]
keyring = $CEPH_STATE/admin.keyring
CONF
}

ceph_start_mon() { need_free_port 3300 6789; ceph-mon -c "$CEPH_ADMIN_CONF" -i a; }
ceph_start_mgr() { ceph-mgr -c "$CEPH_ADMIN_CONF" -i x; }
ceph_start_osd() { ceph-osd -c "$CEPH_ADMIN_CONF" -i 0; }

ceph_wait_osd_up() {
  for _ in $(seq 1 120); do
    cephc osd stat -f json | "$PY" -c 'import json,sys; sys.exit(json.load(sys.stdin)["num_up_osds"] != 1)' && return 0
    pid_alive osd.0 || { echo "osd.0 died; see $LOG/ceph/osd.0.log"; return 1; }
    sleep 0.5
  done
  echo "osd.0 not up after 60 s"; return 1
}

# Fresh cluster from nothing (the caller has stopped any old daemons and wiped $CEPH_STATE).
ceph_create() {
  local fsid osd_uuid osd_secret id
  fsid=$(uuidgen)
  ceph_write_conf "$fsid"
  mkdir -p "$CEPH_STATE/data/mon.a" "$CEPH_STATE/data/mgr.x" "$CEPH_STATE/data/osd.0"
  # keys and the monitor map
  ceph-authtool --create-keyring "$CEPH_STATE/mon.keyring" --gen-key -n mon. --cap mon 'allow *'
  ceph-authtool --create-keyring "$CEPH_STATE/admin.keyring" --gen-key -n client.admin \
    --cap mon 'allow *' --cap osd 'allow *' --cap mgr 'allow *' --cap mds 'allow *'
  chmod 600 "$CEPH_STATE/admin.keyring"
  ceph-authtool "$CEPH_STATE/mon.keyring" --import-keyring "$CEPH_STATE/admin.keyring"
  monmaptool --create --fsid "$fsid" --addv a '[v2:127.0.0.1:3300,v1:127.0.0.1:6789]' "$CEPH_STATE/monmap"
  ceph-mon -c "$CEPH_ADMIN_CONF" -i a --mkfs --monmap "$CEPH_STATE/monmap" --keyring "$CEPH_STATE/mon.keyring"
  rm -f "$CEPH_STATE/mon.keyring" "$CEPH_STATE/monmap"
  ceph_start_mon
  cephc -s >/dev/null
  echo "mon up"

  cephc auth get-or-create mgr.x mon 'allow profile mgr' osd 'allow *' mds 'allow *' \
    -o "$CEPH_STATE/data/mgr.x/keyring"
  ceph_start_mgr

  osd_uuid=$(uuidgen)
  osd_secret=$(ceph-authtool --gen-print-key)
  id=$(echo "{\"cephx_secret\": \"$osd_secret\"}" | cephc osd new "$osd_uuid" -i -)
  [ "$id" = 0 ] || { echo "expected osd id 0, got $id"; return 1; }
  ceph-authtool --create-keyring "$CEPH_STATE/data/osd.0/keyring" --name osd.0 --add-key "$osd_secret"
  ceph-osd -c "$CEPH_ADMIN_CONF" -i 0 --mkfs --osd-uuid "$osd_uuid"
  ceph_start_osd
  ceph_wait_osd_up
  echo "osd.0 up"

  cephc osd pool create "$CEPH_POOL" 8 8 replicated
  cephc osd pool set "$CEPH_POOL" size 1 --yes-i-really-mean-it
  # clone v2 (clones of unprotected snapshots, snapshot trash) needs mimic+ clients
  cephc osd set-require-min-compat-client mimic
  rbd -c "$CEPH_ADMIN_CONF" pool init "$CEPH_POOL"
  echo "pool $CEPH_POOL ready"
  ceph_client_files
  mark_created "$CEPH_STATE"
}

# The driver's view: a minimal client conf and the keyring of client.cinder, the same user
# Cinder's RBD backend uses (so attachment connection_info names `cinder`).
ceph_client_files() {
  local fsid
  fsid=$(cephc fsid)
  mkdir -p "$BASE/ceph"
  cephc auth get-or-create client.cinder \
    mon 'profile rbd' osd "profile rbd pool=$CEPH_POOL" mgr "profile rbd pool=$CEPH_POOL" \
    -o "$CEPH_KEYRING.new"
  chmod 600 "$CEPH_KEYRING.new"; mv "$CEPH_KEYRING.new" "$CEPH_KEYRING"
  # the controller's own identity (changed block tracking): reads block maps and snapshots, writes nothing
  cephc auth get-or-create "client.$CEPH_CONTROLLER_ID" \
    mon 'allow r' osd "profile rbd-read-only pool=$CEPH_POOL" \
    -o "$CEPH_CONTROLLER_KEYRING.new"
  chmod 600 "$CEPH_CONTROLLER_KEYRING.new"; mv "$CEPH_CONTROLLER_KEYRING.new" "$CEPH_CONTROLLER_KEYRING"
  # the controller's fencing identity (docs/failover.md): blocklists a lost node's clients and breaks their
  # image locks; reads images' ids, writes only image headers (locks) and the fencing records
  # (caps set apart from the key: a stack made by an earlier deploy/local gets the current ones)
  cephc auth get-or-create "client.$CEPH_FENCING_ID" >/dev/null
  cephc auth caps "client.$CEPH_FENCING_ID" \
    mon 'allow r, allow command "osd blocklist"' \
    osd "allow rx pool=$CEPH_POOL, allow rwx pool=$CEPH_POOL object_prefix rbd_header., allow rwx pool=$CEPH_POOL object_prefix stackube-csi.fencing." \
    2>/dev/null
  cephc auth get "client.$CEPH_FENCING_ID" -o "$CEPH_FENCING_KEYRING.new" 2>/dev/null
  chmod 600 "$CEPH_FENCING_KEYRING.new"; mv "$CEPH_FENCING_KEYRING.new" "$CEPH_FENCING_KEYRING"
  cat >"$CEPH_CONF.new" <<CONF
# Client configuration for the local stackube Ceph cluster (written by deploy/local/up).
# Usage: rbd -c $CEPH_CONF --id cinder ls $CEPH_POOL
[global]
fsid = $fsid
mon host = [v2:127.0.0.1:3300,v1:127.0.0.1:6789]
auth cluster required = cephx
auth service required = cephx
auth client required = cephx

[client]
admin socket =

[client.cinder]
keyring = $CEPH_KEYRING

[client.$CEPH_CONTROLLER_ID]
keyring = $CEPH_CONTROLLER_KEYRING

[client.$CEPH_FENCING_ID]
keyring = $CEPH_FENCING_KEYRING
CONF
  chmod 644 "$CEPH_CONF.new"; mv "$CEPH_CONF.new" "$CEPH_CONF"
}

# Remove the images a (now discarded) Cinder database made: clones first, then their parents.
ceph_purge_cinder_images() {
  local img snap imgs
  for _ in 1 2 3 4 5; do   # passes: a clone goes before its parent
    mapfile -t imgs < <(rbd -c "$CEPH_ADMIN_CONF" ls "$CEPH_POOL" | grep -E '^volume-' || true)
    [ ${#imgs[@]} -gt 0 ] || return 0
    for img in "${imgs[@]}"; do
      for snap in $(rbd -c "$CEPH_ADMIN_CONF" snap ls "$CEPH_POOL/$img" --format json |
                    "$PY" -c 'import json,sys; [print(s["name"]) for s in json.load(sys.stdin) if s.get("protected") == "true"]'); do
        rbd -c "$CEPH_ADMIN_CONF" snap unprotect "$CEPH_POOL/$img@$snap" || true
      done
      rbd -c "$CEPH_ADMIN_CONF" snap purge "$CEPH_POOL/$img" || true
      rbd -c "$CEPH_ADMIN_CONF" rm --no-progress "$CEPH_POOL/$img" || true
    done
  done
  rbd -c "$CEPH_ADMIN_CONF" trash purge "$CEPH_POOL" || true
}

# Stop the daemons by pid file. The memstore OSD is SIGKILLed: on a clean stop it would first
# write its whole RAM store to disk, only for us to delete it.
ceph_stop() {
  stop_pids KILL osd.0
  stop_pids TERM mgr.x mon.a
}
