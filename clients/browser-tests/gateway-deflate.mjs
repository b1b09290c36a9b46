#!/usr/bin/env node
// permessage-deflate between Debian's Chromium and the gateway (tetherd
// serve with compression enabled).
//
// Usage:
//   node gateway-deflate.mjs --base http://127.0.0.1:PORT --api-key KEY --channel CH [--timeout SECONDS]
//
//   --base URL       the gateway's http:// address (the page's origin, the API)
//   --api-key KEY    auth.api_key, for the API publication
//   --channel CH     a channel anonymous clients may subscribe and publish to
//   --timeout SECS   how long each wait may take (default 20)
//   CHROMIUM         environment variable: the browser (default /usr/bin/chromium)
//
// A page from the gateway's own origin opens a WebSocket to
// /connection/websocket, connects and subscribes to CH; a publication comes
// through POST /api/publish and another from the page itself, each a few KB
// of compressible text. Prints one JSON report on stdout:
//   extensions  the socket's negotiated extensions (WebSocket.extensions)
//   api, client the data of the two publications as the page received them
//   close       the close code the page saw after closing the socket itself
//   waits       the waits that timed out (empty when everything arrived)
//   errors      the page's console errors and uncaught exceptions
// and exits 0 once the report is printed, 1 when the check itself could not run.

import { chromium } from 'playwright-core';

// As in csws.mjs: headless in a container, no network of its own.
const CHROMIUM_ARGS = [
  '--headless',
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--no-first-run',
  '--disable-quic',
  '--disable-sync',
];

const TEXT = 'a compressible message through the gateway; '.repeat(100);

function log(...parts) {
  process.stderr.write(`[gateway-deflate] ${parts.join(' ')}\n`);
}

function parseArgs(argv) {
  const opts = { base: null, apiKey: null, channel: null, timeout: 20 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--base': opts.base = value; i++; break;
      case '--api-key': opts.apiKey = value; i++; break;
      case '--channel': opts.channel = value; i++; break;
      case '--timeout': opts.timeout = Number(value); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.base || !opts.apiKey || !opts.channel) {
    throw new Error('--base, --api-key and --channel are required');
  }
  return opts;
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const timeout = opts.timeout * 1000;
  const waits = [];
  const errors = [];
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  log(`launched ${executablePath} ${browser.version()}`);
  try {
    const page = await browser.newPage();
    page.on('console', (msg) => {
      if (msg.type() === 'error') errors.push(`console: ${msg.text()}`);
    });
    page.on('pageerror', (error) => errors.push(`exception: ${error.message}`));
    // A wait that timed out is reported, not thrown: the report shows what
    // the page had instead.
    const waitFor = async (name, fn, arg) => {
      try {
        await page.waitForFunction(fn, arg, { timeout });
      } catch (error) {
        log(`wait "${name}" failed: ${error.message.split('\n')[0]}`);
        waits.push(name);
      }
    };
    // The gateway serves no icon; the browser's request for one is not an error here.
    await page.route('**/favicon.ico', (route) => route.fulfill({ status: 204 }));
    // Any page of the gateway gives the origin the same-origin policy admits.
    await page.goto(`${opts.base}/health`, { timeout });

    const wsUrl = `${opts.base.replace(/^http/, 'ws')}/connection/websocket`;
    const extensions = await page.evaluate(async ({ wsUrl, channel }) => {
      const t = { replies: {}, pubs: [], close: null };
      window.gateway = t;
      t.ws = new WebSocket(wsUrl);
      t.ws.onclose = (event) => { t.close = event.code; };
      t.ws.onmessage = (event) => {
        for (const line of event.data.split('\n').filter(Boolean)) {
          const frame = JSON.parse(line);
          if (frame.id) t.replies[frame.id] = frame;
          if (frame.push && frame.push.pub) t.pubs.push(frame.push.pub.data);
        }
      };
      await new Promise((resolve, reject) => {
        t.ws.onopen = resolve;
        t.ws.onerror = () => reject(new Error('the WebSocket failed to open'));
      });
      t.ws.send(`{"id":1,"connect":{}}\n{"id":2,"subscribe":{"channel":${JSON.stringify(channel)}}}`);
      return t.ws.extensions;
    }, { wsUrl, channel: opts.channel });
    log(`negotiated: ${extensions}`);
    await waitFor('subscribed', () => window.gateway.replies[2] !== undefined);

    const response = await fetch(`${opts.base}/api/publish`, {
      method: 'POST',
      headers: { 'X-API-Key': opts.apiKey, 'Content-Type': 'application/json' },
      body: JSON.stringify({ channel: opts.channel, data: { kind: 'api', text: TEXT } }),
    });
    const reply = await response.json();
    if (reply.error) throw new Error(`publish: ${JSON.stringify(reply.error)}`);
    await waitFor('API publication received', () => window.gateway.pubs.length >= 1);

    await page.evaluate(({ channel, text }) => {
      const data = { kind: 'client', text };
      window.gateway.ws.send(JSON.stringify({ id: 3, publish: { channel, data } }));
    }, { channel: opts.channel, text: TEXT });
    await waitFor('client publication received', () => window.gateway.pubs.length >= 2);
    await waitFor('publish acknowledged', () => window.gateway.replies[3] !== undefined);

    await page.evaluate(() => window.gateway.ws.close(1000));
    await waitFor('closed', () => window.gateway.close !== null);
    const { pubs, close } = await page.evaluate(() => ({
      pubs: window.gateway.pubs,
      close: window.gateway.close,
    }));
    const report = {
      extensions,
      api: pubs.find((data) => data.kind === 'api') ?? null,
      client: pubs.find((data) => data.kind === 'client') ?? null,
      close,
      waits,
      errors,
    };
    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  log(`failed: ${error.stack || error}`);
  process.exit(1);
});
