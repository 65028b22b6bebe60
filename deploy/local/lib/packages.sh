# Install the Debian packages the stack needs (only those missing). Sourced by `up`.
# shellcheck shell=bash

missing_packages() {
  local p
  for p in "${PACKAGES[@]}"; do
    dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || echo "$p"
  done
}

install_packages() {
  local missing=("$@") made_policy=0
  # No postinst may start a daemon (keystone, ceph, ...): we run our own, bound to 127.0.0.1.
  if [ ! -e /usr/sbin/policy-rc.d ]; then
    printf '#!/bin/sh\n# temporary, from deploy/local/up\nexit 101\n' >/usr/sbin/policy-rc.d
    chmod 755 /usr/sbin/policy-rc.d; made_policy=1
  fi
  export DEBIAN_FRONTEND=noninteractive
  apt-get -o DPkg::Lock::Timeout=900 update -qq
  apt-get -o DPkg::Lock::Timeout=900 install -y -q --no-install-recommends "${missing[@]}"
  [ $made_policy = 0 ] || rm -f /usr/sbin/policy-rc.d
}

# The Debian kernel the VM tests boot (harness/vm/assets.ts unpacks it, never installs it), downloaded
# here so that a test run needs no registry. Kept in $GUEST_DEBS until `down`.
guest_kernel_package() {
  apt-cache depends linux-image-amd64 2>/dev/null | sed -n 's/^ *Depends: \(linux-image-[^ ]*\)$/\1/p' | head -1
}
guest_kernel_present() { compgen -G "$GUEST_DEBS/linux-image-*.deb" >/dev/null; }

download_guest_kernel() {
  local pkg
  pkg=$(guest_kernel_package)
  if [ -z "$pkg" ]; then   # no package lists (cleaned after an install)
    apt-get -o DPkg::Lock::Timeout=900 update -qq
    pkg=$(guest_kernel_package)
    [ -n "$pkg" ] || { echo "apt-cache knows no linux-image-amd64"; return 1; }
  fi
  mkdir -p "$GUEST_DEBS"
  cd "$GUEST_DEBS"
  apt-get download -q "$pkg"
}
