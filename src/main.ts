#!/usr/bin/env node
// Entry point. First the Node.js it runs on: an older one (a system Node starting the bin) would fail on a
// missing export before any code ran, so nothing is imported statically. Then V8's on-disk compile cache,
// before any other module loads (start-up is part of every rollout and restart), then the CLI.
const NEEDED = 24;
if (Number(process.versions.node.split('.')[0]) < NEEDED) {
  process.stderr.write(
    `stackube-csi needs Node.js ${NEEDED} or newer, not ${process.version}: run it as npx stackube-csi … or npm start in a checkout after npm ci (which installs node@${NEEDED}), or put Node ${NEEDED} first on PATH\n`,
  );
  process.exit(1);
}
const { enableCompileCache } = await import('node:module');
enableCompileCache?.();
await import('./cli.js');
