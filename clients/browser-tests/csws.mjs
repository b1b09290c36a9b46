#!/usr/bin/env node
// Cross-site WebSocket check: loads page.html in Debian's Chromium from each
// given origin and lets it open a WebSocket to Tether.
//
// Usage:
//   node csws.mjs --ws URL --page ORIGIN [--page ORIGIN]...
//                 [--tls-cert FILE --tls-key FILE] [--tap] [--session VALUE] [--timeout SECONDS]
//
//   --ws URL         the WebSocket URL every page opens (ws://… or wss://…)
//   --page ORIGIN    an origin to serve page.html from, e.g. http://127.0.0.1:8081 or
//                    https://127.0.0.2:8081 (repeatable; loaded in this order, in one
//                    browser profile, so the cookie jar is shared as in a real browser)
//   --tls-cert/key   PEM certificate and key for https:// pages
//   --tap            ws:// only: put a byte-for-byte TCP relay on 127.0.0.1 between the
//                    browser and the server, so the report can show the handshake as sent
//                    (the DevTools protocol leaves the Cookie header out of WebSocket
//                    handshakes); the pages then open ws://127.0.0.1:RELAY/PATH
//   --session VALUE  the session cookie the page sets (default: tether-session-<random>)
//   --msg TEXT       the text each page sends (default: "hello from ORIGIN")
//   --timeout SECS   how long each page may take (default 20)
//   CHROMIUM         environment variable: the browser (default /usr/bin/chromium)
//
// Prints one JSON object per page on its own line: window.result of the page
// (see page.html) plus
//   page       the origin it was served from
//   handshake  { source, status, cookie, error }: with --tap, what went over the wire
//              (source "tap": the status line's code and the Cookie header, null when
//              none was sent, the response's Sec-WebSocket-Extensions in `extensions`
//              and the bytes the server sent after its handshake in `serverBytes`,
//              which shows whether permessage-deflate compressed them); otherwise what Chromium's DevTools protocol reports
//              (source "devtools": the status of a completed handshake, or the error
//              text of a failed one; cookie is always null there)
//   console    the page's console messages (Chromium logs handshake failures there)
// and exits 0 once every page has reported, 1 when the check itself could not run.
// A page that could not be loaded reports outcome "load", one that did not finish
// in time "timeout"; both with the reason in `failure`.

import { readFileSync } from 'node:fs';
import http from 'node:http';
import https from 'node:https';
import net from 'node:net';
import { randomBytes } from 'node:crypto';
import { fileURLToPath } from 'node:url';
import { chromium } from 'playwright-core';

const PAGE = readFileSync(fileURLToPath(new URL('page.html', import.meta.url)));

// The flags Debian's Chromium needs to run headless in a container without
// reaching out to the network on its own.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
  '--disable-sync',
  // Trust the test's self-signed certificate. In Chromium 156 this flag and the
  // context's ignoreHTTPSErrors each cover both https:// pages and wss://
  // sockets (without either, tetherd logs "TLS handshake failed ...
  // CertificateUnknown"); both are set so neither alone is load-bearing.
  '--ignore-certificate-errors',
];

function log(...parts) {
  process.stderr.write(`[csws] ${parts.join(' ')}\n`);
}

function usage(message) {
  if (message) log(message);
  process.stderr.write(
    'usage: node csws.mjs --ws URL --page ORIGIN [--page ORIGIN]... ' +
      '[--tls-cert FILE --tls-key FILE] [--tap] [--session VALUE] [--timeout SECONDS]\n',
  );
  process.exit(2);
}

function parseArgs(argv) {
  const opts = {
    ws: null,
    pages: [],
    cert: null,
    key: null,
    tap: false,
    session: null,
    msg: null,
    timeout: 20,
  };
  for (let i = 0; i < argv.length; i++) {
    const flag = argv[i];
    const value = () => {
      if (i + 1 >= argv.length) usage(`${flag} needs a value`);
      return argv[++i];
    };
    switch (flag) {
      case '--ws': opts.ws = value(); break;
      case '--page': opts.pages.push(value()); break;
      case '--tls-cert': opts.cert = value(); break;
      case '--tls-key': opts.key = value(); break;
      case '--tap': opts.tap = true; break;
      case '--session': opts.session = value(); break;
      case '--msg': opts.msg = value(); break;
      case '--timeout': opts.timeout = Number(value()); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${flag}`);
    }
  }
  if (!opts.ws) usage('--ws is required');
  if (opts.pages.length === 0) usage('at least one --page is required');
  if (opts.tap && !opts.ws.startsWith('ws://')) usage('--tap works with ws:// URLs only');
  if (!(opts.timeout > 0)) usage('--timeout must be a positive number');
  opts.pages = opts.pages.map((page) => {
    let url;
    try {
      url = new URL(page);
    } catch {
      usage(`--page ${page}: not a URL`);
    }
    if (!['http:', 'https:'].includes(url.protocol) || !url.port) {
      usage(`--page ${page}: want http://HOST:PORT or https://HOST:PORT`);
    }
    if (url.protocol === 'https:' && !(opts.cert && opts.key)) {
      usage(`--page ${page}: https pages need --tls-cert and --tls-key`);
    }
    return url;
  });
  opts.session ??= `tether-session-${randomBytes(8).toString('hex')}`;
  return opts;
}

/** Serves page.html (at / and /page.html) on each page origin's host and port. */
async function startPageServers(pages, cert, key) {
  const tls = cert && key ? { cert: readFileSync(cert), key: readFileSync(key) } : null;
  const handler = (req, res) => {
    const path = new URL(req.url, 'http://x').pathname;
    if (req.method === 'GET' && (path === '/' || path === '/page.html')) {
      res.writeHead(200, {
        'content-type': 'text/html; charset=utf-8',
        'cache-control': 'no-store',
      });
      res.end(PAGE);
    } else if (path === '/favicon.ico') {
      res.writeHead(204);
      res.end();
    } else {
      res.writeHead(404, { 'content-type': 'text/plain' });
      res.end('not found\n');
    }
  };
  const servers = [];
  const seen = new Set();
  for (const page of pages) {
    if (seen.has(page.origin)) continue;
    seen.add(page.origin);
    const server =
      page.protocol === 'https:' ? https.createServer(tls, handler) : http.createServer(handler);
    await new Promise((resolve, reject) => {
      server.once('error', reject);
      server.listen(Number(page.port), page.hostname, () => {
        server.off('error', reject);
        resolve();
      });
    });
    log(`serving page.html on ${page.origin}`);
    servers.push(server);
  }
  return servers;
}

/**
 * A TCP relay on 127.0.0.1 in front of the ws:// server at `target`. It
 * forwards bytes unchanged and records, per connection, the Cookie header of
 * the request and the status code of the response.
 */
async function startTap(target) {
  const upstream = new URL(target);
  const handshakes = [];
  const server = net.createServer((client) => {
    const record = {
      source: 'tap', status: null, cookie: null, extensions: null, serverBytes: 0, error: null,
    };
    handshakes.push(record);
    const onward = net.connect(Number(upstream.port || 80), upstream.hostname);
    let request = '';
    let response = '';
    client.on('data', (chunk) => {
      if (request !== null) {
        request += chunk.toString('latin1');
        const end = request.indexOf('\r\n\r\n');
        if (end >= 0) {
          const cookie = request
            .slice(0, end)
            .split('\r\n')
            .find((line) => line.toLowerCase().startsWith('cookie:'));
          record.cookie = cookie ? cookie.slice('cookie:'.length).trim() : null;
          request = null;
        }
      }
    });
    onward.on('data', (chunk) => {
      if (response === null) {
        record.serverBytes += chunk.length;
        return;
      }
      response += chunk.toString('latin1');
      const end = response.indexOf('\r\n\r\n');
      if (end >= 0) {
        const lines = response.slice(0, end).split('\r\n');
        record.status = Number(lines[0].split(' ')[1]) || null;
        const extensions = lines.find((line) =>
          line.toLowerCase().startsWith('sec-websocket-extensions:'));
        record.extensions = extensions ? extensions.slice(extensions.indexOf(':') + 1).trim() : null;
        record.serverBytes += response.length - end - 4;
        response = null;
      }
    });
    const fail = (error) => {
      record.error ??= error.message;
      client.destroy();
      onward.destroy();
    };
    client.on('error', fail);
    onward.on('error', fail);
    client.pipe(onward);
    onward.pipe(client);
  });
  await new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(0, '127.0.0.1', resolve);
  });
  const url = new URL(upstream);
  url.host = `127.0.0.1:${server.address().port}`;
  log(`tap ${url.href} -> ${upstream.href}`);
  return { server, url: url.href, handshakes };
}

/** Loads the page from `origin` and waits for its window.result. */
async function runPage(context, origin, opts, tap) {
  const page = await context.newPage();
  const consoleLines = [];
  page.on('console', (msg) => consoleLines.push(`${msg.type()}: ${msg.text()}`));
  page.on('pageerror', (error) => consoleLines.push(`pageerror: ${error.message}`));

  // What the network layer sent and got back, which the page itself cannot see.
  let handshake = { source: 'devtools', status: null, cookie: null, error: null };
  const firstTapped = tap?.handshakes.length;
  if (!tap) {
    const cdp = await context.newCDPSession(page);
    await cdp.send('Network.enable');
    cdp.on('Network.webSocketHandshakeResponseReceived', (event) => {
      handshake.status = event.response?.status ?? null;
    });
    cdp.on('Network.webSocketFrameError', (event) => {
      handshake.error ??= event.errorMessage ?? null;
    });
  }

  const wsUrl = tap ? tap.url : opts.ws;
  const query = new URLSearchParams({ ws: wsUrl, session: opts.session });
  if (opts.msg !== null) query.set('msg', opts.msg);
  const url = `${origin.origin}/page.html?${query}`;
  let result;
  let stage = 'load';
  try {
    await page.goto(url, { timeout: opts.timeout * 1000 });
    stage = 'timeout';
    await page.waitForFunction(() => window.result !== null, null, {
      timeout: opts.timeout * 1000,
    });
    result = await page.evaluate(() => window.result);
  } catch (error) {
    const failure = error.message.split('\n')[0];
    log(`${origin.origin}: ${failure}`);
    const partial = await page.evaluate(() => window.state ?? null).catch(() => null);
    result = { ...(partial ?? {}), outcome: stage, failure };
  }
  // Let late DevTools events arrive before reading them.
  await new Promise((resolve) => setTimeout(resolve, 100));
  await page.close();
  if (tap) {
    const tapped = tap.handshakes.slice(firstTapped);
    handshake = tapped[0] ?? { source: 'tap', status: null, cookie: null, error: 'no connection' };
    if (tapped.length > 1) handshake.error ??= `${tapped.length} connections`;
  }
  return { page: origin.origin, ...result, handshake, console: consoleLines };
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const servers = await startPageServers(opts.pages, opts.cert, opts.key);
  const tap = opts.tap ? await startTap(opts.ws) : null;
  if (tap) servers.push(tap.server);
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const browser = await chromium.launch({
    executablePath,
    headless: true,
    args: CHROMIUM_ARGS,
    timeout: 60_000,
  });
  log(`launched ${executablePath} ${browser.version()}`);
  try {
    const context = await browser.newContext({ ignoreHTTPSErrors: true });
    for (const origin of opts.pages) {
      const report = await runPage(context, origin, opts, tap);
      process.stdout.write(`${JSON.stringify(report)}\n`);
    }
    await context.close();
  } finally {
    await browser.close();
    for (const server of servers) server.close();
  }
}

main().then(
  () => process.exit(0),
  (error) => {
    log(`failed: ${error.stack ?? error}`);
    process.exit(1);
  },
);
