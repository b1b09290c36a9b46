// The same-run uWebSockets peer of benches/run.sh's fan-out scenarios: uWebSockets.js from npm,
// whose `app.publish` fans out in uWS's C++ (its topic tree, corked writes), behind the part of
// Centrifugo's JSON client protocol that `tether-load broadcast` speaks (connect, subscribe,
// publish; one command per line) and `POST /api/publish`. Nothing else: no tokens, history or
// pings, so every figure it gives is a floor for a gateway built on uWS.
//
//   node uws-gateway.cjs --listen 127.0.0.1:PORT

'use strict';

const { listen, loadUws } = require('./uws.cjs');

const uWS = loadUws();
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

listen(app, 'uws-gateway.cjs');
