import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { pathToFileURL } from 'node:url';
import { parseArgs } from 'node:util';
import { ConfigError, loadConfig, SERVE_OPTIONS, type RawOptions } from './config.js';
import { createLogger } from './log.js';
import { DRIVER_NAME, PACKAGE_ROOT, VERSION } from './package-info.js';

const OPTIONS = `options (each has the environment twin shown):
${Object.values(SERVE_OPTIONS)
  .map(
    (o) =>
      `  --${o.flag.padEnd(28)} ${('env' in o ? o.env : '').padEnd(28)} ${o.help}${'alias' in o ? ` (also --${o.alias})` : ''}`,
  )
  .join('\n')}
`;

/** What `<command> --help` prints (call and demo answer their own). */
const COMMAND_HELP: Record<string, string> = {
  serve: `usage: stackube-csi serve [options]\n\nServe CSI (Identity, and Controller and/or Node by --mode) on --endpoint.\n\n${OPTIONS}`,
  doctor: `usage: stackube-csi doctor [options]\n\nCheck what this host offers the node role (tools, devices, kernel) and, with a --config, whether Keystone and Cinder answer. Exit 0 when nothing failed. Takes the options of serve.\n\n${OPTIONS}`,
  'mapper-host': `usage: stackube-csi mapper-host --socket PATH   (or MAPPER_HOST_SOCKET)\n\nThe node pod's long-lived home for rbd-fuse/rbd-nbd daemons: the plugin container asks it on PATH to start them, so a restart of the plugin leaves every mapping alone (deploy/kubernetes/node.yaml).\n`,
  fence: `usage: stackube-csi fence NODE [--reason TEXT] [options]\n\nDeclare NODE lost: every Ceph client its mappers registered is blocklisted and loses its image locks at once, and ControllerUnpublishVolume from NODE releases volumes only fenced (docs/failover.md). Needs --controller-ceph-conf and --fencing-ceph-id (the controller's). Prints what it fenced as JSON.\n`,
  unfence: `usage: stackube-csi unfence NODE [options]\n\nLift every fence of NODE (its blocklist entries and records) and the lost mark. Only for a node that is back and whose plugin has started again (its fenced stages are then torn down), or is gone for good (docs/failover.md).\n`,
  version: 'usage: stackube-csi version\n\nPrint the version.\n',
};

const USAGE = `stackube-csi ${VERSION} — CSI driver ${DRIVER_NAME}: OpenStack Cinder volumes on Ceph RBD

usage:
  stackube-csi serve [options]    serve CSI on --endpoint
  stackube-csi mapper-host --socket PATH   the node pod's home for mapper daemons (see deploy/kubernetes/node.yaml)
  stackube-csi doctor [options]   check what this host offers the node and controller roles
  stackube-csi call <RPC> [--json '{…}'] [--endpoint …]   one CSI call, JSON in and out (call --help)
  stackube-csi fence NODE [--reason TEXT]   declare a node lost: blocklist its Ceph clients now (docs/failover.md)
  stackube-csi unfence NODE       lift a node's fences once it is back and clean
  stackube-csi demo [--endpoint …]   walk a volume from Cinder into a VM and back (from a source checkout: npm run demo)
  stackube-csi version            print the version
  stackube-csi <command> --help   what one command does and takes

${OPTIONS}`;

function parseFlags(args: string[]): RawOptions {
  const specs = Object.values(SERVE_OPTIONS) as { flag: string; alias?: string; type: 'string' | 'boolean' }[];
  const options = Object.fromEntries(
    specs.flatMap((o) => [o.flag, ...(o.alias ? [o.alias] : [])].map((f) => [f, { type: o.type }])),
  );
  const { values, positionals } = parseArgs({ args, options, strict: true, allowPositionals: true });
  if (positionals.length) throw new ConfigError([`unexpected argument "${positionals[0]}"`]);
  const out: RawOptions = {};
  for (const [name, spec] of Object.entries(SERVE_OPTIONS) as [string, { flag: string; alias?: string }][]) {
    const v = values[spec.flag] ?? (spec.alias ? values[spec.alias] : undefined);
    if (v !== undefined) out[name as keyof RawOptions] = v;
  }
  return out;
}

async function serve(args: string[]): Promise<void> {
  const config = await loadConfig(parseFlags(args));
  const log = createLogger(config.logLevel);
  log.info({ version: VERSION, mode: config.mode, nodeId: config.nodeId, sources: config.sources }, 'starting');
  const { startDriver } = await import('./serve.js');
  const driver = await startDriver(config, log);
  let stopping = false;
  const onSignal = (sig: NodeJS.Signals) => {
    if (stopping) {
      log.warn({ signal: sig }, 'second signal: exiting now');
      process.exit(1);
    }
    stopping = true;
    log.info({ signal: sig }, 'shutting down');
    driver.stop().then(
      () => {
        log.flush();
        process.exitCode = 0;
        // Let pino drain its buffer; then nothing keeps the loop alive.
        setTimeout(() => process.exit(0), 100).unref();
      },
      (e: Error) => {
        log.error({ error: e.message }, 'shutdown failed');
        process.exit(1);
      },
    );
  };
  process.on('SIGTERM', onSignal);
  process.on('SIGINT', onSignal);
}

async function main(argv: string[]): Promise<number> {
  const [command, ...rest] = argv;
  const help = command !== undefined && COMMAND_HELP[command];
  if (help && (rest.includes('--help') || rest.includes('-h'))) {
    process.stdout.write(help);
    return 0;
  }
  switch (command) {
    case 'serve':
      await serve(rest);
      return -1; // keeps running
    case 'doctor': {
      // the node id is not needed to inspect a host; a bad config is one more finding, not the end
      const flags = { nodeId: 'doctor', ...parseFlags(rest) };
      const { runDoctor } = await import('./doctor.js');
      try {
        return await runDoctor(await loadConfig(flags));
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        for (const p of e.problems) process.stdout.write(`FAIL  config     ${p}\n`);
        await runDoctor(await loadConfig({ ...flags, mode: 'node', config: undefined }, {}));
        return 1;
      }
    }
    case 'mapper-host': {
      const socket = rest[0] === '--socket' ? rest[1] : process.env.MAPPER_HOST_SOCKET;
      if (!socket) throw new ConfigError(['mapper-host needs --socket PATH (or MAPPER_HOST_SOCKET)']);
      const log = createLogger(process.env.LOG_LEVEL ?? 'info');
      const { serveMapperHost } = await import('./node/mappers/mapper-host.js');
      const server = await serveMapperHost(socket, log);
      // it exits only when told to; the daemons it started stay with it until then
      for (const sig of ['SIGTERM', 'SIGINT'] as const) process.on(sig, () => server.close(() => process.exit(0)));
      return -1;
    }
    case 'internal-mount-group': {
      // not for users: the node plugin runs the fsGroup walk here, in a child, so a hung device under it
      // costs a timeout (and a killable process), never one of the plugin's I/O threads
      const [root, gid] = rest;
      if (!root || !/^\d+$/.test(gid ?? '')) return 2;
      const { applyMountGroup } = await import('./node/host/mount-commands.js');
      process.stdout.write(`${await applyMountGroup(root, Number(gid))}\n`);
      return 0;
    }
    case 'fence':
    case 'unfence': {
      const [node, ...more] = rest;
      if (!node || node.startsWith('-')) throw new ConfigError([`${command} needs a NODE (the Kubernetes node name)`]);
      const r = more.indexOf('--reason');
      const reason = r >= 0 ? more.splice(r, 2)[1] : undefined;
      // only the Ceph options matter: read as the node role does, which needs no cloud
      const config = await loadConfig({ ...parseFlags(more), mode: 'node', nodeId: 'fence' });
      if (!config.fencingCephId)
        throw new ConfigError([`${command} needs --fencing-ceph-id (FENCING_CEPH_ID) and --controller-ceph-conf`]);
      // logs to stderr: stdout is the JSON answer
      const { default: pino } = await import('pino');
      const log = createLogger(config.logLevel, pino.destination({ dest: 2, sync: true }));
      const { nodeFencing } = await import('./serve.js');
      const { isNodeName } = await import('./csi/controller/nodes.js');
      if (!isNodeName(node)) throw new ConfigError([`"${node.slice(0, 80)}" is no Kubernetes node name`]);
      const fencing = await nodeFencing(config, undefined, log);
      const out =
        command === 'fence'
          ? { node, fenced: await fencing.fenceNode(node, reason ?? 'stackube-csi fence') }
          : { node, unfenced: await fencing.unfence(node, { onlyReleased: false }) };
      process.stdout.write(`${JSON.stringify(out)}\n`);
      return 0;
    }
    case 'call': {
      const { runCall } = await import('./client/call.js');
      return runCall(rest);
    }
    case 'demo': {
      // the demo drives deploy/local and boots the e2e guest: it lives beside them in a source checkout, not in the
      // image
      const demo = join(PACKAGE_ROOT, 'dist', 'demo', 'main.js');
      if (!existsSync(demo))
        throw new ConfigError([
          `the demo runs from a source checkout (npm run demo), which has deploy/local and the test guest; ${demo} is not here`,
        ]);
      const { runDemo } = (await import(pathToFileURL(demo).href)) as { runDemo(args: string[]): Promise<number> };
      return runDemo(rest);
    }
    case 'version':
    case '--version':
      process.stdout.write(`${VERSION}\n`);
      return 0;
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(USAGE);
      return command ? 0 : 2;
    default:
      process.stderr.write(`stackube-csi: unknown command "${command}"\n\n${USAGE}`);
      return 2;
  }
}

main(process.argv.slice(2)).then(
  (code) => {
    if (code >= 0) process.exitCode = code;
  },
  (e: unknown) => {
    const msg = e instanceof ConfigError ? e.message : e instanceof Error ? e.message : String(e);
    process.stderr.write(`stackube-csi: ${msg}\n`);
    process.exit(e instanceof ConfigError || (e as { code?: string })?.code?.startsWith?.('ERR_PARSE_ARGS') ? 2 : 1);
  },
);
