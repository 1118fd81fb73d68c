// Development server: serves web/dist like the gateway does (index.html at / and /player, the other
// files at /<name>) and proxies every other request, WebSocket upgrades included, to a gateway.
//
//   node tools/dev-server.mjs [--listen 127.0.0.1:8081] [--gateway 127.0.0.1:8080] [--rebase-discontinuity]
//
// Then open http://127.0.0.1:8081/?level=0 in two tabs.
//
// --rebase-discontinuity rewrites EXT-X-DISCONTINUITY-SEQUENCE in media playlists to count from 0 at
// the first one seen. hls.js 1.7 keeps per-discontinuity timestamps in a sparse array indexed by
// that number and walks it (`initPTS.some`, `.slice`) on every playlist reload: with the demo's
// ~9e7 it costs about a second of main thread per reload, and players stall for that reason alone.

import { createServer, request } from 'node:http';
import { connect } from 'node:net';
import { readFile, readdir } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** --name value pairs; a --flag followed by another option (or nothing) is true. */
const args = Object.fromEntries(
  process.argv.slice(2).flatMap((a, i, all) =>
    a.startsWith('--') ? [[a.slice(2), all[i + 1] === undefined || all[i + 1].startsWith('--') ? true : all[i + 1]]] : [],
  ),
);
const [host, port] = (args.listen ?? '127.0.0.1:8081').split(':');
const [gwHost, gwPort] = (args.gateway ?? '127.0.0.1:8080').split(':');
const dist = join(dirname(fileURLToPath(import.meta.url)), '..', 'dist');
const rebase = args['rebase-discontinuity'] === true;
let discontinuityBase = null;

function rebaseDiscontinuity(text) {
  return text.replace(/^#EXT-X-DISCONTINUITY-SEQUENCE:(\d+)/m, (_, n) => {
    discontinuityBase ??= Number(n);
    return `#EXT-X-DISCONTINUITY-SEQUENCE:${Math.max(0, Number(n) - discontinuityBase)}`;
  });
}

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
      if (rebase && path.endsWith('.m3u8') && up.statusCode === 200) {
        const parts = [];
        up.on('data', (c) => parts.push(c));
        up.on('end', () => {
          const body = Buffer.from(rebaseDiscontinuity(Buffer.concat(parts).toString('utf8')));
          const headers = { ...up.headers, 'content-length': String(body.length) };
          delete headers.etag;
          res.writeHead(200, headers);
          res.end(body);
        });
        return;
      }
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
