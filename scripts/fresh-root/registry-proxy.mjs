// The fresh root's only way out while it installs: an HTTP proxy (plain requests for apt, CONNECT for
// npm's https) that reaches the package registries and nothing else. It logs one line per request.
// usage: node registry-proxy.mjs HOST PORT   (runs on the host's Node 20; no dependencies)
import { createServer, request } from 'node:http';
import { connect } from 'node:net';

const ALLOWED = new Set(['deb.debian.org', 'security.debian.org', 'registry.npmjs.org']);
const [host, port] = process.argv.slice(2);
const log = (line) => process.stdout.write(`${new Date().toISOString()} ${line}\n`);

function target(hostPort, defaultPort) {
  const m = /^\[?([^\]]+?)\]?(?::(\d+))?$/.exec(hostPort ?? '');
  return m ? { host: m[1].toLowerCase(), port: Number(m[2] ?? defaultPort) } : undefined;
}

const server = createServer((req, res) => {
  let url;
  try {
    url = new URL(req.url);
  } catch {
    res.writeHead(400).end('absolute URL expected\n');
    return;
  }
  if (url.protocol !== 'http:' || !ALLOWED.has(url.hostname)) {
    log(`refused ${req.method} ${url.protocol}//${url.host}`);
    res.writeHead(403).end(`${url.host} is not a package registry\n`);
    return;
  }
  log(`${req.method} ${url.host}${url.pathname}`);
  const headers = { ...req.headers };
  delete headers['proxy-connection'];
  const up = request(
    { host: url.hostname, port: url.port || 80, method: req.method, path: url.pathname + url.search, headers },
    (r) => {
      res.writeHead(r.statusCode ?? 502, r.headers);
      r.pipe(res);
    },
  );
  up.on('error', (e) => {
    log(`error ${url.host}: ${e.message}`);
    if (!res.headersSent) res.writeHead(502);
    res.end();
  });
  req.pipe(up);
});

server.on('connect', (req, client, head) => {
  const t = target(req.url, 443);
  if (!t || t.port !== 443 || !ALLOWED.has(t.host)) {
    log(`refused CONNECT ${req.url}`);
    client.end('HTTP/1.1 403 Forbidden\r\n\r\n');
    return;
  }
  log(`CONNECT ${t.host}`);
  const up = connect(t.port, t.host, () => {
    client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
    up.write(head);
    up.pipe(client);
    client.pipe(up);
  });
  const close = () => {
    up.destroy();
    client.destroy();
  };
  up.on('error', close);
  client.on('error', close);
});

server.listen(Number(port), host, () => log(`listening on ${host}:${port}; allowed: ${[...ALLOWED].join(', ')}`));
process.on('SIGTERM', () => process.exit(0));
