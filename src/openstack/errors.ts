/**
 * What went wrong talking to OpenStack, in terms the CSI layer can map to a status code without
 * knowing HTTP. Messages keep the service's own words and never hold a token or a secret.
 */
export type OpenStackErrorKind =
  | 'bad-request'
  | 'unauthenticated'
  | 'forbidden'
  | 'not-found'
  | 'conflict'
  | 'over-quota'
  | 'too-large'
  | 'unavailable'
  | 'timeout'
  | 'unexpected';

export class OpenStackError extends Error {
  constructor(
    readonly kind: OpenStackErrorKind,
    message: string,
    readonly status?: number,
  ) {
    super(message);
    this.name = 'OpenStackError';
  }
}

export function kindForStatus(status: number, message: string): OpenStackErrorKind {
  if (status === 400) return /quota|exceed/i.test(message) ? 'over-quota' : 'bad-request';
  if (status === 401) return 'unauthenticated';
  if (status === 403) return /quota|exceed/i.test(message) ? 'over-quota' : 'forbidden';
  if (status === 404) return 'not-found';
  if (status === 409) return 'conflict';
  if (status === 413) return /quota|exceed/i.test(message) ? 'over-quota' : 'too-large';
  if (status === 408 || status === 504) return 'timeout';
  if (status === 429 || status === 502 || status === 503) return 'unavailable';
  return 'unexpected';
}

/** The most of a service's own words that reach the CO or a log line. */
export const MAX_SERVICE_MESSAGE = 300;
/** The most of an error body that is parsed at all: OpenStack's error documents are a few hundred bytes. */
export const MAX_ERROR_BODY = 64 * 1024;
/** What summarize reads of a text: enough to fill a message after markup is stripped. */
const MAX_SUMMARIZED = 4096;

/**
 * A service's answer as a short, single-line, printable summary: no markup, no control characters,
 * at most MAX_SERVICE_MESSAGE characters. Whatever a Keystone or Cinder sends back (or a host that
 * is not one) never reaches a caller any longer than that. The text is cut before any expression
 * reads it, and each expression is linear (a tag ends at the next `<` or `>`), so no answer costs more
 * than a few microseconds.
 */
export function summarize(text: string): string {
  const flat = text
    .slice(0, MAX_SUMMARIZED)
    .replace(/<[^<>]*>/g, ' ')
    .replace(/[\p{Cc}\p{Cf}\p{Co}\p{Cn}]+/gu, ' ')
    .replace(/\s+/g, ' ')
    .trim();
  return flat.length > MAX_SERVICE_MESSAGE ? `${flat.slice(0, MAX_SERVICE_MESSAGE - 1)}…` : flat;
}

/**
 * OpenStack services wrap error text differently: {"itemNotFound": {"message": …}},
 * {"error": {"message": …}}, {"badRequest": {…}}, {"overLimit": {…}}, {"message": …} or plain text.
 * Returns the summary of it (see summarize). Only the first MAX_ERROR_BODY characters are parsed: a
 * longer body is no OpenStack error document, and is summarised as text.
 */
export function openStackMessage(body: string): string {
  const cut = body.slice(0, MAX_ERROR_BODY);
  if (cut.length === body.length && cut.trimStart().startsWith('{')) {
    try {
      const j = JSON.parse(cut) as Record<string, unknown>;
      if (typeof j.message === 'string') return summarize(j.message);
      for (const v of Object.values(j)) {
        if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string')
          return summarize((v as { message: string }).message);
      }
    } catch {
      // not JSON: use the text itself
    }
  }
  return summarize(cut);
}
