// The SDK side of crates/tetherd/tests/gateway_cluster.rs: one `centrifuge` client (Node, `ws`)
// connected to node B, while every server API call goes to node A. Each call must take effect
// on B within 1 s.
//
//   node cluster.mjs --ws URL_OF_B --http URL_OF_A --api-key KEY --secret HMAC_SECRET
//
// The gateway needs a namespace `news` (no client grants needed: the subscriptions here are
// made by the server API). Prints `step NAME MS` per call (from sending it to seeing its effect
// on B), then `ok`; or `FAIL: reason` and exits 1.

import { randomBytes } from 'node:crypto';
import { performance } from 'node:perf_hooks';
import { parseArgs } from 'node:util';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import { apiCall, apiReply, check, hs256, next } from './support.mjs';

const { values: args } = parseArgs({
    options: {
        ws: { type: 'string' },
        http: { type: 'string' },
        'api-key': { type: 'string' },
        secret: { type: 'string' },
    },
});
for (const name of ['ws', 'http', 'api-key', 'secret']) {
    if (!args[name]) {
        console.error(`missing --${name}`);
        process.exit(2);
    }
}

/** How long a call through A may take to act on B. */
const WITHIN_MS = 1000;

const api = (method, body) => apiCall(args.http, args['api-key'], method, body);
const unique = () => randomBytes(4).toString('hex');

/**
 * Makes `call` to node A and waits for `effect` (a promise made before the call, so nothing
 * is missed) on B; prints and checks the time between the two.
 */
async function acted(name, call, effect) {
    const started = performance.now();
    const result = await call();
    const seen = await effect;
    const ms = performance.now() - started;
    console.log(`step ${name} ${ms.toFixed(1)}`);
    check(ms <= WITHIN_MS, `${name}: took ${ms.toFixed(0)} ms on the other node`);
    return [result, seen];
}

async function main() {
    const user = `user-${unique()}`;
    const token = () => hs256({ sub: user, exp: Math.floor(Date.now() / 1000) + 600 }, args.secret);
    const centrifuge = new Centrifuge(args.ws, {
        websocket: WebSocket,
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
        getToken: async () => token(),
    });
    centrifuge.on('error', () => {});
    const connected = next(centrifuge, 'connected');
    centrifuge.connect();
    const { client } = await connected;

    const channel = `news:cluster-${unique()}`;
    const onChannel = (ctx) => ctx.channel === channel;

    await acted(
        'subscribe',
        () => api('subscribe', { user, channel }),
        next(centrifuge, 'subscribed', WITHIN_MS * 2, onChannel),
    );

    const [, publication] = await acted(
        'publish',
        () => api('publish', { channel, data: { n: 1 } }),
        next(centrifuge, 'publication', WITHIN_MS * 2, onChannel),
    );
    check(publication.data.n === 1, `publication: ${JSON.stringify(publication.data)}`);

    const listed = await api('channels', { pattern: channel });
    check(
        listed.channels?.[channel]?.num_clients === 1,
        `channels on A shows B's subscriber: ${JSON.stringify(listed)}`,
    );

    // Three commands in one batch, answered in order.
    const [batch, unsubscribed] = await acted(
        'batch-unsubscribe',
        () =>
            apiReply(args.http, args['api-key'], 'batch', {
                commands: [
                    { publish: { channel, data: { n: 2 } } },
                    { channels: { pattern: channel } },
                    { unsubscribe: { user, channel } },
                ],
            }),
        next(centrifuge, 'unsubscribed', WITHIN_MS * 2, onChannel),
    );
    check(batch.replies?.length === 3, `three replies: ${JSON.stringify(batch)}`);
    check(batch.replies[0].publish?.offset === 2, `replies[0] is publish's: ${JSON.stringify(batch)}`);
    check(
        batch.replies[1].channels?.channels?.[channel]?.num_clients === 1,
        `replies[1] is channels' (taken before the unsubscribe): ${JSON.stringify(batch)}`,
    );
    check(
        JSON.stringify(batch.replies[2]) === '{"unsubscribe":{}}',
        `replies[2] is unsubscribe's: ${JSON.stringify(batch)}`,
    );
    check(unsubscribed.channel === channel, `unsubscribed: ${JSON.stringify(unsubscribed)}`);

    // Expired through the API: the SDK is told 3005 and reconnects.
    const [, expired] = await acted(
        'refresh-expired',
        () => api('refresh', { user, expired: true }),
        next(centrifuge, 'connecting', WITHIN_MS * 2),
    );
    check(expired.code === 3005, `expired with 3005: ${JSON.stringify(expired)}`);
    const again = await next(centrifuge, 'connected', 5000);
    check(again.client !== client, 'a new connection after the expiry');

    // Unknown users and clients: no-ops that succeed, as in Centrifugo.
    check(
        JSON.stringify(await api('disconnect', { user: `nobody-${unique()}` })) === '{}',
        'disconnecting an unknown user answers {}',
    );
    check(
        JSON.stringify(await api('unsubscribe', { user, channel, client: 'no-such-client' })) === '{}',
        'unsubscribing an unknown client answers {}',
    );
    check(centrifuge.state === 'connected', 'the no-ops left the client alone');

    const [, disconnected] = await acted(
        'disconnect',
        () => api('disconnect', { user, disconnect: { code: 4501, reason: 'banned' } }),
        next(centrifuge, 'disconnected', WITHIN_MS * 2),
    );
    check(
        disconnected.code === 4501 && disconnected.reason === 'banned',
        `disconnected with the API's code and reason: ${JSON.stringify(disconnected)}`,
    );
}

try {
    await main();
    console.log('ok');
    process.exit(0);
} catch (error) {
    console.log(`FAIL: ${error.message}`);
    process.exit(1);
}
