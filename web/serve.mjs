// Serves web/ on 127.0.0.1 (no dependencies): `node web/serve.mjs [PORT]` (default 8080; 0 picks
// a free port). Also imported by the browser test.
import http from 'node:http';
import fs from 'node:fs';
import path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.dirname(fileURLToPath(import.meta.url));
const TYPES = {
  '.html': 'text/html; charset=utf-8', '.js': 'text/javascript', '.mjs': 'text/javascript',
  '.css': 'text/css', '.wasm': 'application/wasm', '.png': 'image/png', '.json': 'application/json',
  '.bin': 'application/octet-stream',
};

export function serve(port = 8080) {
  const server = http.createServer((req, res) => {
    const url = new URL(req.url, 'http://127.0.0.1');
    let file = path.normalize(path.join(ROOT, decodeURIComponent(url.pathname)));
    if (!file.startsWith(ROOT)) { res.writeHead(403).end(); return; }
    if (file.endsWith(path.sep)) file = path.join(file, 'index.html');
    fs.readFile(file, (err, data) => {
      if (err) { res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: ${url.pathname}\n`); return; }
      res.writeHead(200, {
        'content-type': TYPES[path.extname(file)] || 'application/octet-stream',
        'cache-control': 'no-cache',
      }).end(data);
    });
  });
  return new Promise((resolve) => server.listen(port, '127.0.0.1', () => resolve(server)));
}

if (process.argv[1] === fileURLToPath(import.meta.url)) {
  const port = Number(process.argv[2] ?? 8080);
  if (!fs.existsSync(path.join(ROOT, 'pkg', 'resnet_web.js'))) {
    console.error('error: web/pkg/resnet_web.js is missing; build it first with web/build.sh');
    process.exit(1);
  }
  serve(port).then((s) => console.log(`serving web/ at http://127.0.0.1:${s.address().port}/ (Ctrl-C stops)`));
}
