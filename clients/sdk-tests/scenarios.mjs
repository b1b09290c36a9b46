// Drives tetherd with the real `centrifuge` SDK (npm, 5.x) in Node, with the `ws`
// package as its WebSocket: tokens, subscriptions, publications through the HTTP API,
// presence, history, join/leave, client publish, token refresh and recovery.
//
//   node scenarios.mjs --ws URL --http URL --api-key KEY --secret HMAC_SECRET \
//        --rsa-key PRIVATE_KEY.pem [--only NAME]
//
// Prints `ok NAME` or `FAIL NAME: reason` per scenario and a closing
// `N passed, N failed` line; exits 0 only when all passed.
//
// The gateway's config must have these namespaces (see crates/tetherd/tests/gateway_sdk.rs):
//   chat    subscribe and publish for clients, history + recovery, presence, join_leave
//   news    history + recovery, no client publish
//   private subscribe for clients with a user, not for anonymous ones (auth.allow_anonymous = true overall)
//   open    subscribe for clients, anonymous ones too
//   secret  no grants: subscription tokens only
// and `auth.token_refresh_grace = "1s"`, so an unrefreshed token ends a connection soon.

import { createSign, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import net from 'node:net';
import { parseArgs } from 'node:util';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

import { apiCall, b64url, check, hs256 as signHs256, next, runScenarios, sleep, until } from './support.mjs';

const { values: args } = parseArgs({
    options: {
        ws: { type: 'string' },
        http: { type: 'string' },
        'api-key': { type: 'string' },
        secret: { type: 'string' },
        'rsa-key': { type: 'string' },
        only: { type: 'string' },
    },
});
for (const name of ['ws', 'http', 'api-key', 'secret', 'rsa-key']) {
    if (!args[name]) {
        console.error(`missing --${name}`);
        process.exit(2);
    }
}
const rsaKey = readFileSync(args['rsa-key'], 'utf8');

// ---------------------------------------------------------------------------------------
// Tokens, signed here with node:crypto.

const hs256 = (claims, secret = args.secret) => signHs256(claims, secret);

function rs256(claims) {
    const signed = `${b64url(JSON.stringify({ alg: 'RS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
    return `${signed}.${createSign('RSA-SHA256').update(signed).sign(rsaKey, 'base64url')}`;
}

const now = () => Math.floor(Date.now() / 1000);
const userToken = (user, extra = {}) => hs256({ sub: user, exp: now() + 600, ...extra });

// ---------------------------------------------------------------------------------------
// Helpers.

/** A fresh channel name, so scenarios never share state. */
const channel = (namespace, name) => `${namespace}:${name}-${randomBytes(4).toString('hex')}`;

/** `POST /api/METHOD` with the API key; returns `result`, throws on an `error`. */
const api = (method, body) => apiCall(args.http, args['api-key'], method, body);

/** Clients made by a scenario; all disconnected when it ends. */
const clients = [];

/** A `Centrifuge` client with `ws` as its WebSocket and quick reconnects; not yet connected. */
function client(options = {}, url = args.ws) {
    const centrifuge = new Centrifuge(url, {
        websocket: WebSocket,
        minReconnectDelay: 100,
        maxReconnectDelay: 500,
        ...options,
    });
    // Errors are asserted through events; keep unhandled ones from ending the process.
    centrifuge.on('error', () => {});
    clients.push(centrifuge);
    return centrifuge;
}

/** Connects `centrifuge` and returns the `connected` context. */
async function connect(centrifuge) {
    const connected = next(centrifuge, 'connected');
    centrifuge.connect();
    return connected;
}

/** Subscribes and waits for `subscribed`; returns [subscription, context]. */
async function subscribe(centrifuge, name, options = {}) {
    const sub = centrifuge.newSubscription(name, options);
    sub.on('error', () => {});
    const subscribed = next(sub, 'subscribed');
    const unsubscribed = next(sub, 'unsubscribed', 5000).then(
        (ctx) => {
            throw new Error(`${name}: unsubscribed ${ctx.code} ${ctx.reason}`);
        },
        () => new Promise(() => {}),
    );
    sub.subscribe();
    const ctx = await Promise.race([subscribed, unsubscribed]);
    return [sub, ctx];
}

/** Subscribes expecting a refusal; returns the `unsubscribed` context. */
async function subscribeRefused(centrifuge, name, options = {}) {
    const sub = centrifuge.newSubscription(name, options);
    sub.on('error', () => {});
    let subscribed = false;
    sub.on('subscribed', () => {
        subscribed = true;
    });
    const unsubscribed = next(sub, 'unsubscribed');
    sub.subscribe();
    const ctx = await unsubscribed;
    check(!subscribed, `${name}: subscribed although it should have been refused`);
    return ctx;
}

/** Collects the publications of `sub` as they arrive. */
function collect(sub) {
    const publications = [];
    sub.on('publication', (ctx) => publications.push(ctx));
    return publications;
}

/**
 * A TCP proxy in front of the gateway: `cut()` destroys every connection through it
 * and refuses new ones until `restore()`; the client sees its socket die.
 */
async function proxy() {
    const target = new URL(args.ws);
    const sockets = new Set();
    let down = false;
    const server = net.createServer((downstream) => {
        if (down) {
            downstream.destroy();
            return;
        }
        const upstream = net.connect(Number(target.port), target.hostname);
        const kill = () => {
            downstream.destroy();
            upstream.destroy();
            sockets.delete(downstream);
            sockets.delete(upstream);
        };
        for (const socket of [downstream, upstream]) {
            sockets.add(socket);
            socket.on('error', kill);
            socket.on('close', kill);
        }
        downstream.pipe(upstream);
        upstream.pipe(downstream);
    });
    await new Promise((resolve) => server.listen(0, '127.0.0.1', resolve));
    return {
        url: `ws://127.0.0.1:${server.address().port}${target.pathname}`,
        cut() {
            down = true;
            for (const socket of sockets) {
                socket.destroy();
            }
            sockets.clear();
        },
        restore() {
            down = false;
        },
        close() {
            this.cut();
            server.close();
        },
    };
}

// ---------------------------------------------------------------------------------------
// Scenarios.

const scenarios = {
    async 'jwt-hs256'() {
        const alice = client({ token: userToken('alice') });
        const ctx = await connect(alice);
        check(typeof ctx.client === 'string' && ctx.client.length > 0, `no client id: ${JSON.stringify(ctx)}`);
        // The user is the token's `sub`: presence shows it.
        const [sub] = await subscribe(alice, channel('chat', 'hs'));
        const presence = await sub.presence();
        const entry = presence.clients[ctx.client];
        check(entry && entry.user === 'alice', `presence: ${JSON.stringify(presence)}`);
    },

    async 'jwt-rs256'() {
        const bob = client({ token: rs256({ sub: 'bob', exp: now() + 600 }) });
        const ctx = await connect(bob);
        check(ctx.client.length > 0, `no client id: ${JSON.stringify(ctx)}`);
        const [sub] = await subscribe(bob, channel('chat', 'rs'));
        const presence = await sub.presence();
        check(presence.clients[ctx.client]?.user === 'bob', `presence: ${JSON.stringify(presence)}`);
    },

    async 'bad-token'() {
        const wrong = hs256({ sub: 'alice', exp: now() + 600 }, 'not-the-secret-0123456789abcdef0123456789');
        const mallory = client({ token: wrong });
        let connected = false;
        let connecting = 0;
        mallory.on('connected', () => {
            connected = true;
        });
        const disconnected = next(mallory, 'disconnected');
        mallory.connect();
        mallory.on('connecting', () => {
            connecting += 1;
        });
        const ctx = await disconnected;
        check(ctx.code === 3500, `disconnected with ${ctx.code} ${ctx.reason}, expected 3500`);
        // No reconnect: it stays disconnected well past the reconnect delays.
        await sleep(1500);
        check(!connected, 'the client connected with a bad token');
        check(connecting === 0, `the client tried to reconnect ${connecting} time(s)`);
        check(mallory.state === 'disconnected', `state ${mallory.state}`);
    },

    async 'anonymous-refused-in-protected-namespace'() {
        const anonymous = client();
        await connect(anonymous);
        const ctx = await subscribeRefused(anonymous, channel('private', 'anon'));
        check(ctx.code === 103, `unsubscribed with ${ctx.code} ${ctx.reason}, expected 103`);
        // The same anonymous client may use a namespace open to anonymous clients.
        await subscribe(anonymous, channel('open', 'anon'));
        check(anonymous.state === 'connected', `state ${anonymous.state}`);
    },

    async 'subscription-token'() {
        const alice = client({ token: userToken('alice') });
        await connect(alice);
        const room = channel('secret', 'room');
        const calls = [];
        const getToken = (ctx) => {
            calls.push(ctx.channel);
            return Promise.resolve(hs256({ sub: 'alice', channel: ctx.channel, exp: now() + 600 }));
        };
        const [sub] = await subscribe(alice, room, { getToken });
        check(calls.length === 1 && calls[0] === room, `getToken calls: ${JSON.stringify(calls)}`);
        // The subscription is live: a publication arrives.
        const publication = next(sub, 'publication');
        await api('publish', { channel: room, data: { hello: 'secret' } });
        check((await publication).data.hello === 'secret', 'publication data');

        // A token for another channel ends that connection, as in Centrifugo:
        // disconnect 3500 (invalid token), no reconnect. Other clients of the
        // same user are untouched.
        const mallory = client({ token: userToken('alice') });
        await connect(mallory);
        const gone = next(mallory, 'disconnected', 5000);
        mallory.newSubscription(channel('secret', 'other'), {
            getToken: () => Promise.resolve(hs256({ sub: 'alice', channel: room, exp: now() + 600 })),
        }).subscribe();
        const ended = await gone;
        check(ended.code === 3500, `disconnected with ${ended.code} ${ended.reason}, expected 3500`);
        await sleep(300);
        check(mallory.state === 'disconnected', `state after 3500: ${mallory.state}`);
        check(alice.state === 'connected', `alice state ${alice.state}`);
        check(sub.state === 'subscribed', `first subscription ${sub.state}`);
        // Subscribing without any token is refused too.
        const none = await subscribeRefused(alice, channel('secret', 'none'));
        check(none.code === 103, `no token: unsubscribed with ${none.code}, expected 103`);
    },

    async 'api-publications'() {
        const alice = client({ token: userToken('alice') });
        await connect(alice);
        const name = channel('chat', 'api');
        const [sub] = await subscribe(alice, name);
        const received = collect(sub);
        for (let i = 0; i < 20; i += 1) {
            await api('publish', { channel: name, data: { n: i } });
        }
        await until(() => received.length >= 20, `20 publications (got ${received.length})`);
        await sleep(200);
        check(received.length === 20, `${received.length} publications, expected 20`);
        received.forEach((ctx, i) => {
            check(ctx.data.n === i, `publication ${i} has ${JSON.stringify(ctx.data)}`);
            check(ctx.channel === name, `publication ${i} on ${ctx.channel}`);
            if (i > 0) {
                check(ctx.offset > received[i - 1].offset, `offsets ${received[i - 1].offset} then ${ctx.offset}`);
            }
        });
    },

    async 'presence-and-history'() {
        const name = channel('chat', 'presence');
        const alice = client({ token: userToken('alice', { info: { name: 'Alice' } }) });
        const bob = client({ token: userToken('bob') });
        const aliceId = (await connect(alice)).client;
        const bobId = (await connect(bob)).client;
        const [aliceSub] = await subscribe(alice, name);
        await subscribe(bob, name);

        const presence = await aliceSub.presence();
        const ids = Object.keys(presence.clients).sort();
        check(
            JSON.stringify(ids) === JSON.stringify([aliceId, bobId].sort()),
            `presence clients ${JSON.stringify(presence)}`,
        );
        check(presence.clients[aliceId].user === 'alice', `alice entry ${JSON.stringify(presence.clients[aliceId])}`);
        check(presence.clients[aliceId].connInfo?.name === 'Alice', `alice conn info ${JSON.stringify(presence.clients[aliceId])}`);
        check(presence.clients[bobId].user === 'bob', `bob entry ${JSON.stringify(presence.clients[bobId])}`);
        const stats = await aliceSub.presenceStats();
        check(stats.numClients === 2 && stats.numUsers === 2, `presence stats ${JSON.stringify(stats)}`);

        for (let i = 0; i < 3; i += 1) {
            await api('publish', { channel: name, data: { n: i } });
        }
        const history = await aliceSub.history({ limit: 10 });
        const data = history.publications.map((p) => p.data.n);
        check(JSON.stringify(data) === '[0,1,2]', `history ${JSON.stringify(history)}`);
        check(history.offset === history.publications[2].offset, `history position ${JSON.stringify(history)}`);
        check(typeof history.epoch === 'string' && history.epoch.length > 0, `history epoch ${JSON.stringify(history)}`);
        // With `since` and `reverse`: the ones before it, newest first.
        const since = { offset: history.publications[2].offset, epoch: history.epoch };
        const older = await aliceSub.history({ limit: 5, since, reverse: true });
        const olderData = older.publications.map((p) => p.data.n);
        check(JSON.stringify(olderData) === '[1,0]', `history before the newest ${JSON.stringify(older)}`);

        // Presence follows a client leaving.
        bob.disconnect();
        let count = 2;
        const deadline = Date.now() + 5000;
        while (count !== 1 && Date.now() < deadline) {
            count = (await aliceSub.presenceStats()).numClients;
            await sleep(50);
        }
        check(count === 1, `presence stats after bob left: ${count} clients`);
    },

    async 'join-leave'() {
        const name = channel('chat', 'joinleave');
        const alice = client({ token: userToken('alice') });
        const bob = client({ token: userToken('bob') });
        await connect(alice);
        const bobId = (await connect(bob)).client;
        const [aliceSub] = await subscribe(alice, name, { joinLeave: true });
        const joined = next(aliceSub, 'join', 5000, (ctx) => ctx.info.user === 'bob');
        const [bobSub] = await subscribe(bob, name, { joinLeave: true });
        const join = await joined;
        check(join.info.client === bobId && join.channel === name, `join ${JSON.stringify(join)}`);
        const left = next(aliceSub, 'leave', 5000, (ctx) => ctx.info.user === 'bob');
        bobSub.unsubscribe();
        const leave = await left;
        check(leave.info.client === bobId, `leave ${JSON.stringify(leave)}`);
    },

    async 'client-publish'() {
        const alice = client({ token: userToken('alice') });
        const bob = client({ token: userToken('bob') });
        const aliceId = (await connect(alice)).client;
        await connect(bob);
        const chat = channel('chat', 'publish');
        const [aliceSub] = await subscribe(alice, chat);
        const [bobSub] = await subscribe(bob, chat);
        const arrived = next(bobSub, 'publication');
        await aliceSub.publish({ text: 'hi' });
        const publication = await arrived;
        check(publication.data.text === 'hi', `publication ${JSON.stringify(publication)}`);
        check(publication.info?.client === aliceId && publication.info?.user === 'alice', `publisher info ${JSON.stringify(publication)}`);

        const news = channel('news', 'publish');
        const [newsSub] = await subscribe(alice, news);
        let error = null;
        try {
            await newsSub.publish({ text: 'nope' });
        } catch (e) {
            error = e;
        }
        check(error && error.code === 103, `publish to news: ${JSON.stringify(error)}, expected error 103`);
        check(alice.state === 'connected' && newsSub.state === 'subscribed', 'a refused publish changed state');
    },

    async 'token-refresh'() {
        // Tokens that live about 2 s: the connection outlives three of them.
        const calls = [];
        let connecting = 0;
        let disconnects = 0;
        const alice = client({
            token: userToken('alice', { exp: now() + 2 }),
            getToken: () => {
                calls.push(Date.now());
                return Promise.resolve(userToken('alice', { exp: now() + 2 }));
            },
        });
        alice.on('disconnected', () => {
            disconnects += 1;
        });
        const ctx = await connect(alice);
        alice.on('connecting', () => {
            connecting += 1;
        });
        const started = Date.now();
        // Past three expiries, each plus the gateway's 1 s grace.
        await sleep(8000);
        check(calls.length >= 3, `getToken was called ${calls.length} time(s), expected 3 or more`);
        check(alice.state === 'connected', `state ${alice.state} after ${Date.now() - started} ms`);
        check(connecting === 0 && disconnects === 0, `reconnected ${connecting} time(s), disconnected ${disconnects}`);
        // The same connection, still usable.
        const [sub] = await subscribe(alice, channel('chat', 'refresh'));
        const presence = await sub.presence();
        check(presence.clients[ctx.client]?.user === 'alice', `same client: ${JSON.stringify(presence)}`);
    },

    async 'token-expiry-without-refresh'() {
        // getToken never answers: the gateway, not the SDK, must end the
        // connection once the token and the grace are over, with 3005.
        let asked = 0;
        const alice = client({
            token: userToken('alice', { exp: now() + 2 }),
            getToken: () => {
                asked += 1;
                return new Promise(() => {});
            },
        });
        await connect(alice);
        const started = Date.now();
        const ended = await next(alice, 'connecting', 10000);
        check(ended.code === 3005, `connection ended with ${ended.code} ${ended.reason}, expected 3005`);
        check(asked >= 1, 'the SDK was never asked to refresh');
        check(Date.now() - started < 6000, `ended only after ${Date.now() - started} ms`);
    },

    async 'token-expiry-without-get-token'() {
        // Without getToken there is nothing to refresh with: the connection ends.
        const alice = client({ token: userToken('alice', { exp: now() + 2 }) });
        await connect(alice);
        const ended = await next(alice, 'disconnected', 10000);
        check(alice.state === 'disconnected', `state ${alice.state} after ${ended.code} ${ended.reason}`);
    },

    async 'sub-token-refresh'() {
        const alice = client({ token: userToken('alice') });
        await connect(alice);
        const room = channel('secret', 'refresh');
        const calls = [];
        const getToken = (ctx) => {
            calls.push(ctx.channel);
            return Promise.resolve(hs256({ sub: 'alice', channel: ctx.channel, exp: now() + 2 }));
        };
        const [sub] = await subscribe(alice, room, { getToken });
        let resubscribes = 0;
        sub.on('subscribing', () => {
            resubscribes += 1;
        });
        const received = collect(sub);
        // Past three expiries, each plus the 1 s grace.
        await sleep(8000);
        check(calls.length >= 4, `getToken was called ${calls.length} time(s), expected 4 or more`);
        check(sub.state === 'subscribed' && resubscribes === 0, `state ${sub.state}, ${resubscribes} resubscribe(s)`);
        await api('publish', { channel: room, data: { n: 1 } });
        await until(() => received.length === 1, 'a publication after three refreshes');
    },

    async 'sub-token-expiry'() {
        // The subscription token is not refreshed (getToken answers only the
        // first time): the gateway ends the subscription with 2501 and stops
        // delivering; the SDK tries to subscribe again.
        const alice = client({ token: userToken('alice') });
        await connect(alice);
        const room = channel('secret', 'expiry');
        let calls = 0;
        const getToken = (ctx) => {
            calls += 1;
            if (calls > 1) {
                return new Promise(() => {});
            }
            return Promise.resolve(hs256({ sub: 'alice', channel: ctx.channel, exp: now() + 2 }));
        };
        const [sub] = await subscribe(alice, room, { getToken });
        const received = collect(sub);
        const ended = await next(sub, 'subscribing', 10000);
        check(ended.code === 2501, `subscription ended with ${ended.code} ${ended.reason}, expected 2501`);
        await api('publish', { channel: room, data: { n: 1 } });
        await sleep(500);
        check(received.length === 0, `${received.length} publication(s) after the subscription expired`);
        check(alice.state === 'connected', `the connection is ${alice.state}`);
    },

    async 'subscribed-before-publications'() {
        // Publications stream into a channel while a client subscribes to it
        // again and again: each subscription's first event is `subscribed`,
        // never a publication that reached the channel while the subscribe
        // was being answered (those come in the reply's message, after it).
        const alice = client({ token: userToken('alice') });
        await connect(alice);
        const name = channel('chat', 'order');
        let publishing = true;
        const publisher = async () => {
            while (publishing) {
                await api('publish', { channel: name, data: { at: Date.now() } });
            }
        };
        const publishers = Array.from({ length: 6 }, publisher);
        const early = [];
        let delivered = 0;
        for (let round = 0; round < 60; round += 1) {
            const sub = alice.newSubscription(name);
            sub.on('error', () => {});
            let subscribed = false;
            sub.on('subscribed', () => {
                subscribed = true;
            });
            sub.on('publication', () => {
                delivered += 1;
                if (!subscribed) {
                    early.push(round);
                }
            });
            const done = next(sub, 'subscribed');
            sub.subscribe();
            await done;
            await sleep(10);
            sub.unsubscribe();
            alice.removeSubscription(sub);
        }
        publishing = false;
        await Promise.all(publishers);
        check(delivered > 0, 'no publication arrived at all');
        check(early.length === 0, `publications before subscribed in rounds ${JSON.stringify(early)}`);
    },

    async recovery() {
        await recoveryScenario({ removeHistory: false });
    },

    async 'recovery-impossible'() {
        await recoveryScenario({ removeHistory: true });
    },
};

/** Subscribe through a proxy, cut it, publish 25 while down, reconnect. */
async function recoveryScenario({ removeHistory }) {
    const link = await proxy();
    try {
        const name = channel('chat', removeHistory ? 'lost' : 'recover');
        const alice = client({ token: userToken('alice') }, link.url);
        await connect(alice);
        const subscribedEvents = [];
        const [sub, first] = await subscribe(alice, name);
        sub.on('subscribed', (ctx) => subscribedEvents.push(ctx));
        check(first.recoverable === true && first.wasRecovering === false, `first subscribe ${JSON.stringify(first)}`);
        const received = collect(sub);
        for (let i = 0; i < 3; i += 1) {
            await api('publish', { channel: name, data: { n: i } });
        }
        await until(() => received.length === 3, 'the first 3 publications');

        const subscribing = next(sub, 'subscribing');
        link.cut();
        await subscribing;
        const missed = [];
        for (let i = 3; i < 28; i += 1) {
            missed.push((await api('publish', { channel: name, data: { n: i } })).offset);
        }
        if (removeHistory) {
            await api('history_remove', { channel: name });
        }
        const resubscribed = next(sub, 'subscribed', 10000);
        link.restore();
        const ctx = await resubscribed;
        check(ctx.wasRecovering === true, `subscribed ${JSON.stringify(ctx)}: wasRecovering should be true`);
        if (removeHistory) {
            check(ctx.recovered === false, `subscribed ${JSON.stringify(ctx)}: recovered should be false`);
            await sleep(500);
            check(received.length === 3, `${received.length - 3} publications arrived although history was removed`);
        } else {
            check(ctx.recovered === true, `subscribed ${JSON.stringify(ctx)}: recovered should be true`);
            await until(() => received.length >= 28, `the 25 missed publications (got ${received.length - 3})`);
        }
        // A live publication after the resubscribe ends the stream: nothing
        // arrives twice, nothing is missing, all in order.
        await api('publish', { channel: name, data: { n: 'live' } });
        const total = removeHistory ? 4 : 29;
        await until(() => received.length >= total, `the live publication (have ${received.length})`);
        await sleep(300);
        const got = received.map((p) => p.data.n);
        const want = removeHistory
            ? [0, 1, 2, 'live']
            : [...Array.from({ length: 28 }, (_, i) => i), 'live'];
        check(JSON.stringify(got) === JSON.stringify(want), `publications ${JSON.stringify(got)}`);
        if (!removeHistory) {
            const offsets = received.slice(3, 28).map((p) => p.offset);
            check(JSON.stringify(offsets) === JSON.stringify(missed), `recovered offsets ${offsets} vs published ${missed}`);
        }
        check(subscribedEvents.length === 1, `${subscribedEvents.length} subscribed events after the cut`);
    } finally {
        link.close();
    }
}

// ---------------------------------------------------------------------------------------

const names = args.only ? [args.only] : Object.keys(scenarios);
await runScenarios(scenarios, names, clients);
