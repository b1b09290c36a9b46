// Drives tetherd with the real `centrifuge` SDK (npm, 5.x) in Node against its
// Centrifugo-compatible HTTP proxy hooks: no tokens at all, the application backend
// (clients/proxy-backend/backend.py) decides who connects, subscribes, publishes,
// what an RPC answers, and when a connection or a subscription expires.
//
//   node proxy.mjs --ws URL --http URL --api-key KEY --backend URL [--only NAME]
//
// --ws is the gateway's WebSocket endpoint, --http its base URL for the server API,
// --backend the backend's base URL (GET /requests shows what the gateway sent it,
// POST /reset forgets that; it is reset before each scenario).
//
// Prints `ok NAME` or `FAIL NAME: reason` per scenario and a closing
// `N passed, N failed` line; exits 0 only when all passed.
//
// The gateway's config must have (see the Rust test that runs this):
//   connect hook   -> BACKEND/connect, http_headers = ["Cookie", "Origin", "User-Agent",
//                     "X-Real-Ip"], static header X-Tether-Secret: proxy-secret-0123
//   subscribe hook -> BACKEND/subscribe, http_headers = ["Cookie"]
//   refresh hook   -> BACKEND/refresh
//   rpc hook       -> BACKEND/rpc (methods without a namespace)
//   send hook      -> BACKEND/send
//   namespaces     room (subscribe + publish proxied), secret (subscribe proxied),
//                  expiring (subscribe + sub_refresh proxied), notify (no grants:
//                  server-side subscriptions only), capped (no grants: the connect
//                  answer's caps only)
//
// `backend-down` is not in the default list: run it alone (`--only backend-down`)
// against a gateway whose connect hook is down, too slow for its timeout, or
// answers garbage.

import { randomBytes } from 'node:crypto';
import { isDeepStrictEqual, parseArgs } from 'node:util';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import { apiCall, check, next, runScenarios, sleep, until } from './support.mjs';

const { values: args } = parseArgs({
    options: {
        ws: { type: 'string' },
        http: { type: 'string' },
        'api-key': { type: 'string' },
        backend: { type: 'string' },
        only: { type: 'string' },
    },
});
for (const name of ['ws', 'http', 'api-key', 'backend']) {
    if (!args[name]) {
        console.error(`missing --${name}`);
        process.exit(2);
    }
}
const backend = args.backend.replace(/\/+$/, '');

// ---------------------------------------------------------------------------------------
// Helpers.

const show = (value) => JSON.stringify(value);

/** A fresh channel name, so that scenarios (and reruns against one gateway) never share state. */
const channel = (namespace, name) => `${namespace}:${name}-${randomBytes(4).toString('hex')}`;

/** `POST /api/METHOD` with the API key; returns `result`, throws on an `error`. */
const api = (method, body) => apiCall(args.http, args['api-key'], method, body);

/** What the gateway sent the backend so far, to `path` only if given. */
async function requests(path) {
    const url = path ? `${backend}/requests?path=${encodeURIComponent(path)}` : `${backend}/requests`;
    const response = await fetch(url);
    check(response.ok, `GET ${url}: HTTP ${response.status}`);
    return response.json();
}

async function resetBackend() {
    const response = await fetch(`${backend}/reset`, { method: 'POST' });
    check(response.ok, `POST /reset: HTTP ${response.status}`);
}

/**
 * `ws`'s WebSocket sending `Cookie: session=SESSION` with the handshake: the
 * backend's /connect knows the user by that cookie, as a browser app's would.
 * No Origin, as in scenarios.mjs: the gateway admits handshakes without one.
 */
function cookieSocket(session) {
    return class extends WebSocket {
        constructor(address, protocols) {
            super(address, protocols, { headers: { Cookie: `session=${session}` } });
        }
    };
}

/**
 * `next(...)` for an event awaited only after other awaits: if one of those throws
 * first, its timeout rejection must not end the process as an unhandled one.
 */
function expect(emitter, event, ms = 5000, filter = () => true) {
    const promise = next(emitter, event, ms, filter);
    promise.catch(() => {});
    return promise;
}

/** Clients made by a scenario; all disconnected when it ends. */
const clients = [];

/**
 * A `Centrifuge` client with quick reconnects, not yet connected, logging its
 * events into `events` (so that a failure can say what happened instead). With a
 * `session`, its handshake carries that cookie; without, no cookie at all.
 */
function client(session, options = {}) {
    const centrifuge = new Centrifuge(args.ws, {
        websocket: session === undefined ? WebSocket : cookieSocket(session),
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
        ...options,
    });
    centrifuge.events = [];
    for (const event of ['connecting', 'connected', 'disconnected', 'error']) {
        // Also keeps unhandled `error` events from ending the process.
        centrifuge.on(event, (ctx) => centrifuge.events.push({ event, ...ctx }));
    }
    clients.push(centrifuge);
    return centrifuge;
}

/** Connects `centrifuge` and returns the `connected` context, failing fast on a disconnect. */
async function connect(centrifuge) {
    const connected = next(centrifuge, 'connected').catch((error) => {
        throw new Error(`${error.message}: ${show(centrifuge.events)}`);
    });
    const refused = next(centrifuge, 'disconnected').then(
        (ctx) => {
            throw new Error(`disconnected ${ctx.code} ${ctx.reason} instead of connecting: ${show(centrifuge.events)}`);
        },
        () => new Promise(() => {}),
    );
    centrifuge.connect();
    return Promise.race([connected, refused]);
}

/** Resolves with `{ event, ctx }` for the first of `events` (matching `filter`), rejects after `ms`. */
function firstOf(emitter, events, ms, filter = () => true) {
    return new Promise((resolve, reject) => {
        const handlers = new Map();
        const stop = () => {
            clearTimeout(timer);
            for (const [event, handler] of handlers) {
                emitter.removeListener(event, handler);
            }
        };
        const timer = setTimeout(() => {
            stop();
            reject(new Error(`none of ${events.join('/')} within ${ms} ms`));
        }, ms);
        for (const event of events) {
            const handler = (ctx) => {
                if (filter(event, ctx)) {
                    stop();
                    resolve({ event, ctx });
                }
            };
            handlers.set(event, handler);
            emitter.on(event, handler);
        }
    });
}

/** A subscription whose events are logged into `sub.events`; not yet subscribed. */
function subscription(centrifuge, name) {
    const sub = centrifuge.newSubscription(name);
    sub.events = [];
    for (const event of ['subscribing', 'subscribed', 'unsubscribed', 'error']) {
        sub.on(event, (ctx) => sub.events.push({ event, ...ctx }));
    }
    return sub;
}

/** Subscribes to `name` and waits for `subscribed`; returns [subscription, context]. */
async function subscribe(centrifuge, name) {
    const sub = subscription(centrifuge, name);
    const subscribed = next(sub, 'subscribed');
    const refused = next(sub, 'unsubscribed').then(
        (ctx) => {
            throw new Error(`${name}: unsubscribed ${ctx.code} ${ctx.reason}: ${show(sub.events)}`);
        },
        () => new Promise(() => {}),
    );
    sub.subscribe();
    return [sub, await Promise.race([subscribed, refused])];
}

/** Collects the publications of `sub` as they arrive. */
function collect(sub) {
    const publications = [];
    sub.on('publication', (ctx) => publications.push(ctx));
    return publications;
}

/** The error `promise` rejects with; fails if it resolves. */
async function rejection(promise, what) {
    try {
        const value = await promise;
        throw new Error(`${what} succeeded (${show(value)}) although it should have failed`);
    } catch (error) {
        if (error instanceof Error) {
            throw error;
        }
        // The SDK rejects with plain { code, message, temporary } objects.
        return error;
    }
}

// ---------------------------------------------------------------------------------------
// Scenarios.

const scenarios = {
    async 'connect-with-cookie'() {
        const alice = client('alice', { data: { hello: 'world' } });
        const ctx = await connect(alice);
        // The backend's result.data reaches the client as the connect reply's data.
        check(
            isDeepStrictEqual(ctx.data, { greeting: 'hi alice', echo: { hello: 'world' } }),
            `connected data ${show(ctx.data)}`,
        );
        check(typeof ctx.client === 'string' && ctx.client.length > 0, `no client id: ${show(ctx)}`);

        const seen = await requests('/connect');
        check(seen.length > 0, 'the backend got no /connect request');
        const { headers, body } = seen[seen.length - 1];
        const about = `/connect request ${show(seen[seen.length - 1])}`;
        // Listed in http_headers: copied from the client's handshake.
        check((headers.cookie ?? '').includes('session=alice'), `cookie: ${about}`);
        // The configured static header.
        check(headers['x-tether-secret'] === 'proxy-secret-0123', `x-tether-secret: ${about}`);
        // The client sends no X-Real-Ip: the gateway fills it with the client's address.
        check(headers['x-real-ip'] === '127.0.0.1', `x-real-ip: ${about}`);
        // The handshake's own headers are not forwarded. The gateway's HTTP client may
        // well send a Connection header of its own (keep-alive, close), but never the
        // handshake's `Upgrade`.
        check(headers.upgrade === undefined, `upgrade forwarded: ${about}`);
        check(!/upgrade/i.test(headers.connection ?? ''), `the handshake's connection header forwarded: ${about}`);
        const websocketHeaders = Object.keys(headers).filter((name) => name.startsWith('sec-websocket-'));
        check(websocketHeaders.length === 0, `${websocketHeaders.join(', ')} forwarded: ${about}`);
        check(body.transport === 'websocket', `transport: ${about}`);
        check(body.protocol === 'json', `protocol: ${about}`);
        check(body.encoding === 'json', `encoding: ${about}`);
        check(isDeepStrictEqual(body.data, { hello: 'world' }), `data: ${about}`);
        check(body.client === ctx.client, `client ${show(body.client)}, the SDK's is ${ctx.client}: ${about}`);
    },

    async 'connect-refused'() {
        // No cookie: the backend answers `disconnect` 4501, a code in 4500-4999, which
        // the SDK takes as terminal: `disconnected`, no reconnect.
        const anonymous = client();
        const disconnected = next(anonymous, 'disconnected');
        anonymous.connect();
        const ctx = await disconnected;
        check(ctx.code === 4501 && ctx.reason === 'unauthorized', `disconnected with ${ctx.code} ${ctx.reason}, expected 4501 unauthorized`);
        let connecting = 0;
        anonymous.on('connecting', () => {
            connecting += 1;
        });
        await sleep(1500);
        check(connecting === 0, `the client tried to reconnect ${connecting} time(s): ${show(anonymous.events)}`);
        check(anonymous.state === 'disconnected', `state ${anonymous.state}`);
        check(!anonymous.events.some((e) => e.event === 'connected'), `connected: ${show(anonymous.events)}`);
    },

    async 'connect-custom-error'() {
        // The backend answers `error` 1001. centrifuge-js 5.8.0 (_connectError): an error
        // with a code >= 100 that is not temporary emits no `error` event; the client goes
        // straight to `disconnected` with the error's code and message, and stays there.
        const mallory = client('custom-error');
        const disconnected = next(mallory, 'disconnected');
        mallory.connect();
        const ctx = await disconnected;
        check(
            ctx.code === 1001 && ctx.reason === 'custom connect error',
            `disconnected with ${ctx.code} ${ctx.reason}, expected 1001 custom connect error: ${show(mallory.events)}`,
        );
        await sleep(1500);
        const connecting = mallory.events.filter((e) => e.event === 'connecting' && e.code !== 0);
        check(connecting.length === 0, `the client tried to reconnect: ${show(mallory.events)}`);
        check(!mallory.events.some((e) => e.event === 'error'), `an error event although the error is terminal: ${show(mallory.events)}`);
        check(!mallory.events.some((e) => e.event === 'connected'), `connected: ${show(mallory.events)}`);
        check(mallory.state === 'disconnected', `state ${mallory.state}`);
    },

    async 'server-side-channel'() {
        // The connect result's `channels` subscribes the connection server-side: the
        // SDK reports those on the Centrifuge object, not on a Subscription.
        const alice = client('alice');
        const subscribed = expect(alice, 'subscribed', 5000, (ctx) => ctx.channel === 'notify:alice');
        await connect(alice);
        await subscribed;
        const publication = expect(alice, 'publication', 5000, (ctx) => ctx.channel === 'notify:alice');
        await api('publish', { channel: 'notify:alice', data: { n: 1 } });
        const ctx = await publication;
        check(isDeepStrictEqual(ctx.data, { n: 1 }), `publication ${show(ctx)}`);
    },

    async 'subscribe-allowed-and-refused'() {
        const alice = client('alice');
        const connected = await connect(alice);
        const room = channel('room', '1');
        const [, ctx] = await subscribe(alice, room);
        // The subscribe result's data reaches the client in the subscribed context.
        check(isDeepStrictEqual(ctx.data, { welcome: room }), `subscribed ${show(ctx)}`);

        // A non-temporary subscribe error (>= 100): the subscription goes to
        // `unsubscribed` with the error's code and message, with no `error` event
        // (centrifuge-js 5.8.0, _subscribeError), and does not try again.
        const secret = channel('secret', '1');
        const sub = subscription(alice, secret);
        const unsubscribed = next(sub, 'unsubscribed');
        sub.subscribe();
        const refused = await unsubscribed;
        check(
            refused.code === 103 && refused.reason === 'permission denied',
            `${secret}: unsubscribed with ${refused.code} ${refused.reason}, expected 103 permission denied`,
        );
        await sleep(300);
        check(sub.state === 'unsubscribed', `${secret}: state ${sub.state}: ${show(sub.events)}`);
        check(!sub.events.some((e) => e.event === 'subscribed' || e.event === 'error'), `${secret}: ${show(sub.events)}`);
        check(alice.state === 'connected', `a refused subscription changed the connection: ${alice.state}`);

        // `capped` grants nothing and asks no hook: only the `caps` of the connect
        // answer let alice subscribe to capped:alice (and nobody to capped:bob).
        await subscribe(alice, 'capped:alice');
        const other = subscription(alice, 'capped:bob');
        const denied = next(other, 'unsubscribed');
        other.subscribe();
        const deniedCtx = await denied;
        check(deniedCtx.code === 103, `capped:bob: unsubscribed with ${deniedCtx.code}, expected 103`);

        const asked = (await requests('/subscribe')).filter((r) => r.body?.channel === room);
        check(asked.length === 1, `${asked.length} /subscribe requests for ${room}`);
        const { body, headers } = asked[0];
        check(body.user === 'alice' && body.client === connected.client, `/subscribe request ${show(asked[0])}`);
        // The subscribe hook forwards the cookie too: the session kept it past connect.
        check((headers.cookie ?? '').includes('session=alice'), `/subscribe headers ${show(headers)}`);
    },

    async 'publish-rewritten'() {
        const first = client('alice');
        const second = client('alice');
        await connect(first);
        await connect(second);
        const room = channel('room', '2');
        const [firstSub] = await subscribe(first, room);
        const [secondSub] = await subscribe(second, room);
        const received = [collect(firstSub), collect(secondSub)];

        // The backend's result.data replaces what was published, for every subscriber.
        await firstSub.publish({ text: 'hello' });
        await until(() => received.every((list) => list.length >= 1), 'the rewritten publication on both clients');
        for (const list of received) {
            check(isDeepStrictEqual(list[0].data, { text: 'HELLO', by: 'alice' }), `publication ${show(list[0])}`);
        }
        const asked = (await requests('/publish')).filter((r) => r.body?.channel === room);
        check(asked.length === 1 && asked[0].body.user === 'alice', `/publish requests ${show(asked)}`);

        const error = await rejection(firstSub.publish({ forbidden: true }), 'a forbidden publish');
        check(error.code === 403, `forbidden publish: ${show(error)}, expected error 403`);
        await sleep(500);
        check(received.every((list) => list.length === 1), `a refused publication arrived: ${show(received)}`);
        check(first.state === 'connected' && firstSub.state === 'subscribed', 'a refused publish changed state');
    },

    async rpc() {
        const alice = client('alice');
        await connect(alice);
        const sum = await alice.rpc('sum', { a: 1, b: 2 });
        check(isDeepStrictEqual(sum.data, { sum: 3 }), `rpc sum: ${show(sum)}`);

        // A backend `error` rejects the call with it; the connection stays.
        const error = await rejection(alice.rpc('fail', {}), 'rpc fail');
        check(error.code === 1002 && error.message === 'rpc failed', `rpc fail: ${show(error)}`);
        check(alice.state === 'connected', `state after a failed rpc: ${alice.state}`);

        // A backend `disconnect` ends the connection; 4502 is terminal (4500-4999).
        // The call itself then rejects (the SDK's "disconnected"): nothing to check there.
        const disconnected = next(alice, 'disconnected');
        alice.rpc('bye', {}).catch(() => {});
        const ctx = await disconnected;
        check(ctx.code === 4502 && ctx.reason === 'bye', `disconnected with ${ctx.code} ${ctx.reason}, expected 4502 bye`);
        await sleep(500);
        check(alice.state === 'disconnected', `state ${alice.state}: ${show(alice.events)}`);
    },

    async refresh() {
        // The connect result expires in 2 s. The gateway, not the SDK, refreshes it
        // through the refresh hook (the connect reply must not ask the SDK to: this
        // client has no getToken, so it would give up with `disconnected` 1
        // unauthorized). The backend extends the first time and says `expired` the
        // second: the gateway ends the connection with 3005 (connection expired),
        // which the SDK reconnects after (`connecting` 3005).
        const bob = client('shortlived');
        const { client: id } = await connect(bob);
        const started = Date.now();
        const ended = await firstOf(bob, ['connecting', 'disconnected'], 8000);
        check(
            ended.ctx.code === 3005,
            `${ended.event} with ${ended.ctx.code} ${ended.ctx.reason} after ${Date.now() - started} ms, expected 3005: ${show(bob.events)}`,
        );
        const refreshes = (await requests('/refresh')).filter((r) => r.body?.client === id);
        check(refreshes.length >= 2, `${refreshes.length} /refresh request(s) for ${id}, expected 2 or more`);
        check(refreshes.every((r) => r.body.user === 'bob'), `/refresh requests ${show(refreshes)}`);
        bob.disconnect();
    },

    async 'sub-refresh'() {
        // The subscribe result expires in 2 s; the gateway refreshes it through the
        // sub_refresh hook, which extends once and then says `expired`. The gateway then
        // ends the subscription with an unsubscribe push 2501 (subscription expired).
        // centrifuge-js 5.8.0 (_handleUnsubscribe): a code >= 2500 means subscribe
        // again, so the subscription emits `subscribing` with 2501, not `unsubscribed`.
        const alice = client('alice');
        const { client: id } = await connect(alice);
        const name = channel('expiring', '1');
        const [sub] = await subscribe(alice, name);
        const started = Date.now();
        const ended = await firstOf(sub, ['subscribing', 'unsubscribed'], 8000);
        check(
            ended.event === 'subscribing' && ended.ctx.code === 2501,
            `${ended.event} with ${ended.ctx.code} ${ended.ctx.reason} after ${Date.now() - started} ms, expected subscribing 2501: ${show(sub.events)}`,
        );
        check(alice.state === 'connected', `the connection is ${alice.state}`);
        // The first call extended the subscription: ending it took a second one.
        const refreshes = (await requests('/sub_refresh')).filter((r) => r.body?.channel === name && r.body?.client === id);
        check(refreshes.length >= 2, `${refreshes.length} /sub_refresh request(s) for ${name}, expected 2 or more`);
        check(refreshes.every((r) => r.body.user === 'alice'), `/sub_refresh requests ${show(refreshes)}`);
    },

    async send() {
        const alice = client('alice');
        await connect(alice);
        await alice.send({ ping: 1 });
        // Nothing comes back for a send: the backend's record is the only trace.
        const deadline = Date.now() + 2000;
        for (;;) {
            const seen = await requests('/send');
            if (seen.some((r) => isDeepStrictEqual(r.body?.data, { ping: 1 }) && r.body?.user === 'alice')) {
                return;
            }
            check(Date.now() < deadline, `no /send request with data {ping: 1} from alice within 2 s: ${show(seen)}`);
            await sleep(50);
        }
    },

    async 'backend-down'() {
        // The connect hook fails (backend down, too slow for the gateway's timeout, or
        // not JSON): the gateway answers the connect with error 100 (internal), which is
        // temporary. centrifuge-js 5.8.0 (_connectError) emits `error` of type connect
        // and reconnects (`connecting` 100), failing the same way again. A gateway whose
        // hook timeout is over the slow backend's 3 s would connect instead: a failure.
        const alice = client('alice');
        alice.connect();
        for (let attempt = 1; attempt <= 2; attempt += 1) {
            const { event, ctx } = await firstOf(alice, ['error', 'connected', 'disconnected'], 10000);
            check(
                event === 'error' && ctx.type === 'connect' && ctx.error?.code === 100,
                `attempt ${attempt}: ${event} ${show(ctx)}, expected a connect error 100: ${show(alice.events)}`,
            );
        }
        check(alice.state === 'connecting', `state ${alice.state}: ${show(alice.events)}`);
        alice.disconnect();
    },
};

/** Run only when named with --only: they need a gateway set up for them. */
const onDemand = new Set(['backend-down']);

// ---------------------------------------------------------------------------------------

const names = args.only ? [args.only] : Object.keys(scenarios).filter((name) => !onDemand.has(name));
await runScenarios(scenarios, names, clients, async (name) => {
    if (onDemand.has(name)) {
        // Its backend may well be down: nothing to reset then.
        await resetBackend().catch(() => {});
    } else {
        await resetBackend();
    }
});
