import { exportsOf } from './lazy-import.js';

/** YAML, loaded only where a file needs it (clouds.yaml, a KUBECONFIG). */
export async function parseYaml(text: string): Promise<unknown> {
  return exportsOf(await import('yaml'), 'parse').parse(text);
}
