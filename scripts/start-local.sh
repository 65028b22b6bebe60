#!/usr/bin/env bash
# `npm start`: bring up deploy/local when it is not running, build, and serve --mode all against its
# files. Every environment twin (CSI_MODE, CSI_ENDPOINT, NODE_ID, KUBELET_ROOT, …) overrides a default.
# STACKUBE_BUILT=1: dist/ is fresh (the demo compiled it), skip the build.
set -euo pipefail
cd "$(dirname "$0")/.."
LOCAL=${STACKUBE_LOCAL:-/var/tmp/stackube}
[ -x node_modules/.bin/tsc ] || npm ci
deploy/local/status >/dev/null 2>&1 || deploy/local/up
[ "${STACKUBE_BUILT:-0}" = 1 ] || npm run --silent build
export CSI_MODE=${CSI_MODE:-all}
export CSI_ENDPOINT=${CSI_ENDPOINT:-unix://$LOCAL/csi/csi.sock}
export NODE_ID=${NODE_ID:-$(hostname)}
export KUBELET_ROOT=${KUBELET_ROOT:-$LOCAL/kubelet}
export CSI_CONFIG=${CSI_CONFIG:-$LOCAL/cloud.conf}
# single-tenant convenience: calls without secrets act as cloud.conf's tenant-a (a deployment leaves this off)
export ALLOW_DEFAULT_CREDENTIAL=${ALLOW_DEFAULT_CREDENTIAL:-true}
export CEPH_KEYRING=${CEPH_KEYRING:-$LOCAL/ceph/keyring}
export CEPH_CONF=${CEPH_CONF:-$LOCAL/ceph/ceph.conf}
# changed block tracking (SnapshotMetadata) as the controller's read-only Ceph identity; its keyring is in the conf
export CONTROLLER_CEPH_CONF=${CONTROLLER_CEPH_CONF:-$LOCAL/ceph/ceph.conf}
# fencing of lost nodes (stackube-csi fence NODE; docs/failover.md) as the fencing identity, keyring in the conf
export FENCING_CEPH_ID=${FENCING_CEPH_ID:-stackube-fencing}
export CSI_STATE_DIR=${CSI_STATE_DIR:-$LOCAL/csi-state}
export KATA_DIRECT_VOLUME_ROOT=${KATA_DIRECT_VOLUME_ROOT:-$LOCAL/kata-direct-volumes}
export METRICS_ADDRESS=${METRICS_ADDRESS:-127.0.0.1:9808}
mkdir -p "$KUBELET_ROOT"
echo "stackube-csi: serving $CSI_MODE on $CSI_ENDPOINT (node $NODE_ID, kubelet root $KUBELET_ROOT, metrics http://$METRICS_ADDRESS/metrics)" >&2
# the V8 flags the image runs with (package.json stackube.nodeFlags); NODE_OPTIONS=--enable-source-maps for stack traces against the sources
exec node $(node -p "require('./package.json').stackube.nodeFlags.join(' ')") dist/bundle/main.js serve "$@"
