#!/usr/bin/env bash
# `npm run bench`: build, then run every benchmark in dist/bench/ in turn. Each prints a table on
# stderr and one JSON document on stdout; stdout of all of them together is a JSON-lines stream.
# Needs the local stack (deploy/local) up. Extra arguments select benchmarks by name (controller …).
set -euo pipefail
cd "$(dirname "$0")/.."
npm run --silent build
shopt -s nullglob
benches=(dist/bench/*.js)
[ ${#benches[@]} -gt 0 ] || { echo "no benchmarks in dist/bench/" >&2; exit 1; }
status=0
for b in "${benches[@]}"; do
  name=$(basename "$b" .js)
  if [ $# -gt 0 ] && [[ " $* " != *" $name "* ]]; then continue; fi
  echo "== $name" >&2
  node "$b" || { echo "== $name FAILED" >&2; status=1; }
done
exit $status
