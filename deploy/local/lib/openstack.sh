# Keystone (uwsgi) and Cinder (all-in-one process) on 127.0.0.1, both on SQLite in WAL mode.
# Sourced by `up`/`down`.
# shellcheck shell=bash

provision() { "$PY" "$LIB/provision.py" "$@"; }

# WAL (else readers and the writer fail with "database is locked"); --cascade: see lib/sqlite_prep.py
sqlite_prep() { "$PY" "$LIB/sqlite_prep.py" "$@"; }

wait_http() {   # wait_http URL SECONDS PIDNAME
  local i
  for i in $(seq 1 $(($2 * 5))); do
    curl -sf -o /dev/null --max-time 2 "$1" && return 0
    pid_alive "$3" || { echo "$3 exited"; return 1; }
    sleep 0.2
  done
  echo "$1 did not answer in $2 s"; return 1
}

# --- Keystone --------------------------------------------------------------------
keystone_write_conf() {
  mkdir -p "$KS_STATE" "$RUN" "$LOG"
  cat >"$KS_STATE/keystone.conf" <<EOC
[DEFAULT]
log_dir = $LOG
log_file = keystone.log
[database]
connection = sqlite:///$KS_STATE/keystone.db?check_same_thread=false
[fernet_tokens]
key_repository = $KS_STATE/fernet-keys
[credential]
key_repository = $KS_STATE/credential-keys
# keystone-manage bootstrap reads this too; its default (/etc/keystone/fernet-keys/) is not ours
[fernet_receipts]
key_repository = $KS_STATE/receipt-keys
[token]
provider = fernet
expiration = 86400
[identity]
# bcrypt's minimum cost (a throw-away test stack): its share of every password or
# application-credential token request (tests make many) drops from ~0.25 s to ~1 ms.
password_hash_rounds = 4
EOC
  cat >"$KS_STATE/uwsgi.ini" <<EOC
[uwsgi]
plugins = python3
http-socket = 127.0.0.1:5000
wsgi-file = /usr/bin/keystone-wsgi-public
master = true
processes = 1
threads = 8
lazy-apps = true
enable-threads = true
die-on-term = true
# workers die with the master (a SIGKILLed master must not leave port 5000 taken)
no-orphans = true
buffer-size = 65535
env = OS_KEYSTONE_CONFIG_FILES=$KS_STATE/keystone.conf
pidfile = $RUN/keystone.pid
daemonize2 = $LOG/keystone-uwsgi.log
EOC
}

keystone_create_db() {
  local km="keystone-manage --config-file $KS_STATE/keystone.conf" admin_pw
  rm -f "$KS_STATE/created"
  rm -rf "$KS_STATE/keystone.db"* "${KS_KEY_REPOS[@]/#/$KS_STATE/}"
  $km db_sync
  # What `keystone-manage fernet_setup` and `credential_setup` write (a staged key 0 and a primary
  # key 1, each a Fernet key), without three more ~2 s python start-ups.
  "$PY" - "$KS_STATE" "${KS_KEY_REPOS[@]}" <<'EOPY'
import base64, os, sys
for repo in sys.argv[2:]:
    d = os.path.join(sys.argv[1], repo)
    os.makedirs(d, mode=0o700)
    for name in ("0", "1"):
        with os.fdopen(os.open(os.path.join(d, name), os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "w") as f:
            f.write(base64.urlsafe_b64encode(os.urandom(32)).decode())
EOPY
  admin_pw=$(provision password admin)
  $km bootstrap --bootstrap-password "$admin_pw" --bootstrap-username admin \
    --bootstrap-project-name admin --bootstrap-role-name admin \
    --bootstrap-service-name keystone --bootstrap-region-id RegionOne \
    --bootstrap-admin-url "$KEYSTONE_URL" --bootstrap-public-url "$KEYSTONE_URL" \
    --bootstrap-internal-url "$KEYSTONE_URL"
  mark_created "$KS_STATE"
}

keystone_start() {
  need_free_port 5000
  sqlite_prep "$KS_STATE/keystone.db" --cascade
  rm -f "$RUN/keystone.pid"
  uwsgi --ini "$KS_STATE/uwsgi.ini"
  for _ in $(seq 1 50); do [ -s "$RUN/keystone.pid" ] && break; sleep 0.1; done
  wait_http "$KEYSTONE_URL" 60 keystone
}

# uwsgi's master stops at once on SIGINT (SIGTERM means "reload" to it).
keystone_stop() { stop_pids INT keystone; }

# --- Cinder ----------------------------------------------------------------------
cinder_write_conf() {
  local cinder_pw backends_csv
  cinder_pw=$(provision password cinder)
  backends_csv=$(IFS=,; echo "${BACKENDS[*]}")
  mkdir -p "$CINDER_STATE/lock" "$CINDER_STATE/coord" "$RUN" "$LOG"
  cat >"$CINDER_STATE/cinder.conf" <<EOC
[DEFAULT]
host = stackube
my_ip = 127.0.0.1
state_path = $CINDER_STATE
transport_url = fake:///
auth_strategy = keystone
osapi_volume_listen = 127.0.0.1
osapi_volume_listen_port = $CINDER_PORT
osapi_volume_workers = 1
api_paste_config = /etc/cinder/api-paste.ini
rootwrap_config = /etc/cinder/rootwrap.conf
enabled_backends = $backends_csv
default_volume_type = ${BACKENDS[0]}
default_group_type = $GROUP_TYPE
# heartbeats every 5 s, so a restarted process shows up quickly
report_interval = 5
periodic_interval = 10
scheduler_driver_init_wait_time = 3
# oslo.log's defaults, plus silence for a deprecation warning oslo.messaging logs on every RPC
default_log_levels = amqp=WARN,amqplib=WARN,sqlalchemy=WARN,oslo.messaging=INFO,oslo_messaging=INFO,oslo_messaging.rpc.client=ERROR,iso8601=WARN,urllib3.connectionpool=WARN,urllib3.util.retry=WARN,keystonemiddleware=WARN,routes.middleware=WARN,stevedore=WARN,taskflow=WARN,keystoneauth=WARN,oslo.cache=INFO,oslo_policy=INFO,dogpile.core.dogpile=INFO
[database]
connection = sqlite:///$CINDER_STATE/cinder.db
[oslo_concurrency]
lock_path = $CINDER_STATE/lock
[coordination]
backend_url = file://$CINDER_STATE/coord
[keystone_authtoken]
www_authenticate_uri = http://127.0.0.1:5000
auth_url = http://127.0.0.1:5000
auth_type = password
project_domain_name = Default
user_domain_name = Default
project_name = service
username = cinder
password = $cinder_pw
region_name = RegionOne

[ceph]
volume_driver = cinder.volume.drivers.rbd.RBDDriver
volume_backend_name = ceph
rbd_pool = $CEPH_POOL
# the driver's own client conf and user: connection_info then names user "cinder"
rbd_ceph_conf = $CEPH_CONF
rbd_user = cinder
rbd_secret_uuid = 5c5c5c5c-0000-4000-8000-000000000001
rbd_flatten_volume_from_snapshot = false
report_discard_supported = true
# thin images: the scheduler may promise far more than the memstore holds (csi-sanity's attach-limit spec
# and the 300-volume check create hundreds of empty 1 GiB volumes at once; the changed-block bench snapshots a
# 1 TiB one, and a snapshot counts as much again)
max_over_subscription_ratio = 400
reserved_percentage = 0
EOC
  chmod 600 "$CINDER_STATE/cinder.conf"
}

cinder_create_db() {
  rm -f "$CINDER_STATE/created" "$CINDER_STATE/cinder.db"*
  cinder-manage --config-file "$CINDER_STATE/cinder.conf" db sync
  sqlite_prep "$CINDER_STATE/cinder.db"
}

cinder_start() {
  need_free_port "$CINDER_PORT"
  setsid "$PY" "$LIB/cinder_aio.py" \
    --config-file "$CINDER_STATE/cinder.conf" --log-file "$LOG/cinder.log" \
    >>"$LOG/cinder.stdout.log" 2>&1 </dev/null &
  echo $! >"$RUN/cinder.pid"
  wait_http "http://127.0.0.1:$CINDER_PORT/" 60 cinder
}

cinder_stop() { stop_pids TERM cinder; }
