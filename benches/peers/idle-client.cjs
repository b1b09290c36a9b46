// A second, independent measure of server memory per idle connection, next to `tether-load idle`
// (bench-runner's `idle-node` scenario): Node's own WebSocket client (undici, behind
// --experimental-websocket in Node 20) opens the connections, and the server's RSS is read from
// /proc before and after. Nothing here shares code with tether-load: a figure both agree on is
// the server's, not an artefact of one client.
//
//   node --experimental-websocket idle-client.cjs --url ws://127.0.0.1:PORT/ --conns 15000 \
//       --server-pid PID [--hold 3] [--settle 1]
//
// Prints one JSON object: {"opened", "failed", "server": {"rss_before", "rss_open", "rss_per_conn"}}.

'use strict';

const fs = require('node:fs');
const { parseArgs } = require('node:util');
const { setTimeout: sleep } = require('node:timers/promises');

const { values: args } = parseArgs({
    options: {
        url: { type: 'string' },
        conns: { type: 'string', default: '15000' },
        'server-pid': { type: 'string' },
        hold: { type: 'string', default: '3' },
        settle: { type: 'string', default: '1' },
        concurrency: { type: 'string', default: '128' },
    },
});
if (!args.url || !args['server-pid']) {
    console.error('usage: node --experimental-websocket idle-client.cjs --url URL --server-pid PID [--conns N]');
    process.exit(2);
}

/** The server's resident memory in bytes, from /proc/PID/status. */
function rss() {
    const status = fs.readFileSync(`/proc/${args['server-pid']}/status`, 'utf8');
    return Number(/^VmRSS:\s+(\d+) kB$/m.exec(status)[1]) * 1024;
}

/** Opens one connection; resolves to it, or to null if it failed. */
function open() {
    return new Promise((resolve) => {
        const ws = new WebSocket(args.url);
        ws.onopen = () => resolve(ws);
        ws.onerror = () => resolve(null);
    });
}

async function main() {
    const conns = Number(args.conns);
    const before = rss();
    const sockets = [];
    let failed = 0;
    let next = 0;
    const opener = async () => {
        while (next < conns) {
            next += 1;
            const ws = await open();
            if (ws) {
                sockets.push(ws);
            } else {
                failed += 1;
            }
        }
    };
    await Promise.all(Array.from({ length: Number(args.concurrency) }, opener));
    await sleep(Number(args.settle) * 1000);
    const rssOpen = rss();
    const dropped = sockets.filter((ws) => ws.readyState !== WebSocket.OPEN).length;
    await sleep(Math.max(0, Number(args.hold) - Number(args.settle)) * 1000);
    for (const ws of sockets) {
        ws.close(1000, 'done');
    }
    console.log(JSON.stringify({
        opened: sockets.length,
        failed,
        dropped,
        server: {
            rss_before: before,
            rss_open: rssOpen,
            rss_per_conn: sockets.length > 0 ? (rssOpen - before) / sockets.length : null,
        },
    }));
    // Closing handshakes are not waited for: the measurement is done.
    process.exit(0);
}

main().catch((error) => {
    console.error(`idle-client.cjs: ${error.stack || error}`);
    process.exit(1);
});
