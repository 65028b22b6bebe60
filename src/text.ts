/** Small text helpers that must stay linear on any input (service answers, request fields). */

/** `s` without trailing `/` characters: a loop, where `/\/+$/` is quadratic on a run of slashes. */
export function trimTrailingSlashes(s: string): string {
  let end = s.length;
  while (end > 0 && s.charCodeAt(end - 1) === 0x2f) end--;
  return s.slice(0, end);
}
