#!/usr/bin/env bash
# `npm run demo`: build, make sure deploy/local is up, then walk one volume from Cinder into a VM and
# back (demo/main.ts) against the driver `npm start` serves — started by the demo when none is.
# Arguments go to the demo (`npm run demo -- --help`).
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/tsc ] || npm ci
npm run --silent compile
deploy/local/status >/dev/null 2>&1 || deploy/local/up
exec node --enable-source-maps dist/demo/main.js "$@"
