import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { PACKAGE_ROOT } from '../../src/package-info.js';

/**
 * The layering the design names, read from the sources: no import circle anywhere in src/, and no
 * import across a line the design draws (the node never reaches the CSI layer or OpenStack, the CSI
 * layer never speaks HTTP, OpenStack never speaks gRPC, nothing imports the entry points, shipped code
 * never imports test/). `import type` counts too: a circle of types is still a circle to read.
 */
const SHIPPED = ['src', 'harness', 'demo', 'bench'];

function filesUnder(dir: string): string[] {
  return readdirSync(join(PACKAGE_ROOT, dir), { withFileTypes: true }).flatMap((e) => {
    const rel = join(dir, e.name);
    if (e.isDirectory()) return rel === 'src/csi/generated' ? [] : filesUnder(rel);
    return e.name.endsWith('.ts') ? [rel] : [];
  });
}

/** Every module a file imports (statically or with import()), as a path from the package root or a bare name. */
function importsOf(file: string): string[] {
  const text = readFileSync(join(PACKAGE_ROOT, file), 'utf8');
  const specs = [
    ...text.matchAll(/(?:^|\n)\s*(?:import|export)[^'"]*?from\s*'([^']+)'|import\(\s*'([^']+)'\s*\)/g),
  ].map((m) => m[1] ?? m[2]!);
  return specs.map((s) =>
    s.startsWith('.') ? relative(PACKAGE_ROOT, resolve(PACKAGE_ROOT, dirname(file), s)).replace(/\.js$/, '.ts') : s,
  );
}

const graph = new Map(SHIPPED.flatMap(filesUnder).map((f) => [f, importsOf(f)]));
const test_ = filesUnder('test').map((f) => [f, importsOf(f)] as const);

/** The circles among `files`, each once, as the path round it. */
function circles(files: string[]): string[][] {
  const inScope = new Set(files);
  const found = new Map<string, string[]>();
  const state = new Map<string, 'open' | 'done'>();
  const stack: string[] = [];
  const visit = (f: string) => {
    state.set(f, 'open');
    stack.push(f);
    for (const to of graph.get(f) ?? []) {
      if (!inScope.has(to)) continue;
      if (state.get(to) === 'open') {
        const loop = stack.slice(stack.indexOf(to));
        found.set([...loop].sort().join(' '), [...loop, to]);
      } else if (!state.has(to)) visit(to);
    }
    stack.pop();
    state.set(f, 'done');
  };
  for (const f of files) if (!state.has(f)) visit(f);
  return [...found.values()];
}

/** Imports of files under one of `from` that reach `to` (a folder or file of the package, or a package name). */
function crossings(from: string[], to: string[]): string[] {
  return [...graph]
    .filter(([f]) => from.some((prefix) => f.startsWith(prefix)))
    .flatMap(([f, deps]) =>
      deps.filter((d) => to.some((t) => d === t || d.startsWith(`${t}/`))).map((d) => `${f} → ${d}`),
    );
}

test('no import circle anywhere in src/', () => {
  const src = [...graph.keys()].filter((f) => f.startsWith('src/'));
  expect(src.length).toBeGreaterThan(80);
  expect(circles(src).map((c) => c.join(' → '))).toEqual([]);
});

test('the checker reads the imports it judges (static, type-only and dynamic)', () => {
  expect(crossings(['src/csi/node.ts'], ['src/node/volumes/node-volumes.ts'])).toHaveLength(1); // import type
  expect(crossings(['src/serve.ts'], ['src/node/host/kubelet-paths.ts'])).toHaveLength(1); // import()
  expect(crossings(['src/csi/'], ['src/node']).length).toBeGreaterThan(3);
});

test('the checker sees a circle when there is one', () => {
  graph.set('src/x-a.ts', ['src/x-b.ts']);
  graph.set('src/x-b.ts', ['src/x-a.ts']);
  try {
    expect(circles(['src/x-a.ts', 'src/x-b.ts'])).toEqual([['src/x-a.ts', 'src/x-b.ts', 'src/x-a.ts']]);
  } finally {
    graph.delete('src/x-a.ts');
    graph.delete('src/x-b.ts');
  }
});

test.each([
  [
    'the node layer never reaches the CSI layer, OpenStack or the gRPC server',
    ['src/node/'],
    ['src/csi', 'src/openstack', 'src/server', '@grpc/grpc-js'],
  ],
  [
    "the controller's Ceph seam stands alone",
    ['src/ceph/'],
    ['src/csi', 'src/openstack', 'src/server', 'src/node', '@grpc/grpc-js', 'undici'],
  ],
  ["the node maps images its own way, never through the controller's Ceph identity", ['src/node/'], ['src/ceph']],
  ['the CSI layer never speaks HTTP', ['src/csi/'], ['undici', 'node:http', 'node:https', 'src/openstack/http.ts']],
  [
    'the OpenStack layer never speaks gRPC nor reaches the CSI layer',
    ['src/openstack/'],
    ['@grpc/grpc-js', 'src/csi', 'src/server'],
  ],
  [
    "fencing's records are shared by the controller's Ceph module and the node: they import no layer",
    ['src/fencing-records.ts'],
    ['src/csi', 'src/node', 'src/ceph', 'src/openstack', 'src/server', 'node:child_process'],
  ],
  [
    'the vocabulary is host-free and imports nothing',
    ['src/vocabulary.ts'],
    ['node:fs', 'node:fs/promises', 'node:child_process', 'src'],
  ],
  [
    'the layers never import the entry points',
    ['src/csi/', 'src/node/', 'src/openstack/', 'src/server/', 'src/kube/', 'src/client/'],
    ['src/main.ts', 'src/cli.ts', 'src/serve.ts'],
  ],
  ['src never imports the harness, the demo or the benchmarks', ['src/'], ['harness', 'demo', 'bench']],
  ['shipped code never imports test/', [''], ['test']],
])('%s', (_rule, from, to) => {
  expect(crossings(from, to)).toEqual([]);
});

test('tests import the shipped code only through files that exist', () => {
  const missing = test_.flatMap(([f, deps]) =>
    deps.filter((d) => /^(src|harness)\//.test(d) && !graph.has(d)).map((d) => `${f} → ${d}`),
  );
  expect(missing).toEqual([]);
});
