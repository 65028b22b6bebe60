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

/**
 * OpenStack services wrap error text differently: {"itemNotFound": {"message": …}},
 * {"error": {"message": …}}, {"badRequest": {…}}, {"overLimit": {…}}, {"message": …} or plain text.
 */
export function openStackMessage(body: string): string {
  try {
    const j = JSON.parse(body) as Record<string, unknown>;
    if (typeof j.message === 'string') return j.message;
    for (const v of Object.values(j)) {
      if (v && typeof v === 'object' && typeof (v as { message?: unknown }).message === 'string')
        return (v as { message: string }).message;
    }
  } catch {
    // not JSON: use the text itself
  }
  return body.replace(/<[^>]+>/g, ' ').replace(/\s+/g, ' ').trim().slice(0, 300);
}
