#!/usr/bin/env node
// The gateway's own pages in Debian's Chromium: the demo page at / and the
// dashboard at /admin.
//
// Usage:
//   node demo.mjs --base http://127.0.0.1:PORT --api-key KEY [--timeout SECONDS]
//
//   --base URL       the gateway's http:// address (the pages and the API)
//   --api-key KEY    auth.api_key, for the API publications and the dashboard
//   --timeout SECS   how long each wait may take (default 20)
//   CHROMIUM         environment variable: the browser (default /usr/bin/chromium)
//
// Opens the demo page and waits until it shows it is connected and present
// in demo:chat, publishes a chat message and a ticker price through
// POST /api/publish, and waits for both to show; then opens /admin, signs in
// with the key and waits for the node count. Prints one JSON report on
// stdout:
//   demo   { state, presence, messages: [{ who, text }], symbol, price, latest }
//   admin  { nodes, nodesMeta, loginHidden }
//   waits  the waits that timed out (empty when everything showed up)
//   errors the pages' console errors and uncaught exceptions
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

const CHAT_MESSAGE = { name: 'api', text: 'hello from the API', at: 0 };
const TICK = { symbol: 'TTHR', price: 42.5 };

function log(...parts) {
  process.stderr.write(`[demo] ${parts.join(' ')}\n`);
}

function parseArgs(argv) {
  const opts = { base: null, apiKey: null, timeout: 20 };
  for (let i = 0; i < argv.length; i++) {
    const value = argv[i + 1];
    switch (argv[i]) {
      case '--base': opts.base = value; i++; break;
      case '--api-key': opts.apiKey = value; i++; break;
      case '--timeout': opts.timeout = Number(value); i++; break;
      default: throw new Error(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.base || !opts.apiKey) throw new Error('--base and --api-key are required');
  return opts;
}

async function publish(opts, channel, data) {
  const response = await fetch(`${opts.base}/api/publish`, {
    method: 'POST',
    headers: { 'X-API-Key': opts.apiKey, 'Content-Type': 'application/json' },
    body: JSON.stringify({ channel, data }),
  });
  const reply = await response.json();
  if (reply.error) throw new Error(`publish to ${channel}: ${JSON.stringify(reply.error)}`);
  log(`published to ${channel}: ${JSON.stringify(reply.result)}`);
}

async function main() {
  const opts = parseArgs(process.argv.slice(2));
  const timeout = opts.timeout * 1000;
  const waits = [];
  const errors = [];
  // A wait that timed out is reported, not thrown: the report shows what
  // the page had instead.
  const waitFor = async (name, page, fn, arg) => {
    try {
      await page.waitForFunction(fn, arg, { timeout });
    } catch (error) {
      log(`wait "${name}" failed: ${error.message.split('\n')[0]}`);
      waits.push(name);
    }
  };

  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  const browser = await chromium.launch({ executablePath, headless: true, args: CHROMIUM_ARGS });
  log(`launched ${executablePath} ${browser.version()}`);
  try {
    const context = await browser.newContext();
    const watch = (page, label) => {
      page.on('console', (msg) => {
        if (msg.type() === 'error') errors.push(`${label} console: ${msg.text()}`);
      });
      page.on('pageerror', (error) => errors.push(`${label} exception: ${error.message}`));
    };

    // ---- demo page ----------------------------------------------------------
    const demo = await context.newPage();
    watch(demo, '/');
    await demo.goto(`${opts.base}/`, { timeout });
    await waitFor('connected', demo, () => document.querySelector('#state.connected') !== null);
    await waitFor('present in demo:chat', demo,
      () => /\b1 online\b/.test(document.getElementById('presence').textContent));

    await publish(opts, 'demo:chat', CHAT_MESSAGE);
    await publish(opts, 'demo:ticker', TICK);
    await waitFor('chat message shown', demo, (text) =>
      [...document.querySelectorAll('#messages .msg .text')].some((el) => el.textContent === text),
    CHAT_MESSAGE.text);
    await waitFor('price shown', demo, () => document.getElementById('price').textContent !== '—');

    const report = { waits, errors };
    report.demo = await demo.evaluate(() => ({
      state: document.getElementById('state').className,
      stateText: document.getElementById('state').textContent,
      presence: document.getElementById('presence').textContent,
      messages: [...document.querySelectorAll('#messages .msg')].map((row) => ({
        who: row.querySelector('.who').firstChild.textContent,
        text: row.querySelector('.text').textContent,
      })),
      symbol: document.getElementById('symbol').textContent,
      price: document.getElementById('price').textContent,
      latest: document.getElementById('latest').textContent,
    }));

    // ---- dashboard ------------------------------------------------------------
    const admin = await context.newPage();
    watch(admin, '/admin');
    await admin.goto(`${opts.base}/admin`, { timeout });
    await admin.waitForSelector('#key', { state: 'visible', timeout });
    await admin.fill('#key', opts.apiKey);
    await admin.press('#key', 'Enter');
    await waitFor('node count shown', admin,
      () => document.getElementById('s-nodes').textContent !== '—');
    report.admin = await admin.evaluate(() => ({
      nodes: document.getElementById('s-nodes').textContent,
      nodesMeta: document.getElementById('nodes-meta').textContent,
      connections: document.getElementById('s-conns').textContent,
      loginHidden: document.getElementById('login').hidden,
    }));

    process.stdout.write(`${JSON.stringify(report)}\n`);
  } finally {
    await browser.close();
  }
}

main().catch((error) => {
  log(`failed: ${error.stack || error}`);
  process.exit(1);
});
