import { execFile } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { join, relative } from 'node:path';
import { promisify } from 'node:util';
import { runValidateFunc, type ValidateFunc } from '@kubernetes-models/validate';
import { parseAllDocuments } from 'yaml';
import { z } from 'zod';
import { PACKAGE_ROOT } from '../../src/package-info.js';

/** A Kubernetes object as read from YAML; the fields the tests look into are typed loosely on purpose. */
export interface Manifest {
  apiVersion: string;
  kind: string;
  metadata: { name: string; namespace?: string; labels?: Record<string, string>; annotations?: Record<string, string> };
  [field: string]: any;
}

export interface LoadedManifest {
  /** file (relative to the package root) and document index, for messages */
  source: string;
  doc: Manifest;
}

/** Every .yaml/.yml file under dir, sorted, as paths relative to the package root. */
export function yamlFiles(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const e of readdirSync(d, { withFileTypes: true })) {
      const p = join(d, e.name);
      if (e.isDirectory()) walk(p);
      else if (/\.ya?ml$/.test(e.name)) out.push(relative(PACKAGE_ROOT, p));
    }
  };
  walk(join(PACKAGE_ROOT, dir));
  return out.sort();
}

/** The documents of a multi-document YAML text; a syntax error names its source. */
export function parseManifests(text: string, source: string): LoadedManifest[] {
  return parseAllDocuments(text).flatMap((d, i) => {
    if (d.errors.length) throw new Error(`${source} document ${i}: ${d.errors[0]!.message}`);
    const doc = d.toJS() as Manifest | null;
    return doc === null ? [] : [{ source: `${source}#${i}`, doc }];
  });
}

export function loadManifests(files: string[]): LoadedManifest[] {
  return files.flatMap((f) => parseManifests(readFileSync(join(PACKAGE_ROOT, f), 'utf8'), f));
}

const execFileP = promisify(execFile);

/**
 * `kubectl kustomize dir` → the objects a cluster would receive. kubectl is required: without it
 * this throws a message saying how to get it, so a test that needs the render fails loudly.
 */
export async function renderKustomize(
  dir: string,
  kubectl = process.env.KUBECTL ?? 'kubectl',
): Promise<LoadedManifest[]> {
  let stdout: string;
  try {
    ({ stdout } = await execFileP(kubectl, ['kustomize', join(PACKAGE_ROOT, dir)], { maxBuffer: 16 << 20 }));
  } catch (e) {
    const err = e as NodeJS.ErrnoException & { stderr?: string };
    if (err.code === 'ENOENT')
      throw new Error(
        `"${kubectl}" not found: the deploy tests need kubectl (with its built-in kustomize) on PATH, or KUBECTL=/path/to/kubectl`,
      );
    throw new Error(`kubectl kustomize ${dir} failed: ${err.stderr?.trim() || err.message}`);
  }
  return parseManifests(stdout, `kustomize(${dir})`);
}

// ---- schema validation ----

/**
 * kubernetes-models' generated schema module for apiVersion + kind, e.g. apps/v1 DaemonSet → IoK8sApiAppsV1DaemonSet.
 */
function schemaModuleName(apiVersion: string, kind: string): string {
  const [group, version] = apiVersion.includes('/') ? (apiVersion.split('/') as [string, string]) : ['', apiVersion];
  const cap = (s: string) => s.charAt(0).toUpperCase() + s.slice(1);
  return `IoK8sApi${group === '' ? 'Core' : cap(group.split('.')[0]!)}${cap(version)}${kind}`;
}

/**
 * Wraps a parsed document so that every property the schema validator reads is recorded. The
 * generated validators read each property their schema knows; whatever they never read is a field
 * the API server would reject under strict field validation (a typo like `mountPropagaton`).
 */
function trackReads(root: unknown): { proxy: unknown; read: Set<string> } {
  const read = new Set<string>();
  const wrap = (value: unknown, path: string): unknown =>
    value === null || typeof value !== 'object'
      ? value
      : new Proxy(value, {
          get(target, key, receiver) {
            const v = Reflect.get(target, key, receiver);
            if (typeof key !== 'string' || !Object.hasOwn(target, key)) return v;
            read.add(`${path}/${key}`);
            return wrap(v, `${path}/${key}`);
          },
        });
  return { proxy: wrap(root, ''), read };
}

/** Object keys (array indices excluded) never read; only the outermost of an unknown subtree. */
function unreadFields(value: unknown, read: Set<string>, path = ''): string[] {
  if (value === null || typeof value !== 'object') return [];
  if (Array.isArray(value)) return value.flatMap((v, i) => unreadFields(v, read, `${path}/${i}`));
  return Object.entries(value).flatMap(([k, v]) =>
    read.has(`${path}/${k}`) ? unreadFields(v, read, `${path}/${k}`) : [`${path}/${k}`],
  );
}

const dnsSubdomain = z.string().regex(/^[a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?$/, 'must be a DNS subdomain name');
const crdMetadata = z
  .object({
    name: dnsSubdomain,
    namespace: dnsSubdomain.optional(),
    labels: z.record(z.string(), z.string()).optional(),
    annotations: z.record(z.string(), z.string()).optional(),
  })
  .strict();

const labelSelector = z
  .object({
    matchLabels: z.record(z.string(), z.string()).optional(),
    matchExpressions: z
      .array(
        z
          .object({
            key: z.string(),
            operator: z.enum(['In', 'NotIn', 'Exists', 'DoesNotExist']),
            values: z.array(z.string()).optional(),
          })
          .strict(),
      )
      .optional(),
  })
  .strict();

/**
 * The external-snapshotter v8 CRDs (snapshot.storage.k8s.io/v1, groupsnapshot.storage.k8s.io/v1) ship no
 * model in any npm package, so their documented fields are written here, strictly (unknown fields fail).
 */
const CRD_SCHEMAS: Record<string, z.ZodType> = {
  // kubernetes-csi/external-snapshot-metadata v1.0.0 (changed block tracking), cluster-scoped
  'cbt.storage.k8s.io/v1beta1 SnapshotMetadataService': z
    .object({
      apiVersion: z.literal('cbt.storage.k8s.io/v1beta1'),
      kind: z.literal('SnapshotMetadataService'),
      metadata: crdMetadata,
      spec: z
        .object({
          address: z.string().regex(/^[^/:]+:\d+$/, 'host:port, no scheme'),
          audience: z.string().min(1),
          caCert: z.string().regex(/^[A-Za-z0-9+/]+=*$/, 'base64'),
        })
        .strict(),
    })
    .strict(),
  'groupsnapshot.storage.k8s.io/v1 VolumeGroupSnapshotClass': z
    .object({
      apiVersion: z.literal('groupsnapshot.storage.k8s.io/v1'),
      kind: z.literal('VolumeGroupSnapshotClass'),
      metadata: crdMetadata,
      driver: z.string().min(1),
      deletionPolicy: z.enum(['Delete', 'Retain']),
      parameters: z.record(z.string(), z.string()).optional(),
    })
    .strict(),
  'groupsnapshot.storage.k8s.io/v1 VolumeGroupSnapshot': z
    .object({
      apiVersion: z.literal('groupsnapshot.storage.k8s.io/v1'),
      kind: z.literal('VolumeGroupSnapshot'),
      metadata: crdMetadata,
      spec: z
        .object({
          volumeGroupSnapshotClassName: z.string().min(1).optional(),
          source: z.union([
            z.object({ selector: labelSelector }).strict(),
            z.object({ volumeGroupSnapshotContentName: z.string().min(1) }).strict(),
          ]),
        })
        .strict(),
    })
    .strict(),
  'snapshot.storage.k8s.io/v1 VolumeSnapshotClass': z
    .object({
      apiVersion: z.literal('snapshot.storage.k8s.io/v1'),
      kind: z.literal('VolumeSnapshotClass'),
      metadata: crdMetadata,
      driver: z.string().min(1),
      deletionPolicy: z.enum(['Delete', 'Retain']),
      parameters: z.record(z.string(), z.string()).optional(),
    })
    .strict(),
  'snapshot.storage.k8s.io/v1 VolumeSnapshot': z
    .object({
      apiVersion: z.literal('snapshot.storage.k8s.io/v1'),
      kind: z.literal('VolumeSnapshot'),
      metadata: crdMetadata,
      spec: z
        .object({
          volumeSnapshotClassName: z.string().min(1).optional(),
          source: z.union([
            z.object({ persistentVolumeClaimName: z.string().min(1) }).strict(),
            z.object({ volumeSnapshotContentName: z.string().min(1) }).strict(),
          ]),
        })
        .strict(),
    })
    .strict(),
};

/** What is wrong with a document against the Kubernetes API schema of its kind; [] when valid. */
export async function schemaProblems(doc: Manifest): Promise<string[]> {
  if (typeof doc?.apiVersion !== 'string' || typeof doc.kind !== 'string') return ['apiVersion and kind are required'];
  const problems: string[] = [];
  if (typeof doc.metadata?.name !== 'string' || !doc.metadata.name) problems.push('metadata.name is required');

  const crd = CRD_SCHEMAS[`${doc.apiVersion} ${doc.kind}`];
  if (crd) {
    const r = crd.safeParse(doc);
    if (!r.success) problems.push(...r.error.issues.map((i) => `/${i.path.join('/')}: ${i.message}`));
    return problems;
  }

  const name = schemaModuleName(doc.apiVersion, doc.kind);
  let validate: ValidateFunc<unknown>;
  try {
    ({ validate } = (await import(`kubernetes-models/_schemas/${name}`)) as { validate: ValidateFunc<unknown> });
  } catch (e) {
    if (!/Cannot find module|ERR_MODULE_NOT_FOUND/.test(`${(e as NodeJS.ErrnoException).code} ${(e as Error).message}`))
      throw e;
    return [...problems, `no Kubernetes schema for ${doc.apiVersion} ${doc.kind} (kubernetes-models has no ${name})`];
  }
  const { proxy, read } = trackReads(doc);
  try {
    runValidateFunc(validate, proxy);
  } catch (e) {
    problems.push((e as Error).message);
  }
  problems.push(...unreadFields(doc, read).map((p) => `${p}: unknown field`));
  return problems;
}

// ---- looking into workloads ----

export interface Container {
  name: string;
  image: string;
  args?: string[];
  env?: {
    name: string;
    value?: string;
    valueFrom?: {
      fieldRef?: { fieldPath: string };
      resourceFieldRef?: { containerName?: string; resource: string; divisor?: string };
    };
  }[];
  ports?: { name?: string; containerPort: number }[];
  volumeMounts?: { name: string; mountPath: string; mountPropagation?: string; readOnly?: boolean }[];
  livenessProbe?: { httpGet?: { path: string; port: number | string } };
  resources?: { requests?: Record<string, string>; limits?: Record<string, string> };
}
export interface PodSpec {
  serviceAccountName?: string;
  containers: Container[];
  volumes?: {
    name: string;
    hostPath?: { path: string; type?: string };
    secret?: { secretName: string; optional?: boolean };
    emptyDir?: object;
  }[];
  [field: string]: any;
}

export function find(manifests: LoadedManifest[], kind: string, name?: string): Manifest[] {
  return manifests.map((m) => m.doc).filter((d) => d.kind === kind && (name === undefined || d.metadata.name === name));
}

export function only(manifests: LoadedManifest[], kind: string, name: string): Manifest {
  const found = find(manifests, kind, name);
  if (found.length !== 1) throw new Error(`expected one ${kind} ${name}, found ${found.length}`);
  return found[0]!;
}

export function podSpec(workload: Manifest): PodSpec {
  return workload.spec.template.spec as PodSpec;
}

export function container(spec: PodSpec, name: string): Container {
  const c = spec.containers.find((x) => x.name === name);
  if (!c) throw new Error(`no container ${name} (have ${spec.containers.map((x) => x.name).join(', ')})`);
  return c;
}

/** A literal env value of a container (valueFrom entries have none). */
export function envValue(c: Container, name: string): string | undefined {
  return c.env?.find((e) => e.name === name)?.value;
}

/**
 * `--name=value` of a container's args with $(VAR) expanded from its env, as kubelet does; a bare `--name` is "true".
 */
export function flag(c: Container, name: string): string | undefined {
  for (const raw of c.args ?? []) {
    const arg = raw.replace(/\$\(([A-Za-z_][A-Za-z0-9_]*)\)/g, (whole, v: string) => envValue(c, v) ?? whole);
    if (arg === `--${name}`) return 'true';
    if (arg.startsWith(`--${name}=`)) return arg.slice(name.length + 3);
  }
  return undefined;
}

/** Which volume (and path inside it) a path in a container lies on: the deepest mount containing it. */
export function onVolume(
  spec: PodSpec,
  c: Container,
  path: string,
): { volume: string; rel: string; hostPath?: string } {
  const mounts = (c.volumeMounts ?? []).filter(
    (m) => path === m.mountPath || path.startsWith(`${m.mountPath.replace(/\/$/, '')}/`),
  );
  const m = mounts.sort((a, b) => b.mountPath.length - a.mountPath.length)[0];
  if (!m) throw new Error(`${path} is on no volume of container ${c.name}`);
  const rel = path.slice(m.mountPath.replace(/\/$/, '').length).replace(/^\//, '');
  const host = spec.volumes?.find((v) => v.name === m.name)?.hostPath?.path;
  return { volume: m.name, rel, ...(host ? { hostPath: rel ? `${host.replace(/\/$/, '')}/${rel}` : host } : {}) };
}
