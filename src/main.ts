#!/usr/bin/env node
// Entry point: turn on V8's on-disk compile cache before any other module loads (start-up is part of
// every rollout and restart), then run the CLI.
import { enableCompileCache } from 'node:module';

enableCompileCache?.();
await import('./cli.js');
