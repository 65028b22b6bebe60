import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Config, loadConfig, type RawOptions } from '../src/config.js';
import { type DriverHooks, startDriver } from '../src/serve.js';
import { csiClient, type CsiClient } from '../src/client/csi-client.js';
import { CLOUD_CONF } from './local-stack.js';
import { capturedLogger } from './log-capture.js';

export interface TestDriverOptions {
  mode?: 'controller' | 'node' | 'all';
  /** Any other serve option (flag names as in SERVE_OPTIONS); --config defaults to deploy/local's cloud.conf. */
  options?: RawOptions;
  /** Environment the config is read with (OS_* and option twins); empty by default, so the host's does not leak in. */
  env?: NodeJS.ProcessEnv;
  hooks?: DriverHooks;
  logLevel?: string;
}

export interface TestDriver {
  client: CsiClient;
  endpoint: string;
  config: Config;
  /** Every log line the driver wrote (to check, e.g., that nothing secret leaked). */
  logs: { text(): string; lines(): Record<string, unknown>[] };
  stop(): Promise<void>;
}

/**
 * Start the driver in this process on a fresh unix socket, configured like `serve` would be, and a
 * client for it. Stop it when done (afterAll): the socket's directory is removed with it.
 */
export async function startTestDriver(o: TestDriverOptions = {}): Promise<TestDriver> {
  const dir = await mkdtemp(join(tmpdir(), 'stackube-csi-test-'));
  const endpoint = `unix://${dir}/csi.sock`;
  const config = await loadConfig(
    // calls without secrets act as cloud.conf's tenant-a unless a test says otherwise (the tenant tests do)
    {
      config: CLOUD_CONF,
      mode: o.mode ?? 'controller',
      endpoint,
      nodeId: 'test-node',
      stateDir: join(dir, 'state'),
      allowDefaultCredential: true,
      ...o.options,
    },
    o.env ?? {},
  );
  const { log, text, lines } = capturedLogger(o.logLevel ?? 'debug');
  const logs = { text, lines };
  const driver = await startDriver(config, log, o.hooks);
  const client = csiClient(endpoint);
  return {
    client,
    endpoint,
    config,
    logs,
    stop: async () => {
      client.close();
      await driver.stop(1000);
      await rm(dir, { recursive: true, force: true });
    },
  };
}
