/** Shared output of every benchmark: one JSON document on stdout, then a readable table on stderr. */
export function report(
  name: string,
  results: Record<string, unknown>,
  rows: [string, string | number, string?][],
): void {
  process.stdout.write(`${JSON.stringify({ bench: name, at: new Date().toISOString(), ...results })}\n`);
  const w = Math.max(...rows.map((r) => r[0].length));
  process.stderr.write(
    `\n${name}\n${rows.map(([k, v, goal]) => `  ${k.padEnd(w)}  ${String(v).padStart(10)}${goal ? `   ${goal}` : ''}`).join('\n')}\n`,
  );
}

export function percentile(sorted: number[], p: number): number {
  if (!sorted.length) return NaN;
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]!;
}

export const round = (n: number, digits = 3) => Math.round(n * 10 ** digits) / 10 ** digits;
