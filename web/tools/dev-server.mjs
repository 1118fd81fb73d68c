// Development server: serves web/dist like the gateway does (index.html at / and /player, the other
// files at /<name>) and proxies every other request, WebSocket upgrades included, to a gateway.
//
//   node tools/dev-server.mjs [--listen 127.0.0.1:8081] [--gateway 127.0.0.1:8080]
//
// Then open http://127.0.0.1:8081/?level=0 in two tabs.

import { createServer, request } from 'node:http';
import { connect } from 'node:net';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const args = Object.fromEntries(
  process.argv.slice(2).reduce((pairs, a, i, all) => (a.startsWith('--') ? [...pairs, [a.slice(2), all[i + 1]]] : pairs), []),
);
const [host, port] = (args.listen ?? '127.0.0.1:8081').split(':');
const [gwHost, gwPort] = (args.gateway ?? '127.0.0.1:8080').split(':');
const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');

const TYPES = {
  '.html': 'text/html; charset=utf-8',
  '.js': 'text/javascript; charset=utf-8',
  '.mjs': 'text/javascript; charset=utf-8',
  '.css': 'text/css; charset=utf-8',
  '.txt': 'text/plain; charset=utf-8',
};

async function distFile(path) {
  const name = path === '/' || path === '/player' ? 'index.html' : path.slice(1);
  if (name.includes('/') || !(await readdir(dist)).includes(name)) return null;
  const ext = name.slice(name.lastIndexOf('.'));
  return { body: await readFile(join(dist, name)), type: TYPES[ext] ?? 'application/octet-stream' };
}

const server = createServer(async (req, res) => {
  const path = new URL(req.url, 'http://x').pathname;
  const file = req.method === 'GET' || req.method === 'HEAD' ? await distFile(path) : null;
  if (file) {
    res.writeHead(200, { 'content-type': file.type, 'cache-control': 'no-cache' });
    res.end(req.method === 'HEAD' ? undefined : file.body);
    return;
  }
  const upstream = request(
    { host: gwHost, port: gwPort, method: req.method, path: req.url, headers: req.headers },
    (up) => {
      res.writeHead(up.statusCode, up.headers);
      up.pipe(res);
    },
  );
  upstream.on('error', (e) => {
    res.writeHead(502, { 'content-type': 'text/plain' });
    res.end(`gateway unreachable: ${e.message}\n`);
  });
  req.pipe(upstream);
});

server.on('upgrade', (req, socket, head) => {
  const up = connect(Number(gwPort), gwHost, () => {
    const lines = [`${req.method} ${req.url} HTTP/1.1`];
    for (let i = 0; i < req.rawHeaders.length; i += 2) lines.push(`${req.rawHeaders[i]}: ${req.rawHeaders[i + 1]}`);
    up.write(`${lines.join('\r\n')}\r\n\r\n`);
    if (head.length) up.write(head);
    up.pipe(socket);
    socket.pipe(up);
  });
  const close = () => {
    up.destroy();
    socket.destroy();
  };
  up.on('error', close);
  socket.on('error', close);
});

server.listen(Number(port), host, () => {
  console.log(`serving web/dist on http://${host}:${port}, proxying to ${gwHost}:${gwPort}`);
});
