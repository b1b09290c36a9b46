// The trivial application backend of the proxy hooks benchmark: Node's own `http`
// server (keep-alive, no framework), answering the connect hook with a fixed user and
// the RPC hook `sum` with a + b, in Centrifugo's proxy JSON. Prints `listening PORT`.
//
//   node proxy-backend.cjs [PORT]

'use strict';

const http = require('node:http');

const answers = {
    '/connect': () => ({ result: { user: 'bench' } }),
    '/rpc': (request) => ({ result: { data: { sum: request.data.a + request.data.b } } }),
};

const server = http.createServer((req, res) => {
    const answer = answers[req.url];
    const chunks = [];
    req.on('data', (chunk) => chunks.push(chunk));
    req.on('end', () => {
        if (req.method !== 'POST' || !answer) {
            res.writeHead(404).end();
            return;
        }
        let body;
        try {
            body = JSON.stringify(answer(JSON.parse(Buffer.concat(chunks))));
        } catch {
            res.writeHead(400).end();
            return;
        }
        res.writeHead(200, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(body) });
        res.end(body);
    });
});
server.keepAliveTimeout = 60_000;
server.listen(Number(process.argv[2] || 0), '127.0.0.1', () => {
    console.log(`listening ${server.address().port}`);
});
