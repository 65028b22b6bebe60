#!/usr/bin/env bash
# `npm run bench`: build, then run every benchmark (bench/*.ts → dist/bench/*.js). Each prints one JSON
# line on stdout and a table on stderr. `npm run bench -- node-stage` runs only the named ones.
# Benchmarks that need the local stack expect deploy/local to be healthy (deploy/local/status).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
for f in dist/bench/*.js; do
  name=$(basename "$f" .js)
  [ $# -gt 0 ] && [[ " $* " != *" $name "* ]] && continue
  node "$f"
done
