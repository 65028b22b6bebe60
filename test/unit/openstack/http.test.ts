import { createServer, type IncomingMessage, type Server, type ServerResponse } from 'node:http';
import type { AddressInfo } from 'node:net';
import { HttpClient } from '../../../src/openstack/http.js';

/** A real HTTP server answering from a script of responses, one per request, recording what came in. */
async function scripted(
  answers: ((req: IncomingMessage, res: ServerResponse) => void)[],
): Promise<{ url: string; seen: string[]; server: Server }> {
  const seen: string[] = [];
  const server = createServer((req, res) => {
    seen.push(`${req.method} ${req.url}`);
    const answer = answers.shift() ?? ((_q, r) => r.writeHead(500).end('script exhausted'));
    answer(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  return { url: `http://127.0.0.1:${(server.address() as AddressInfo).port}`, seen, server };
}

const json =
  (status: number, body: unknown, headers: Record<string, string> = {}) =>
  (_q: IncomingMessage, r: ServerResponse) =>
    r.writeHead(status, { 'content-type': 'application/json', ...headers }).end(JSON.stringify(body));

let http: HttpClient;
let servers: Server[] = [];
beforeEach(() => (http = new HttpClient({ attempts: 4 })));
afterEach(async () => {
  await http.close();
  servers.forEach((s) => s.close());
  servers = [];
});
const serve = async (answers: Parameters<typeof scripted>[0]) => {
  const s = await scripted(answers);
  servers.push(s.server);
  return s;
};

test('503 and 502 are retried until the service answers', async () => {
  const s = await serve([json(503, { message: 'busy' }), json(502, {}), json(200, { ok: 1 })]);
  const r = await http.request('GET', `${s.url}/x`, { service: 'Cinder' });
  expect(r.body).toEqual({ ok: 1 });
  expect(s.seen).toHaveLength(3);
});

test('429 waits as long as Retry-After says', async () => {
  const s = await serve([json(429, { message: 'slow down' }, { 'retry-after': '1' }), json(200, {})]);
  const t = Date.now();
  await http.request('POST', `${s.url}/x`, { service: 'Cinder', body: {} });
  expect(Date.now() - t).toBeGreaterThanOrEqual(950);
  expect(s.seen).toEqual(['POST /x', 'POST /x']);
});

test('other 4xx are never retried and keep the service’s message', async () => {
  const s = await serve([json(400, { badRequest: { message: 'Invalid volume: status must be available' } })]);
  await expect(http.request('GET', `${s.url}/x?marker=secret-looking`, { service: 'Cinder' })).rejects.toMatchObject({
    kind: 'bad-request',
    status: 400,
    message: 'Cinder: Invalid volume: status must be available (HTTP 400 on GET ' + `${s.url}/x)`,
  });
  expect(s.seen).toHaveLength(1);
});

test('404, 413 over quota and 401 get their kinds', async () => {
  const s = await serve([
    json(404, { itemNotFound: { message: 'Volume x could not be found.' } }),
    json(413, {
      overLimit: { message: 'VolumeSizeExceedsAvailableQuota: Requested volume exceeds allowed gigabytes quota' },
    }),
    json(401, { error: { message: 'The request you have made requires authentication.' } }),
  ]);
  await expect(http.request('GET', `${s.url}/a`, { service: 'Cinder' })).rejects.toMatchObject({ kind: 'not-found' });
  await expect(http.request('POST', `${s.url}/b`, { service: 'Cinder', body: {} })).rejects.toMatchObject({
    kind: 'over-quota',
  });
  await expect(http.request('GET', `${s.url}/c`, { service: 'Cinder' })).rejects.toMatchObject({
    kind: 'unauthenticated',
  });
});

test('a refused connection is retried (nothing was sent), then reported unavailable', async () => {
  const s = await serve([]);
  const url = s.url;
  s.server.close();
  let attempts = 0;
  const counting = new HttpClient({ attempts: 4, onRequest: () => attempts++ });
  try {
    await expect(counting.request('POST', `${url}/x`, { service: 'Cinder', body: {} })).rejects.toMatchObject({
      kind: 'unavailable',
      message: expect.stringMatching(/unreachable: ECONNREFUSED/),
    });
    expect(attempts).toBe(4);
  } finally {
    await counting.close();
  }
});

test('a reset connection: GET is retried, POST is not — unless marked idempotent (a token request)', async () => {
  const reset = (req: IncomingMessage) => req.socket.destroy();
  const s = await serve([reset, json(200, { ok: 1 }), reset, reset, json(201, { ok: 2 })]);
  expect((await http.request('GET', `${s.url}/g`, { service: 'Cinder' })).body).toEqual({ ok: 1 });
  await expect(http.request('POST', `${s.url}/p`, { service: 'Cinder', body: {} })).rejects.toMatchObject({
    kind: 'unavailable',
  });
  expect(
    (await http.request('POST', `${s.url}/t`, { service: 'Keystone', body: {}, idempotent: true, expect: [201] })).body,
  ).toEqual({ ok: 2 });
  expect(s.seen).toEqual(['GET /g', 'GET /g', 'POST /p', 'POST /t', 'POST /t']);
});

test('what a service answers reaches a message only as a short, printable, single-line summary', async () => {
  const huge = `<html><body>${'\u0007\u001b[31m'.repeat(10)}${'stolen '.repeat(200_000)}</body></html>`;
  const s = await serve([
    (_q, r) => r.writeHead(400, { 'content-type': 'text/html' }).end(huge),
    json(404, { itemNotFound: { message: `x\n${'y'.repeat(5000)}` } }),
  ]);
  const e1 = (await http.request('GET', `${s.url}/a`, { service: 'Keystone' }).catch((e: Error) => e)) as Error;
  expect(e1.message.length).toBeLessThan(400);
  expect([...e1.message].filter((c) => c < ' ' || c === '<' || c === '>')).toEqual([]);
  const e2 = (await http.request('GET', `${s.url}/b`, { service: 'Cinder' }).catch((e: Error) => e)) as Error;
  expect(e2.message).toMatch(/^Cinder: x y+… \(HTTP 404 on GET /);
  expect(e2.message.length).toBeLessThan(400);
});

test('an answer bigger than any Keystone or Cinder gives is cut off, not read into memory', async () => {
  const s = await serve([
    (_q, r) => {
      r.writeHead(200, { 'content-type': 'application/json' });
      const chunk = Buffer.alloc(1 << 20, 0x20);
      let n = 0;
      const more = () => {
        while (n++ < 40) if (!r.write(chunk)) return void r.once('drain', more);
        r.end();
      };
      more();
    },
  ]);
  await expect(http.request('GET', `${s.url}/big`, { service: 'Cinder' })).rejects.toThrow(
    /^Cinder: answered more than 16 MiB on GET /,
  );
});
