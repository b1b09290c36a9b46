// tether.js: a small browser client for the Tether gateway, speaking
// Centrifugo's client protocol v2 in JSON over a WebSocket.
//
//   import { TetherClient } from '/tether.js';
//   const client = new TetherClient('ws://127.0.0.1:8000/connection/websocket');
//   client.onState = (state, detail) => console.log(state, detail);
//   client.subscribe('demo:chat', (data, pub) => console.log(data), {
//     onJoin: (info) => {}, onLeave: (info) => {},
//     onSubscribed: ({ recovered, wasRecovering, publications }) => {},
//   });
//   client.connect();
//   await client.publish('demo:chat', { text: 'hi' });
//
// The wire, in short: every command is one JSON object `{"id":N,"<method>":{…}}`,
// answered by `{"id":N,"<method>":{…}}` or `{"id":N,"error":{code,message}}`.
// The server also sends pushes `{"push":{"channel":…,"pub"|"join"|"leave"|…}}`
// and pings: the empty object `{}`, answered with `{}` when the connect reply
// said `"pong":true`. One WebSocket text frame may carry several objects,
// one per line, in both directions.

/** Close codes after which the client must not reconnect. */
const isTerminal = (code) => (code >= 3500 && code <= 3999) || (code >= 4500 && code <= 4999);

/** A reply error the server marks as worth retrying (or a transport error). */
const isTemporary = (err) => err.temporary === true || err.code < 100;

/** Exponential backoff with full jitter: `step` 0, 1, 2… → milliseconds. */
function backoff(step, min, max) {
  const ceiling = Math.min(max, min * 2 ** Math.min(step, 31));
  return Math.min(max, min + Math.floor(Math.random() * ceiling));
}

export class TetherClient {
  /**
   * @param {string} url  `ws(s)://host/connection/websocket`
   * @param {object} [options]
   * @param {string} [options.token]  connection JWT; omit to connect anonymously
   * @param {string} [options.name]   client name the server logs
   * @param {number} [options.timeout] milliseconds to wait for a reply
   * @param {number} [options.minReconnectDelay] / [options.maxReconnectDelay]
   * @param {(state: string, detail: object) => void} [options.onState]
   */
  constructor(url, options = {}) {
    this.url = url;
    this.token = options.token || '';
    this.name = options.name || 'tether-js';
    this.timeout = options.timeout || 10000;
    this.minDelay = options.minReconnectDelay || 500;
    this.maxDelay = options.maxReconnectDelay || 20000;
    /** Called with 'connecting' | 'connected' | 'disconnected' and a detail object. */
    this.onState = options.onState || null;
    this.state = 'disconnected';
    this.clientId = '';
    this._ws = null;
    this._nextId = 1;
    this._pending = new Map(); // id → { resolve, reject, timer }
    this._subs = new Map(); // channel → subscription record
    this._waiters = []; // calls made while (re)connecting
    this._attempts = 0; // reconnect attempts since the last success
    this._reconnectTimer = null;
    this._pingTimer = null;
    this._pingInterval = 0; // ms of server silence after which the link counts as dead
    this._pong = false; // answer server pings?
  }

  /** Opens the connection; reconnects by itself until `disconnect()`. */
  connect() {
    if (this.state !== 'disconnected') return;
    this._setState('connecting', {});
    this._open();
  }

  /** Closes the connection for good (until the next `connect()`). */
  disconnect() {
    this._teardown();
    this._failWaiters({ code: 0, message: 'disconnected' });
    this._setState('disconnected', { code: 0, reason: 'client disconnect' });
  }

  /**
   * Subscribes to a channel, now and after every reconnect. The last offset
   * and epoch are kept, so a resubscribe asks the server to recover what
   * was missed; recovered publications reach `onPublication` like live ones.
   * Returns `{ channel, unsubscribe() }`.
   */
  subscribe(channel, onPublication, handlers = {}) {
    if (this._subs.has(channel)) throw new Error(`already subscribed to ${channel}`);
    const sub = {
      channel, onPublication, handlers,
      offset: 0, epoch: '', recover: false, // the position to recover from
      subscribed: false, attempts: 0, timer: null,
    };
    this._subs.set(channel, sub);
    if (this.state === 'connected') this._subscribe(sub);
    return { channel, unsubscribe: () => this.unsubscribe(channel) };
  }

  /** Stops a subscription. */
  unsubscribe(channel) {
    const sub = this._subs.get(channel);
    if (!sub) return;
    clearTimeout(sub.timer);
    this._subs.delete(channel);
    if (this.state === 'connected') {
      this._call('unsubscribe', { channel }).catch(() => {});
    }
  }

  /** Publishes `data` (any JSON value) to a channel. */
  publish(channel, data) {
    return this._call('publish', { channel, data });
  }

  /** Who is subscribed: `{ clientId: { client, user, … } }`. */
  async presence(channel) {
    const result = await this._call('presence', { channel });
    return result.presence || {};
  }

  /**
   * The channel's history: `{ publications, offset, epoch }`. Without
   * `since`, the oldest `limit` publications kept, or with `reverse: true`
   * the newest, newest first. With `since` (`{ offset, epoch }`), the ones
   * after it, or with `reverse: true` the ones before it, newest first.
   */
  async history(channel, limit, { since, reverse } = {}) {
    const params = { channel, limit };
    if (since) params.since = since;
    if (reverse) params.reverse = true;
    const result = await this._call('history', params);
    return { publications: result.publications || [], offset: result.offset || 0, epoch: result.epoch || '' };
  }

  // ---- the connection --------------------------------------------------

  _open() {
    const ws = new WebSocket(this.url);
    this._ws = ws;
    ws.onopen = () => {
      const params = { name: this.name };
      if (this.token) params.token = this.token;
      this._request('connect', params).then(
        (result) => this._onConnected(result),
        (err) => {
          if (err.lost) return; // the socket went away: already handled
          // A temporary error retries; anything else (a bad token…) is final.
          this._lost({ code: isTemporary(err) ? 3004 : 3500, reason: err.message });
        });
    };
    ws.onmessage = (event) => this._onFrame(event.data);
    ws.onclose = (event) => {
      if (this._ws === ws) this._lost({ code: event.code, reason: event.reason || 'connection closed' });
    };
    ws.onerror = () => {}; // always followed by onclose
  }

  _onConnected(result) {
    this.clientId = result.client;
    this._attempts = 0;
    this._pong = result.pong === true;
    // The server pings every `ping` seconds; silence well past that means
    // the connection is dead even if the socket has not noticed.
    this._pingInterval = result.ping > 0 ? (result.ping + 10) * 1000 : 0;
    this._watchPing();
    this._setState('connected', { client: result.client, version: result.version || '' });
    // Subscribe to everything at once: one frame, one object per line.
    const commands = [];
    for (const sub of this._subs.values()) commands.push(this._subscribeCommand(sub));
    if (commands.length) this._send(commands);
    const waiters = this._waiters.splice(0);
    for (const waiter of waiters) waiter.run();
  }

  /** Ends the current socket and decides, by the code, whether to retry. */
  _lost({ code, reason }) {
    this._teardown();
    if (isTerminal(code)) {
      this._failWaiters({ code, message: reason });
      this._setState('disconnected', { code, reason });
      return;
    }
    const delay = backoff(this._attempts++, this.minDelay, this.maxDelay);
    this._setState('connecting', { code, reason, delay });
    this._reconnectTimer = setTimeout(() => this._open(), delay);
  }

  /** Closes the socket and forgets everything tied to it (not the subscriptions). */
  _teardown() {
    clearTimeout(this._reconnectTimer);
    clearTimeout(this._pingTimer);
    const ws = this._ws;
    this._ws = null;
    if (ws) {
      ws.onopen = ws.onmessage = ws.onclose = null;
      if (ws.readyState <= 1) ws.close();
    }
    for (const { reject, timer } of this._pending.values()) {
      clearTimeout(timer);
      reject({ code: 0, message: 'connection lost', lost: true });
    }
    this._pending.clear();
    for (const sub of this._subs.values()) {
      sub.subscribed = false;
      clearTimeout(sub.timer);
    }
  }

  _watchPing() {
    clearTimeout(this._pingTimer);
    if (this._pingInterval) {
      this._pingTimer = setTimeout(() => this._lost({ code: 3012, reason: 'no ping' }), this._pingInterval);
    }
  }

  _setState(state, detail) {
    this.state = state;
    if (this.onState) this.onState(state, detail);
  }

  // ---- frames, replies and pushes --------------------------------------

  _onFrame(text) {
    this._watchPing(); // any data from the server proves the link is alive
    for (const line of String(text).split('\n')) {
      if (!line.trim()) continue;
      let msg;
      try { msg = JSON.parse(line); } catch { continue; }
      if (msg.id) this._onReply(msg);
      else if (msg.push) this._onPush(msg.push);
      else if (Object.keys(msg).length === 0 && this._pong) this._send([{}]); // ping → pong
    }
  }

  _onReply(msg) {
    const pending = this._pending.get(msg.id);
    if (!pending) return;
    this._pending.delete(msg.id);
    clearTimeout(pending.timer);
    if (msg.error) pending.reject(msg.error);
    else pending.resolve(Object.values(msg).find((v) => typeof v === 'object') || {});
  }

  _onPush(push) {
    if (push.disconnect) { this._lost(push.disconnect); return; }
    const sub = this._subs.get(push.channel);
    if (!sub) return;
    if (push.pub) this._deliver(sub, push.pub);
    else if (push.join) sub.handlers.onJoin?.(push.join.info || {});
    else if (push.leave) sub.handlers.onLeave?.(push.leave.info || {});
    else if (push.unsubscribe) {
      // Codes ≥ 2500 ask the client to subscribe again (and recover).
      sub.subscribed = false;
      if (push.unsubscribe.code >= 2500) this._subscribe(sub);
      else { this._subs.delete(sub.channel); sub.handlers.onError?.(push.unsubscribe); }
    }
  }

  /** Hands a publication to the app and remembers how far the stream went. */
  _deliver(sub, pub) {
    if (pub.offset) sub.offset = pub.offset;
    sub.onPublication(pub.data, pub);
  }

  // ---- subscriptions ---------------------------------------------------

  _subscribeCommand(sub) {
    const params = { channel: sub.channel };
    if (sub.handlers.onJoin || sub.handlers.onLeave) params.join_leave = true;
    if (sub.recover) {
      params.recover = true;
      if (sub.offset) params.offset = sub.offset;
      if (sub.epoch) params.epoch = sub.epoch;
    }
    const id = this._nextId++;
    this._track(id).then((result) => this._onSubscribed(sub, result), (err) => this._onSubscribeError(sub, err));
    return { id, subscribe: params };
  }

  _subscribe(sub) {
    if (this.state === 'connected') this._send([this._subscribeCommand(sub)]);
  }

  _onSubscribed(sub, result) {
    if (this._subs.get(sub.channel) !== sub) return; // unsubscribed meanwhile
    const wasRecovering = sub.recover;
    sub.subscribed = true;
    sub.attempts = 0;
    if (result.recoverable) {
      // After a recovery this is the position the recovered publications
      // start from; delivering them moves it forward.
      sub.recover = true;
      sub.offset = result.offset || 0;
      sub.epoch = result.epoch || '';
    } else {
      sub.recover = false;
    }
    const publications = result.publications || [];
    sub.handlers.onSubscribed?.({ recovered: result.recovered === true, wasRecovering, publications });
    for (const pub of publications) this._deliver(sub, pub);
  }

  _onSubscribeError(sub, err) {
    if (this._subs.get(sub.channel) !== sub || err.lost) return; // resubscribed on reconnect
    if (isTemporary(err)) {
      sub.timer = setTimeout(() => this._subscribe(sub), backoff(sub.attempts++, 1000, 20000));
    } else {
      this._subs.delete(sub.channel);
      sub.handlers.onError?.(err);
    }
  }

  // ---- commands --------------------------------------------------------

  /** Sends a command once connected; waits (up to the timeout) while connecting. */
  _call(method, params) {
    if (this.state === 'connected') return this._request(method, params);
    if (this.state === 'disconnected') return Promise.reject({ code: 0, message: 'not connected' });
    return new Promise((resolve, reject) => {
      const waiter = {
        run: () => { clearTimeout(timer); this._request(method, params).then(resolve, reject); },
        fail: (err) => { clearTimeout(timer); reject(err); },
      };
      const timer = setTimeout(() => {
        this._waiters = this._waiters.filter((w) => w !== waiter);
        reject({ code: 0, message: 'timeout waiting for the connection' });
      }, this.timeout);
      this._waiters.push(waiter);
    });
  }

  _failWaiters(err) {
    for (const waiter of this._waiters.splice(0)) waiter.fail(err);
  }

  _request(method, params) {
    const id = this._nextId++;
    const reply = this._track(id);
    this._send([{ id, [method]: params }]);
    return reply;
  }

  /** A promise for the reply to command `id`; a timeout counts as a lost connection. */
  _track(id) {
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this._pending.delete(id);
        reject({ code: 0, message: 'timeout', lost: true });
        this._lost({ code: 3000, reason: 'reply timeout' });
      }, this.timeout);
      this._pending.set(id, { resolve, reject, timer });
    });
  }

  _send(commands) {
    if (this._ws && this._ws.readyState === 1) {
      this._ws.send(commands.map((c) => JSON.stringify(c)).join('\n'));
    }
  }
}
