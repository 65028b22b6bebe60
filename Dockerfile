# syntax=docker/dockerfile:1
# stackube-csi image: one image for the controller and the node plugin (`serve --mode ...`).
#   docker build -t ghcr.io/stackube/stackube-csi:$(node -p 'require("./package.json").version') .
# Base images are pinned to full versions; pin digests too in your registry mirror
# (docs/install.md). Both stages are Debian 12 (bookworm), so the Node binary copied from the
# build stage runs on the runtime's glibc.

# ---- build: compile TypeScript and bundle it with its production dependencies (esbuild) ----
FROM node:24.21.0-bookworm-slim AS build
WORKDIR /src
COPY package.json package-lock.json ./
# No install scripts: the `node` devDependency only pins Node for developer machines (this image
# has Node already) and `prepare` needs the sources, which are not copied yet.
RUN npm ci --ignore-scripts --no-audit --no-fund && rm -f node_modules/.bin/node
COPY . .
RUN npm run build

# ---- runtime: Debian slim with Node 24 and the host tools the node plugin runs ----
FROM debian:12.11-slim AS runtime
# ceph-common: rbd (the krbd mapper; the controller's changed block tracking) and python3-rados/-rbd (the node's Ceph session); rbd-nbd and rbd-fuse: the nbd and fuse mappers; fuse3:
# fusermount; mount: mount, umount, losetup; util-linux: blkid; e2fsprogs and xfsprogs: mkfs,
# resize2fs, xfs_growfs; kmod: modprobe for rbd/nbd; tini: PID 1 that reaps the mappers' children.
RUN apt-get update \
 && apt-get install -y --no-install-recommends \
      ca-certificates \
      ceph-common \
      rbd-nbd \
      rbd-fuse \
      fuse3 \
      mount \
      util-linux \
      e2fsprogs \
      xfsprogs \
      kmod \
      tini \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /usr/local/bin/node /usr/local/bin/node
WORKDIR /app
# The bundle (the driver and exactly the production dependencies it imports, no node_modules),
# the CSI proto it loads at start, the node's Ceph session helper (run by ceph-common's python3 with
# python3-rados and python3-rbd), and package.json, which marks the package root.
COPY --from=build /src/package.json ./package.json
COPY --from=build /src/proto ./proto
COPY --from=build /src/helpers ./helpers
COPY --from=build /src/dist/bundle ./dist/bundle
# The launcher runs Node with the V8 flags package.json names (stackube.nodeFlags, measured in
# bench/server-basics.ts). No --enable-source-maps: it costs ~14 MiB in every pod; set
# NODE_OPTIONS=--enable-source-maps to read a stack trace against the sources (the maps are here).
RUN printf '#!/bin/sh\nexec /usr/local/bin/node %s /app/dist/bundle/main.js "$@"\n' "$(/usr/local/bin/node -p "require('/app/package.json').stackube.nodeFlags.join(' ')")" > /usr/local/bin/stackube-csi \
 && chmod 0755 /usr/local/bin/stackube-csi \
 && stackube-csi version
# Non-root by default (the controller needs no privilege); the node DaemonSet runs it as root,
# privileged, because it maps block devices and mounts filesystems.
USER 65532:65532
ENV NODE_ENV=production
ENTRYPOINT ["/usr/bin/tini", "--", "/usr/local/bin/stackube-csi"]
CMD ["serve"]
