import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { type Config, loadConfig, type RawOptions } from '../../src/config.js';
import { createLogger } from '../../src/log.js';
import { type DriverHooks, startDriver } from '../../src/serve.js';
import { csiClient, type CsiClient } from './csi-client.js';

/** Where deploy/local writes cloud.conf, clouds.yaml, secrets/ and ceph/. */
export const LOCAL = process.env.STACKUBE_LOCAL ?? '/var/tmp/stackube';

export interface TestDriverOptions {
  mode?: 'controller' | 'node' | 'all';
  /** Any other serve option (flag names as in SERVE_OPTIONS); --config defaults to deploy/local's cloud.conf. */
  options?: RawOptions;
  /** Environment the config is read with (OS_* and option twins); empty by default, so the host's does not leak in. */
  env?: NodeJS.ProcessEnv;
  hooks?: DriverHooks;
  logLevel?: string;
}

/** Every log line the driver wrote, as parsed JSON and as raw text (to check nothing secret leaked). */
export class LogCapture {
  readonly raw: string[] = [];

  write(line: string): void {
    this.raw.push(line);
  }

  get lines(): Record<string, unknown>[] {
    return this.raw.map((l) => JSON.parse(l) as Record<string, unknown>);
  }

  text(): string {
    return this.raw.join('');
  }
}

export interface TestDriver {
  client: CsiClient;
  endpoint: string;
  config: Config;
  logs: LogCapture;
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
    { config: `${LOCAL}/cloud.conf`, mode: o.mode ?? 'controller', endpoint, nodeId: 'test-node', stateDir: join(dir, 'state'), ...o.options },
    o.env ?? {},
  );
  const logs = new LogCapture();
  const driver = await startDriver(config, createLogger(o.logLevel ?? 'debug', logs), o.hooks);
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
