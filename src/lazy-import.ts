/**
 * A package's exports after a lazy `import()`. In the shipped bundle a CommonJS package behind a dynamic
 * import shows its exports on the namespace's `default` only; from the sources they are on the namespace.
 * `probe` names one export to tell which.
 */
export function exportsOf<T extends object>(ns: T, probe: keyof T): T {
  return ns[probe] !== undefined ? ns : ((ns as { default?: T }).default ?? ns);
}
