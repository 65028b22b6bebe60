#!/usr/bin/env bash
# `npm run setup`: everything the tests and `npm start` need on this machine, and nothing else — npm
# packages (Node 24 among them), the compiled driver, deploy/local (its Debian packages, the guest
# kernel for the VM tests, the running stack) and the container image (npm run image; podman's layer
# cache makes an unchanged rebuild take seconds). Needs the registries only for what is missing.
# STACKUBE_NO_STACK=1 skips deploy/local and the image.
set -euo pipefail
cd "$(dirname "$0")/.."
[ -x node_modules/.bin/jest ] || npm ci
npm run --silent compile   # typecheck everything and emit dist/ (the CLI tests run it)
if [ "${STACKUBE_NO_STACK:-0}" != 1 ]; then
  deploy/local/up   # ~1 s when everything is there; otherwise says what it installs, creates or repairs
  bash scripts/image/build.sh >/dev/null
fi
