#!/usr/bin/env node
// Interop peer for Tether built on the Node `ws` library.
//
// Usage:
//   node peer.mjs client URL [--only NAME]... [--timeout SECONDS] [--deflate]
//   node peer.mjs server PORT [--deflate]
//   node peer.mjs list
//
// `client` runs the scenarios against an echo server at URL and prints one
// line per scenario (`ok NAME` / `FAIL NAME: reason`), then `N passed, N failed`.
// `server` binds 127.0.0.1:PORT (0 picks a free port), prints `listening PORT`
// and serves the echo endpoint with the behaviours chosen by the request path.
// See ../README.md for the full contract; interop/python/peer.py implements
// the same one on top of Python's `websockets`.

import http from 'node:http';
import { createRequire } from 'node:module';
import WebSocket, { WebSocketServer } from 'ws';

const WS_VERSION = createRequire(import.meta.url)('ws/package.json').version;
const MIB = 1 << 20;
// Far above the 1 MiB messages the scenarios use.
const MAX_PAYLOAD = 64 * MIB;
const CLOSE_REASON = 'interop ✓';

function log(...parts) {
  process.stderr.write(`[node-peer] ${parts.join(' ')}\n`);
}

/** The `/big` payload: byte i is i % 251. */
function bigPattern(size = MIB) {
  const buf = Buffer.allocUnsafe(size);
  for (let i = 0; i < size; i++) buf[i] = i % 251;
  return buf;
}

/** Exactly `size` bytes of UTF-8 mixing 1-, 2-, 3- and 4-byte characters. */
function bigText(size = MIB) {
  const unit = 'tether é ß € 日本 😀 ';
  const unitLen = Buffer.byteLength(unit);
  const text = unit.repeat(Math.floor(size / unitLen));
  return text + 'x'.repeat(size - Buffer.byteLength(text));
}

/** Three fragments; cut points ignore UTF-8 boundaries on purpose. */
function split3(buf) {
  const n = buf.length;
  const a = Math.floor(n / 3);
  const b = Math.floor((2 * n) / 3);
  return [buf.subarray(0, a), buf.subarray(a, b), buf.subarray(b)];
}

class Fail extends Error {}

function describe(v) {
  if (v && v.kind === 'binary') {
    const head = v.data.subarray(0, 16).toString('hex');
    return `binary(${v.data.length} bytes, ${head}${v.data.length > 16 ? '…' : ''})`;
  }
  if (v && v.kind === 'text') {
    const head = JSON.stringify(v.data.slice(0, 24));
    return `text(${Buffer.byteLength(v.data)} bytes, ${head}${v.data.length > 24 ? '…' : ''})`;
  }
  return String(v);
}

const text = (data) => ({ kind: 'text', data });
const binary = (data) => ({ kind: 'binary', data: Buffer.from(data) });

function expectEqual(got, want, what = 'echo') {
  const same =
    got.kind === want.kind &&
    (got.kind === 'text' ? got.data === want.data : Buffer.compare(got.data, want.data) === 0);
  if (!same) throw new Fail(`${what}: got ${describe(got)}, want ${describe(want)}`);
}

function withTimeout(promise, ms, what) {
  let timer;
  const timeout = new Promise((_, reject) => {
    timer = setTimeout(() => reject(new Fail(`${what} within ${ms / 1000} s`)), ms);
  });
  return Promise.race([promise, timeout]).finally(() => clearTimeout(timer));
}

// --------------------------------------------------------------------------
// client
// --------------------------------------------------------------------------

/** A `ws` client with a promise-based receive queue. */
class Conn {
  constructor(ws) {
    this.ws = ws;
    this.queue = [];
    this.waiters = [];
    this.pongs = [];
    this.pongWaiters = [];
    this.closed = null; // { code, reason } once the 'close' event fired
    this.closeWaiters = [];
    this.error = null;
    ws.on('message', (data, isBinary) => {
      const msg = isBinary ? binary(data) : text(data.toString('utf8'));
      const w = this.waiters.shift();
      if (w) w.resolve(msg);
      else this.queue.push(msg);
    });
    ws.on('pong', (data) => {
      const w = this.pongWaiters.shift();
      if (w) w(Buffer.from(data));
      else this.pongs.push(Buffer.from(data));
    });
    ws.on('error', (err) => {
      this.error = err;
    });
    ws.on('close', (code, reason) => {
      this.closed = { code, reason: reason.toString('utf8') };
      for (const w of this.waiters.splice(0)) {
        w.reject(new Fail(`connection closed: code ${code} ${JSON.stringify(this.closed.reason)}`));
      }
      for (const w of this.closeWaiters.splice(0)) w(this.closed);
    });
  }

  static open(url, deflate) {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(url, {
        perMessageDeflate: deflate,
        maxPayload: MAX_PAYLOAD,
        handshakeTimeout: 10000,
      });
      const conn = new Conn(ws);
      ws.once('open', () => resolve(conn));
      ws.once('error', reject);
      ws.once('unexpected-response', (req, res) => {
        reject(new Fail(`handshake refused: HTTP ${res.statusCode}`));
        req.destroy();
      });
    });
  }

  recv() {
    if (this.queue.length) return Promise.resolve(this.queue.shift());
    if (this.closed) {
      return Promise.reject(new Fail(`connection closed: code ${this.closed.code}`));
    }
    return new Promise((resolve, reject) => this.waiters.push({ resolve, reject }));
  }

  nextPong() {
    if (this.pongs.length) return Promise.resolve(this.pongs.shift());
    return new Promise((resolve) => this.pongWaiters.push(resolve));
  }

  waitClosed() {
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => this.closeWaiters.push(resolve));
  }

  send(data, opts = {}) {
    return new Promise((resolve, reject) =>
      this.ws.send(data, opts, (err) => (err ? reject(err) : resolve())),
    );
  }

  /** Close cleanly, or tear down if anything is left open. */
  async dispose() {
    if (this.closed) return;
    if (this.ws.readyState === WebSocket.OPEN) this.ws.close(1000);
    try {
      await withTimeout(this.waitClosed(), 5000, 'close');
    } catch {
      this.ws.terminate();
    }
  }
}

class Client {
  constructor(url, deflate) {
    this.url = url;
    this.deflate = deflate;
  }

  async withConn(fn) {
    const conn = await Conn.open(this.url, this.deflate);
    try {
      await fn(conn);
    } finally {
      await conn.dispose();
    }
  }

  roundTrip(msg) {
    return this.withConn(async (c) => {
      await c.send(msg.data, { binary: msg.kind === 'binary' });
      expectEqual(await c.recv(), msg);
    });
  }

  /** Send `fragments` (Buffers or strings) as one message of `kind`. */
  fragmented(fragments, want, kind = want.kind) {
    return this.withConn(async (c) => {
      const sends = fragments.map((f, i) =>
        c.send(f, { binary: kind === 'binary', fin: i === fragments.length - 1 }),
      );
      await Promise.all(sends);
      expectEqual(await c.recv(), want);
    });
  }

  closeWith(code, reason) {
    return this.withConn(async (c) => {
      // Round trip once first so the close is not racing the handshake.
      await c.send('before close');
      expectEqual(await c.recv(), text('before close'));
      if (code === undefined) c.ws.close();
      else c.ws.close(code, reason);
      const closed = await withTimeout(c.waitClosed(), 5000, 'no close reply');
      const want = code === undefined ? 1005 : code;
      if (closed.code === 1006) throw new Fail('no close frame received (1006)');
      if (closed.code !== want) {
        throw new Fail(`close reply code ${closed.code} (${JSON.stringify(closed.reason)}), want ${want}`);
      }
    });
  }

  pingWith(payload) {
    return this.withConn(async (c) => {
      c.ws.ping(payload);
      const pong = await withTimeout(c.nextPong(), 5000, 'no pong');
      if (Buffer.compare(pong, payload) !== 0) {
        throw new Fail(`pong payload ${pong.toString('hex')}, want ${payload.toString('hex')}`);
      }
      await c.send('after ping');
      expectEqual(await c.recv(), text('after ping'));
    });
  }
}

const SCENARIOS = {
  text: (cl) => cl.roundTrip(text('hello, tether')),
  'text-unicode': (cl) => cl.roundTrip(text('héllo wörld – Ελληνικά – 日本語 – 😀🚀 – \u0000 end')),
  binary: (cl) => cl.roundTrip(binary([...Array(256).keys()])),
  'empty-text': (cl) => cl.roundTrip(text('')),
  'empty-binary': (cl) => cl.roundTrip(binary([])),
  'large-text': (cl) => cl.roundTrip(text(bigText())),
  'large-binary': (cl) => cl.roundTrip(binary(bigPattern())),
  'fragmented-text': (cl) => cl.fragmented(['frag', 'mented ', 'tëxt 😀'], text('fragmented tëxt 😀')),
  'fragmented-text-split-utf8': (cl) => {
    // Fragment boundaries fall inside multi-byte code points.
    const want = 'a😀b€c';
    const raw = Buffer.from(want); // 61 f0 9f 98 80 62 e2 82 ac 63
    return cl.fragmented(
      [raw.subarray(0, 2), raw.subarray(2, 4), raw.subarray(4, 7), raw.subarray(7)],
      text(want),
    );
  },
  'fragmented-binary': (cl) => {
    const data = Buffer.concat(Array(4).fill(Buffer.from([...Array(256).keys()])));
    return cl.fragmented(
      [data.subarray(0, 1), data.subarray(1, 500), Buffer.alloc(0), data.subarray(500)],
      binary(data),
    );
  },
  'fragmented-large': (cl) => {
    const data = bigPattern();
    const chunk = 64 * 1024;
    const parts = [];
    for (let i = 0; i < data.length; i += chunk) parts.push(data.subarray(i, i + chunk));
    return cl.fragmented(parts, binary(data));
  },
  'fragmented-ping': (cl) =>
    // A ping interleaved between the fragments of one message.
    cl.withConn(async (c) => {
      const first = c.send('inter', { binary: false, fin: false });
      c.ws.ping('mid-message');
      const last = c.send('leaved', { binary: false, fin: true });
      await Promise.all([first, last]);
      expectEqual(await c.recv(), text('interleaved'));
      const pong = await withTimeout(c.nextPong(), 5000, 'no pong');
      if (pong.toString() !== 'mid-message') throw new Fail(`pong payload ${JSON.stringify(pong.toString())}`);
    }),
  pipelined: (cl) =>
    cl.withConn(async (c) => {
      const count = 1000;
      const msgs = [];
      for (let i = 0; i < count; i++) {
        const n = String(i).padStart(4, '0');
        msgs.push(i % 2 === 0 ? text(`message ${n}`) : binary(Buffer.from(`binary ${n}`)));
      }
      // Queue every send at once (no waiting on write callbacks), then read.
      for (const m of msgs) c.ws.send(m.data, { binary: m.kind === 'binary' });
      for (let i = 0; i < count; i++) expectEqual(await c.recv(), msgs[i], `message #${i}`);
    }),
  ping: (cl) => cl.pingWith(Buffer.from('tether-ping')),
  'ping-empty': (cl) => cl.pingWith(Buffer.alloc(0)),
  'ping-max': (cl) => cl.pingWith(Buffer.from(Array.from({ length: 125 }, (_, i) => (i * 7 + 3) % 256))),
  'close-1000': (cl) => cl.closeWith(1000, CLOSE_REASON),
  'close-1001': (cl) => cl.closeWith(1001, CLOSE_REASON),
  'close-3000': (cl) => cl.closeWith(3000, CLOSE_REASON),
  'close-4999': (cl) => cl.closeWith(4999, CLOSE_REASON),
  'close-no-code': (cl) => cl.closeWith(undefined),
  'invalid-utf8': (cl) =>
    // Protocol violation the library lets us produce: a text frame whose
    // payload is not UTF-8. The server must fail the connection with 1007.
    cl.withConn(async (c) => {
      await c.send(Buffer.from([0x6f, 0x6b, 0x20, 0xff, 0xfe]), { binary: false });
      let got;
      try {
        got = await c.recv();
      } catch {
        // expected: the connection closed
      }
      if (got) throw new Fail(`server echoed invalid UTF-8 as ${describe(got)}`);
      const closed = await withTimeout(c.waitClosed(), 5000, 'no close');
      if (closed.code !== 1007) {
        throw new Fail(`close code ${closed.code} (${JSON.stringify(closed.reason)}), want 1007`);
      }
    }),
};

async function runClient(url, only, timeoutS, deflate) {
  const unknown = only.filter((n) => !(n in SCENARIOS));
  if (unknown.length) {
    process.stderr.write(`unknown scenario(s): ${unknown.join(', ')}\n`);
    return 2;
  }
  const client = new Client(url, deflate);
  let passed = 0;
  let failed = 0;
  for (const name of Object.keys(SCENARIOS)) {
    if (only.length && !only.includes(name)) continue;
    try {
      await withTimeout(SCENARIOS[name](client), timeoutS * 1000, 'timed out: not finished');
      passed++;
      console.log(`ok ${name}`);
    } catch (err) {
      failed++;
      const reason = err instanceof Fail ? err.message : `${err.name}: ${err.message}`;
      console.log(`FAIL ${name}: ${reason}`);
    }
  }
  console.log(`${passed} passed, ${failed} failed`);
  return failed === 0 ? 0 : 1;
}

// --------------------------------------------------------------------------
// server
// --------------------------------------------------------------------------

/** Map a request path to { behaviour, code }; null means 404. */
function route(rawPath) {
  const path = new URL(rawPath, 'ws://localhost').pathname;
  if (path === '/' || path === '/echo') return { behaviour: 'echo' };
  if (['/echo-fragmented', '/echo-fragmented-ping', '/ping', '/drop', '/big'].includes(path)) {
    return { behaviour: path.slice(1) };
  }
  if (path === '/close/none') return { behaviour: 'close', code: undefined };
  const m = /^\/close\/(\d+)$/.exec(path);
  if (m && Number(m[1]) <= 0xffff) return { behaviour: 'close', code: Number(m[1]) };
  return null;
}

function handle(ws, req) {
  const { behaviour, code } = route(req.url);
  const peer = `${req.socket.remoteAddress}:${req.socket.remotePort}`;
  log(`open ${peer} ${req.url} -> ${behaviour}${ws.extensions ? ` [${ws.extensions}]` : ''}`);
  ws.on('close', (c, r) => log(`closed ${peer} ${req.url}: code=${c} reason=${JSON.stringify(r.toString())}`));
  ws.on('error', (err) => log(`error ${peer} ${req.url}: ${err.message}`));
  const echo = (data, isBinary) => ws.send(data, { binary: isBinary });

  switch (behaviour) {
    case 'echo':
      ws.on('message', echo);
      break;
    case 'echo-fragmented':
    case 'echo-fragmented-ping': {
      // One ping between the first two fragments, unless the previous one is
      // still unanswered (at most one ping in flight, so pipelining clients
      // are not ping-flooded).
      let pings = 0;
      let awaitingPong = false;
      ws.on('pong', () => {
        awaitingPong = false;
      });
      ws.on('message', (data, isBinary) => {
        const parts = split3(data);
        parts.forEach((part, i) => {
          if (i === 1 && behaviour === 'echo-fragmented-ping' && !awaitingPong) {
            awaitingPong = true;
            ws.ping(`mid-${++pings}`);
          }
          ws.send(part, { binary: isBinary, fin: i === parts.length - 1 });
        });
      });
      break;
    }
    case 'close':
      ws.once('message', () => {
        if (code === undefined) {
          log('closing without a status code');
          ws.close();
          return;
        }
        try {
          ws.close(code, 'bye');
        } catch {
          // ws refuses codes RFC 6455 forbids on the wire; write the close
          // frame by hand so the client's rejection path can be tested (it
          // must answer 1002).
          log(`code ${code} refused by ws; writing raw close frame`);
          const payload = Buffer.concat([Buffer.from([code >> 8, code & 0xff]), Buffer.from('bye')]);
          ws._socket.write(Buffer.concat([Buffer.from([0x88, payload.length]), payload]));
          setTimeout(() => ws.terminate(), 5000).unref();
        }
      });
      break;
    case 'ping': {
      let gotPong = false;
      ws.on('pong', (data) => {
        if (data.toString() === 'tether') gotPong = true;
      });
      ws.ping('tether');
      ws.on('message', (data, isBinary) => {
        if (!isBinary && data.toString() === 'pong?') ws.send(gotPong ? 'yes' : 'no');
        else echo(data, isBinary);
      });
      break;
    }
    case 'drop':
      ws.once('message', () => {
        log('dropping TCP connection without a close frame');
        ws.terminate();
      });
      break;
    case 'big':
      ws.send(bigPattern(), { binary: true });
      ws.on('message', echo);
      break;
  }
}

function runServer(port, deflate) {
  const wss = new WebSocketServer({ noServer: true, perMessageDeflate: deflate, maxPayload: MAX_PAYLOAD });
  const server = http.createServer((req, res) => {
    res.writeHead(426, { 'Content-Type': 'text/plain' });
    res.end('WebSocket upgrade required\n');
  });
  server.on('upgrade', (req, socket, head) => {
    if (!route(req.url)) {
      log(`404 ${req.url}`);
      socket.end('HTTP/1.1 404 Not Found\r\nContent-Type: text/plain\r\nContent-Length: 13\r\nConnection: close\r\n\r\nunknown path\n');
      return;
    }
    wss.handleUpgrade(req, socket, head, (ws) => handle(ws, req));
  });
  server.listen(port, '127.0.0.1', () => {
    const bound = server.address().port;
    log(`ws ${WS_VERSION} serving on 127.0.0.1:${bound}`);
    process.stdout.write(`listening ${bound}\n`);
  });
  const stop = () => process.exit(0);
  process.on('SIGINT', stop);
  process.on('SIGTERM', stop);
}

// --------------------------------------------------------------------------

function usage(code) {
  process.stderr.write(
    'usage: node peer.mjs client URL [--only NAME]... [--timeout SECONDS] [--deflate]\n' +
      '       node peer.mjs server PORT [--deflate]\n' +
      '       node peer.mjs list\n',
  );
  process.exit(code);
}

async function main(argv) {
  const [mode, ...rest] = argv;
  const positional = [];
  const only = [];
  let timeoutS = 15;
  let deflate = false;
  for (let i = 0; i < rest.length; i++) {
    const a = rest[i];
    if (a === '--only') only.push(rest[++i]);
    else if (a.startsWith('--only=')) only.push(a.slice(7));
    else if (a === '--timeout') timeoutS = Number(rest[++i]);
    else if (a.startsWith('--timeout=')) timeoutS = Number(a.slice(10));
    else if (a === '--deflate') deflate = true;
    else if (a === '-h' || a === '--help') usage(0);
    else if (a.startsWith('--')) usage(2);
    else positional.push(a);
  }
  if (only.some((n) => n === undefined) || !(timeoutS > 0)) usage(2);
  if (mode === 'list' && positional.length === 0) {
    console.log(Object.keys(SCENARIOS).join('\n'));
    return;
  }
  if (mode === 'client' && positional.length === 1) {
    process.exitCode = await runClient(positional[0], only, timeoutS, deflate);
    // Do not wait for stray sockets/timers of a failed scenario.
    process.stdout.write('', () => process.exit(process.exitCode));
    return;
  }
  if (mode === 'server' && positional.length === 1 && /^\d+$/.test(positional[0])) {
    runServer(Number(positional[0]), deflate);
    return;
  }
  usage(2);
}

main(process.argv.slice(2));
