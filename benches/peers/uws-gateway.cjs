// The same-run uWebSockets peer of benches/run.sh's fan-out scenarios: uWebSockets.js from npm,
// whose `app.publish` fans out in uWS's C++ (its topic tree, corked writes), behind the part of
// Centrifugo's JSON client protocol that `tether-load broadcast` speaks (connect, subscribe,
// publish; one command per line) and `POST /api/publish`. Nothing else: no tokens, history or
// pings, so every figure it gives is a floor for a gateway built on uWS.
//
//   node uws-gateway.cjs --listen 127.0.0.1:PORT
//
// The package ships one binary per platform and Node ABI; the one for this Node is loaded
// directly (on Linux x64 with Node 20: binaries/uws_linux_x64_115.node).

'use strict';

const path = require('node:path');
const { parseArgs } = require('node:util');

const { values: args } = parseArgs({ options: { listen: { type: 'string' } } });
if (!args.listen) {
    console.error('usage: node uws-gateway.cjs --listen HOST:PORT');
    process.exit(2);
}
const [host, port] = [args.listen.slice(0, args.listen.lastIndexOf(':')), Number(args.listen.split(':').pop())];

const packageDir = path.dirname(require.resolve('@trufflesuite/uws-js-unofficial/package.json'));
const binary = `uws_${process.platform}_${process.arch}_${process.versions.modules}.node`;
const uWS = require(path.join(packageDir, 'binaries', binary));

const decoder = new TextDecoder();
let nextClient = 0;

/** The push of a publication, as Centrifugo's JSON protocol frames it. */
const push = (channel, data) => `{"push":{"channel":${JSON.stringify(channel)},"pub":{"data":${JSON.stringify(data)}}}}`;

const app = uWS.App();

app.ws('/connection/websocket', {
    compression: uWS.DISABLED,
    maxPayloadLength: 64 * 1024,
    // Idle subscribers stay: the load generator sends nothing while it listens.
    idleTimeout: 0,
    sendPingsAutomatically: false,
    maxBackpressure: 1024 * 1024,
    message(ws, message) {
        const replies = [];
        for (const line of decoder.decode(message).split('\n')) {
            if (!line.trim()) {
                continue;
            }
            const command = JSON.parse(line);
            if (command.connect) {
                nextClient += 1;
                replies.push(`{"id":${command.id},"connect":{"client":"${nextClient}","version":"uws"}}`);
            } else if (command.subscribe) {
                ws.subscribe(command.subscribe.channel);
                replies.push(`{"id":${command.id},"subscribe":{}}`);
            } else if (command.publish) {
                app.publish(command.publish.channel, push(command.publish.channel, command.publish.data));
                replies.push(`{"id":${command.id},"publish":{}}`);
            }
        }
        if (replies.length > 0) {
            ws.send(replies.join('\n'));
        }
    },
});

app.post('/api/publish', (res) => {
    let aborted = false;
    res.onAborted(() => {
        aborted = true;
    });
    const chunks = [];
    res.onData((chunk, last) => {
        chunks.push(Buffer.from(chunk));
        if (!last) {
            return;
        }
        const body = JSON.parse(Buffer.concat(chunks).toString());
        app.publish(body.channel, push(body.channel, body.data));
        if (!aborted) {
            res.cork(() => {
                res.writeHeader('Content-Type', 'application/json').end('{"result":{}}');
            });
        }
    });
});

app.listen(host, port, (socket) => {
    if (!socket) {
        console.error(`uws-gateway: cannot listen on ${args.listen}`);
        process.exit(1);
    }
});
