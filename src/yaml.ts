/**
 * YAML, loaded only where a file needs it (clouds.yaml, a KUBECONFIG). In the shipped bundle the `yaml`
 * package is CommonJS behind a dynamic import: its functions may sit on the namespace's `default`.
 */
export async function parseYaml(text: string): Promise<unknown> {
  const m: typeof import('yaml') & { default?: typeof import('yaml') } = await import('yaml');
  return (m.parse ?? m.default!.parse)(text);
}
