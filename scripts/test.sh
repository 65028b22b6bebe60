#!/usr/bin/env bash
# `npm test`: the set-up (scripts/setup.sh), then every test. Extra arguments go to jest
# (e.g. `npm test -- test/unit`). STACKUBE_NO_STACK=1 skips bringing up deploy/local.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export NODE_OPTIONS="--experimental-vm-modules --no-warnings=ExperimentalWarning ${NODE_OPTIONS:-}"
exec node node_modules/jest/bin/jest.js "$@"
