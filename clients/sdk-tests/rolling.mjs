// The two sides of the rolling-restart test (crates/tetherd/tests/gateway_rolling.rs), with the
// real `centrifuge` SDK in Node and `ws` as its WebSocket.
//
//   node rolling.mjs subscribers --ws URL --channel CH --clients N [--min-delay MS --max-delay MS]
//       Connects N clients and subscribes each to CH (a namespace with history and recovery),
//       prints `subscribed N`, then records every publication's `data.n`. On the stdin line
//       `expect LAST` it waits until every client has LAST, prints one JSON summary line
//       (lost, duplicated and reordered numbers, resubscribes and their durations) and exits.
//
//   node rolling.mjs publisher --http URL --api-key KEY --channel CH --rate PER_SECOND
//       Publishes {"n": 1}, {"n": 2}, ... through POST /api/publish at a steady rate, prints
//       `published 1` after the first; on the stdin line `stop` prints `last N failures F` and
//       exits. A publish whose outcome is unknown (an HTTP error or a cut connection) is checked
//       against the channel's newest history entry and only sent again if it is not there, so
//       every number is published exactly once.

import { performance } from 'node:perf_hooks';
import readline from 'node:readline';
import { parseArgs } from 'node:util';

import { Centrifuge } from 'centrifuge';
import WebSocket from 'ws';

const mode = process.argv[2];
const { values: args } = parseArgs({
    args: process.argv.slice(3),
    options: {
        ws: { type: 'string' },
        http: { type: 'string' },
        'api-key': { type: 'string' },
        channel: { type: 'string' },
        clients: { type: 'string', default: '250' },
        rate: { type: 'string', default: '30' },
        'min-delay': { type: 'string', default: '100' },
        'max-delay': { type: 'string', default: '2000' },
        'wait-ms': { type: 'string', default: '60000' },
    },
});

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

/** Resolves with the first stdin line starting with `word`, as its remaining text. */
function stdinCommand(word) {
    const lines = readline.createInterface({ input: process.stdin });
    return new Promise((resolve, reject) => {
        lines.on('line', (line) => {
            if (line.startsWith(`${word}`)) {
                resolve(line.slice(word.length).trim());
            }
        });
        lines.on('close', () => reject(new Error(`stdin closed before \`${word}\``)));
    });
}

function need(...names) {
    for (const name of names) {
        if (!args[name]) {
            console.error(`rolling.mjs ${mode}: missing --${name}`);
            process.exit(2);
        }
    }
}

// ---------------------------------------------------------------------------------------
// Subscribers.

/** One SDK client and what it saw. */
class Subscriber {
    constructor(id) {
        this.id = id;
        this.numbers = [];
        /** Set by the first `subscribed`; later ones are resubscribes. */
        this.subscribedOnce = false;
        /** performance.now() when the connection was lost, while reconnecting. */
        this.lostAt = null;
        /** Milliseconds from losing the connection to being connected again, per reconnect. */
        this.connects = [];
        /** Milliseconds from losing the connection to being subscribed again, per reconnect. */
        this.reconnects = [];
        this.unrecovered = [];
        this.events = [];
        this.centrifuge = new Centrifuge(args.ws, {
            websocket: WebSocket,
            minReconnectDelay: Number(args['min-delay']),
            maxReconnectDelay: Number(args['max-delay']),
            timeout: 10000,
        });
        this.centrifuge.on('error', (ctx) => this.note(`client error ${JSON.stringify(ctx.error)}`));
        this.centrifuge.on('connecting', (ctx) => {
            this.note(`connecting ${ctx.code} ${ctx.reason}`);
            if (this.lostAt === null && this.subscribedOnce) {
                this.lostAt = performance.now();
            }
        });
        this.centrifuge.on('connected', (ctx) => {
            this.note(`connected ${ctx.client}`);
            if (this.lostAt !== null) {
                this.connects.push(performance.now() - this.lostAt);
            }
        });
        this.centrifuge.on('disconnected', (ctx) => this.note(`disconnected ${ctx.code} ${ctx.reason}`));
        this.subscription = this.centrifuge.newSubscription(args.channel);
        this.subscription.on('error', (ctx) => this.note(`subscription error ${JSON.stringify(ctx.error)}`));
        this.subscription.on('unsubscribed', (ctx) => this.note(`unsubscribed ${ctx.code} ${ctx.reason}`));
        this.subscription.on('publication', (ctx) => this.numbers.push(ctx.data.n));
        this.subscription.on('subscribed', (ctx) => {
            this.note(`subscribed recovered=${ctx.recovered} position=${JSON.stringify(ctx.streamPosition)} last=${this.numbers.at(-1)}`);
            if (this.subscribedOnce) {
                if (this.lostAt !== null) {
                    this.reconnects.push(performance.now() - this.lostAt);
                    this.lostAt = null;
                }
                if (!ctx.wasRecovering || !ctx.recovered) {
                    this.unrecovered.push({ wasRecovering: ctx.wasRecovering, recovered: ctx.recovered });
                }
            }
            this.subscribedOnce = true;
        });
    }

    /** Keeps the last few lifecycle events for the failure report. */
    note(event) {
        this.events.push(`${Math.round(performance.now())}ms ${event}`);
        if (this.events.length > 20) {
            this.events.shift();
        }
    }

    async start() {
        const subscribed = new Promise((resolve) => this.subscription.once('subscribed', resolve));
        this.subscription.subscribe();
        this.centrifuge.connect();
        await subscribed;
    }

    /** Lost, duplicated and reordered numbers against 1..last. */
    check(last) {
        const seen = new Set();
        let duplicated = 0;
        let reordered = 0;
        let highest = 0;
        for (const n of this.numbers) {
            if (seen.has(n)) {
                duplicated += 1;
            } else {
                seen.add(n);
            }
            if (n < highest) {
                reordered += 1;
            }
            highest = Math.max(highest, n);
        }
        const missing = [];
        for (let n = 1; n <= last; n += 1) {
            if (!seen.has(n)) {
                missing.push(n);
            }
        }
        const extra = [...seen].filter((n) => !(Number.isInteger(n) && n >= 1 && n <= last)).length;
        return { lost: missing.length, duplicated, reordered, extra, missing: missing.slice(0, 10) };
    }
}

async function subscribers() {
    need('ws', 'channel');
    const count = Number(args.clients);
    const clients = Array.from({ length: count }, (_, i) => new Subscriber(i));
    // A few handshakes at a time, as real clients arrive, not all in one burst.
    const batch = 50;
    for (let i = 0; i < count; i += batch) {
        await Promise.all(clients.slice(i, i + batch).map((client) => client.start()));
    }
    console.log(`subscribed ${count}`);

    const last = Number(await stdinCommand('expect'));
    const deadline = performance.now() + Number(args['wait-ms']);
    const complete = (client) => client.numbers.includes(last);
    while (!clients.every(complete) && performance.now() < deadline) {
        await sleep(50);
    }
    // Anything that would arrive twice arrives within moments of the last number.
    await sleep(500);

    const summary = {
        clients: count,
        lost: 0,
        duplicated: 0,
        reordered: 0,
        extra: 0,
        incomplete: 0,
        unrecovered: 0,
        notReconnected: 0,
        connects: [],
        reconnects: [],
        /** Clients that lack each number (among each client's first few missing ones). */
        missing: {},
        problems: [],
    };
    for (const client of clients) {
        const result = client.check(last);
        summary.lost += result.lost;
        summary.duplicated += result.duplicated;
        summary.reordered += result.reordered;
        summary.extra += result.extra;
        summary.unrecovered += client.unrecovered.length;
        summary.connects.push(...client.connects.map(Math.round));
        summary.reconnects.push(...client.reconnects.map(Math.round));
        if (!complete(client)) {
            summary.incomplete += 1;
        }
        if (client.reconnects.length === 0) {
            summary.notReconnected += 1;
        }
        for (const n of result.missing) {
            summary.missing[n] = (summary.missing[n] ?? 0) + 1;
        }
        const bad = result.lost + result.duplicated + result.reordered + result.extra + client.unrecovered.length;
        if ((bad > 0 || !complete(client)) && summary.problems.length < 5) {
            summary.problems.push({
                client: client.id,
                ...result,
                unrecovered: client.unrecovered,
                received: client.numbers.length,
                events: client.events,
            });
        }
    }
    console.log(JSON.stringify(summary));
    for (const client of clients) {
        client.centrifuge.disconnect();
    }
    process.exit(0);
}

// ---------------------------------------------------------------------------------------
// Publisher.

/** POST /api/METHOD; returns `result`, throws on any failure. */
async function api(method, body) {
    const response = await fetch(`${args.http}/api/${method}`, {
        method: 'POST',
        headers: { 'X-API-Key': args['api-key'], 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
        signal: AbortSignal.timeout(10000),
    });
    const text = await response.text();
    if (!response.ok) {
        throw new Error(`/api/${method}: HTTP ${response.status}: ${text.slice(0, 200)}`);
    }
    const reply = JSON.parse(text);
    if (reply.error) {
        throw new Error(`/api/${method}: ${text}`);
    }
    return reply.result;
}

/** Publishes `n` exactly once; returns how many attempts failed on the way. */
async function publishOnce(n) {
    let failures = 0;
    for (;;) {
        try {
            const { offset } = await api('publish', { channel: args.channel, data: { n } });
            if (offset !== n) {
                console.error(`publish ${n} got offset ${offset}`);
            }
            return failures;
        } catch (error) {
            failures += 1;
            console.error(`publish ${n} failed: ${error.message}`);
        }
        // Did the failed attempt take effect? The newest history entry says.
        for (;;) {
            try {
                const history = await api('history', { channel: args.channel, limit: 1, reverse: true });
                if (history.publications?.[0]?.data?.n === n) {
                    return failures;
                }
                break;
            } catch (error) {
                console.error(`history after publish ${n} failed: ${error.message}`);
                await sleep(100);
            }
        }
        await sleep(50);
    }
}

async function publisher() {
    need('http', 'api-key', 'channel');
    let stopping = false;
    stdinCommand('stop').then(
        () => (stopping = true),
        () => (stopping = true),
    );
    const interval = 1000 / Number(args.rate);
    const started = performance.now();
    let failures = 0;
    let n = 0;
    while (!stopping) {
        n += 1;
        failures += await publishOnce(n);
        if (n === 1) {
            console.log('published 1');
        }
        const wait = started + n * interval - performance.now();
        if (wait > 0) {
            await sleep(wait);
        }
    }
    console.log(`last ${n} failures ${failures}`);
    process.exit(0);
}

if (mode === 'subscribers') {
    await subscribers();
} else if (mode === 'publisher') {
    await publisher();
} else {
    console.error('usage: node rolling.mjs subscribers|publisher [options]');
    process.exit(2);
}
