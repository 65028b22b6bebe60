import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { HOST_COMMANDS, PACKAGE_OF } from '../../../src/node/host/capabilities.js';
import { PACKAGE_ROOT } from '../../../src/package-info.js';

// No Docker engine runs here, so the image is not built in tests: this lints the Dockerfile's
// structure instead — pinned bases, what reaches the final image, the host tools it installs.

interface Instruction {
  cmd: string;
  args: string;
}
interface Stage {
  from: string;
  name?: string;
  steps: Instruction[];
}

/** Dockerfile → stages of instructions (comments dropped, `\` continuations joined). */
function parseDockerfile(text: string): Stage[] {
  const logical = text
    .replace(/\\\n/g, ' ')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  const stages: Stage[] = [];
  for (const line of logical) {
    const [, cmd = '', args = ''] = /^(\S+)\s*(.*)$/.exec(line)!;
    if (cmd.toUpperCase() === 'FROM') {
      const [, from = '', name] = /^(?:--\S+\s+)*(\S+)(?:\s+AS\s+(\S+))?$/i.exec(args)!;
      stages.push({ from, name, steps: [] });
    } else stages.at(-1)?.steps.push({ cmd: cmd.toUpperCase(), args });
  }
  return stages;
}

const text = readFileSync(join(PACKAGE_ROOT, 'Dockerfile'), 'utf8');
const stages = parseDockerfile(text);
const build = stages[0]!;
const runtime = stages.at(-1)!;
const runs = (s: Stage) => s.steps.filter((i) => i.cmd === 'RUN').map((i) => i.args.replace(/\s+/g, ' '));
const copies = (s: Stage) => s.steps.filter((i) => i.cmd === 'COPY').map((i) => i.args.split(/\s+/));

describe('Dockerfile', () => {
  test('two stages: build, then a runtime built from neither the sources nor the build tools', () => {
    expect(stages.map((s) => s.name)).toEqual(['build', 'runtime']);
  });

  test('base images are pinned to full versions (or digests), never `latest`', () => {
    for (const s of stages)
      expect([
        s.from,
        /(:[^:@]*\d+\.\d+[^:@]*|@sha256:[0-9a-f]{64})$/.test(s.from) && !/:latest\b/.test(s.from),
      ]).toEqual([s.from, true]);
  });

  test('Node 24 (package.json engines) on Debian 12 in both stages, so the copied node binary fits the runtime glibc', () => {
    const engines = (
      JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { engines: { node: string } }
    ).engines.node;
    const major = /(\d+)/.exec(engines)![1];
    expect(build.from).toMatch(new RegExp(`^node:${major}\\.\\d+\\.\\d+-bookworm-slim$`));
    expect(runtime.from).toMatch(/^debian:12\.\d+-slim$/);
    expect(copies(runtime)).toContainEqual(['--from=build', '/usr/local/bin/node', '/usr/local/bin/node']);
  });

  test('the build stage installs, then compiles and bundles (npm run build runs the bundler)', () => {
    const r = runs(build).join(' && ');
    const order = ['npm ci', 'npm run build'].map((c) => r.indexOf(c));
    expect(order.every((i) => i >= 0)).toBe(true);
    expect([...order].sort((a, b) => a - b)).toEqual(order);
    const scripts = (
      JSON.parse(readFileSync(join(PACKAGE_ROOT, 'package.json'), 'utf8')) as { scripts: Record<string, string> }
    ).scripts;
    expect(scripts.build).toMatch(/npm run bundle$/);
    // emptied first: chunks of an earlier build would otherwise ship too
    expect(scripts.bundle).toMatch(
      /^rm -rf dist\/bundle && esbuild dist\/src\/main\.js --bundle .*--outdir=dist\/bundle/,
    );
  });

  test('only production artifacts reach the final image', () => {
    const sources = copies(runtime).map((args) => {
      expect(args[0]).toBe('--from=build');
      return args[1];
    });
    // the bundle holds the production dependencies it imports: no node_modules, no dev tools
    expect(sources.sort()).toEqual([
      '/src/dist/bundle',
      '/src/helpers',
      '/src/package.json',
      '/src/proto',
      '/usr/local/bin/node',
    ]);
  });

  test('the runtime installs a package for every host tool the node plugin runs (kata-ctl / kata-runtime come from the host (/opt/kata))', () => {
    const install = runs(runtime).find((r) => r.includes('apt-get install'))!;
    expect(install).toContain('--no-install-recommends');
    expect(install).toContain('rm -rf /var/lib/apt/lists/*');
    const packages = install
      .slice(install.indexOf('apt-get install'))
      .split(/\s+/)
      .filter((w) => /^[a-z0-9][a-z0-9.+-]+$/.test(w));
    const needed = HOST_COMMANDS.map((c) => PACKAGE_OF[c].split(' ')[0]!);
    expect(needed.filter((p) => !packages.includes(p))).toEqual([]);
    // modprobe (kernel rbd/nbd probes), an init that reaps the mappers' daemons, CA roots for Keystone TLS
    expect(packages).toEqual(expect.arrayContaining(['kmod', 'tini', 'ca-certificates']));
  });

  test('non-root by default; exec-form ENTRYPOINT under tini running the CLI; `serve` by default', () => {
    const last = (cmd: string) => runtime.steps.filter((i) => i.cmd === cmd).at(-1)?.args;
    expect(last('USER')).toMatch(/^[1-9]\d*(:[1-9]\d*)?$/);
    expect(JSON.parse(last('ENTRYPOINT')!)).toEqual(['/usr/bin/tini', '--', '/usr/local/bin/stackube-csi']);
    expect(JSON.parse(last('CMD')!)).toEqual(['serve']);
    expect(runs(runtime).join(' ')).toContain('/app/dist/bundle/main.js');
  });
});

describe('.dockerignore', () => {
  const patterns = readFileSync(join(PACKAGE_ROOT, '.dockerignore'), 'utf8')
    .split('\n')
    .map((l) => l.trim())
    .filter((l) => l && !l.startsWith('#'));
  /** Docker's rule: the last matching pattern wins; `!` re-includes. Enough of it for plain paths and `*.ext`. */
  const ignored = (path: string) => {
    let out = false;
    for (const p of patterns) {
      const neg = p.startsWith('!');
      const pat = neg ? p.slice(1) : p;
      const re = new RegExp(`^${pat.replace(/[.+?^${}()|[\]\\]/g, '\\$&').replace(/\*/g, '[^/]*')}(/.*)?$`);
      if (re.test(path)) out = !neg;
    }
    return out;
  };

  test('keeps local state out of the build context', () => {
    for (const p of [
      'node_modules/x',
      '.git/HEAD',
      'dist/src/main.js',
      'src/csi/generated/csi.ts',
      'test/unit/x.test.ts',
      'deploy/local/up',
    ])
      expect([p, ignored(p)]).toEqual([p, true]);
  });

  test('keeps everything the build compiles', () => {
    const tsconfig = JSON.parse(readFileSync(join(PACKAGE_ROOT, 'tsconfig.build.json'), 'utf8')) as {
      include: string[];
    };
    for (const p of [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'tsconfig.build.json',
      'proto/csi.proto',
      ...tsconfig.include.map((d) => `${d}/x.ts`),
    ])
      expect([p, ignored(p)]).toEqual([p, false]);
  });
});
