#!/usr/bin/env bash
# `npm run test:unit`: the unit tier alone — no stack, no image, no build; in parallel. Needs only `npm ci`.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/jest ] || npm ci
export NODE_OPTIONS="--experimental-vm-modules --no-warnings=ExperimentalWarning ${NODE_OPTIONS:-}"
start=$(date +%s)
node node_modules/jest/bin/jest.js --maxWorkers=2 test/unit "$@"
echo "test:unit: $(($(date +%s) - start)) s" >&2
