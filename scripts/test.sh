#!/usr/bin/env bash
# `npm test`: everything a fresh clone needs, then every test. Extra arguments go to jest
# (e.g. `npm test -- test/unit`). STACKUBE_NO_STACK=1 skips bringing up deploy/local.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/jest ] || npm ci
npm run --silent compile   # typecheck everything and emit dist/ (the CLI tests run it)
if [ "${STACKUBE_NO_STACK:-0}" != 1 ]; then
  deploy/local/status >/dev/null 2>&1 || deploy/local/up
fi
export NODE_OPTIONS="--experimental-vm-modules --no-warnings=ExperimentalWarning ${NODE_OPTIONS:-}"
exec node node_modules/jest/bin/jest.js "$@"
