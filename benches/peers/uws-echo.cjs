// The same-run uWebSockets peer of benches/run.sh's echo, handshake and idle scenarios:
// uWebSockets.js from npm, echoing every message as it came (text or binary) on any path, with
// compression off and no idle timeout, like the other echo peers.
//
//   node uws-echo.cjs --listen 127.0.0.1:PORT

'use strict';

const { listen, loadUws } = require('./uws.cjs');

const uWS = loadUws();
const app = uWS.App();

app.ws('/*', {
    compression: uWS.DISABLED,
    // echo-1m sends 1 MiB messages.
    maxPayloadLength: 16 * 1024 * 1024,
    idleTimeout: 0,
    sendPingsAutomatically: false,
    maxBackpressure: 64 * 1024 * 1024,
    message(ws, message, isBinary) {
        ws.send(message, isBinary);
    },
});

listen(app, 'uws-echo.cjs');
