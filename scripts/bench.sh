#!/usr/bin/env bash
# `npm run bench`: build, make sure deploy/local is up, run every benchmark (bench/*.ts → dist/bench/*.js);
# each prints one JSON line on stdout and a table on stderr. `npm run bench -- server-basics` runs one.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/tsc ] || npm ci
npm run --silent compile
deploy/local/status >/dev/null 2>&1 || deploy/local/up
for f in dist/bench/*.js; do
  name=$(basename "$f" .js)
  [ "$name" = report ] && continue
  [ $# -gt 0 ] && [[ " $* " != *" $name "* ]] && continue
  node "$f"
done
