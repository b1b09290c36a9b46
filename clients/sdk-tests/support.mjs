// Helpers shared by the SDK drivers (scenarios.mjs, cluster.mjs): waiting for events,
// HS256 tokens signed with node:crypto, and the server API.

import { createHmac } from 'node:crypto';

export const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

export function check(condition, message) {
    if (!condition) {
        throw new Error(message);
    }
}

export const b64url = (value) => Buffer.from(value).toString('base64url');

/** A JWT with `claims`, signed with HS256 and `secret`. */
export function hs256(claims, secret) {
    const signed = `${b64url(JSON.stringify({ alg: 'HS256', typ: 'JWT' }))}.${b64url(JSON.stringify(claims))}`;
    return `${signed}.${createHmac('sha256', secret).update(signed).digest('base64url')}`;
}

/** Resolves with the first `event` of `emitter` (matching `filter`), rejects after `ms`. */
export function next(emitter, event, ms = 5000, filter = () => true) {
    return new Promise((resolve, reject) => {
        const timer = setTimeout(() => {
            emitter.removeListener(event, handler);
            reject(new Error(`no '${event}' event within ${ms} ms`));
        }, ms);
        function handler(ctx) {
            if (!filter(ctx)) {
                return;
            }
            clearTimeout(timer);
            emitter.removeListener(event, handler);
            resolve(ctx);
        }
        emitter.on(event, handler);
    });
}

/** Waits until `condition()` holds, polling; throws `what` after `ms`. */
export async function until(condition, what, ms = 5000) {
    const deadline = Date.now() + ms;
    while (!condition()) {
        if (Date.now() > deadline) {
            throw new Error(`timed out waiting for ${what}`);
        }
        await sleep(20);
    }
}

/** `POST {http}/api/METHOD` with the API key `key`; returns the whole JSON answer. */
export async function apiReply(http, key, method, body) {
    const response = await fetch(`${http}/api/${method}`, {
        method: 'POST',
        headers: { 'X-API-Key': key, 'Content-Type': 'application/json' },
        body: JSON.stringify(body),
    });
    const text = await response.text();
    check(response.ok, `/api/${method}: HTTP ${response.status}: ${text}`);
    return JSON.parse(text);
}

/** `POST {http}/api/METHOD` with the API key `key`; returns `result`, throws on an `error`. */
export async function apiCall(http, key, method, body) {
    const reply = await apiReply(http, key, method, body);
    check(!reply.error, `/api/${method}: ${JSON.stringify(reply)}`);
    return reply.result;
}

/**
 * Runs each of `names` from `scenarios` (an object of async functions), at most 30 s each,
 * printing `ok NAME` or `FAIL NAME: reason`, then `N passed, N failed`, and exits (0 only when
 * all passed). `before(name)` runs first for each; `clients` is the array the scenarios push
 * their Centrifuge clients into: emptied before each and every one disconnected after it.
 */
export async function runScenarios(scenarios, names, clients, before = async () => {}) {
    let passed = 0;
    let failed = 0;
    for (const name of names) {
        const scenario = scenarios[name];
        if (!scenario) {
            console.log(`FAIL ${name}: no such scenario (have: ${Object.keys(scenarios).join(', ')})`);
            failed += 1;
            continue;
        }
        clients.length = 0;
        let timer;
        try {
            await before(name);
            await Promise.race([
                scenario(),
                new Promise((_, reject) => {
                    timer = setTimeout(() => reject(new Error('scenario timed out after 30 s')), 30000);
                }),
            ]);
            console.log(`ok ${name}`);
            passed += 1;
        } catch (error) {
            console.log(`FAIL ${name}: ${error?.stack ?? JSON.stringify(error)}`);
            failed += 1;
        } finally {
            clearTimeout(timer);
            for (const centrifuge of clients) {
                centrifuge.disconnect();
            }
        }
    }
    console.log(`${passed} passed, ${failed} failed`);
    process.exit(failed === 0 ? 0 : 1);
}
