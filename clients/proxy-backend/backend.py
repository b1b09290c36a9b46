"""An application backend for tetherd's Centrifugo-compatible HTTP proxy hooks.

tetherd can ask an application whether a connection may connect, subscribe,
publish, and what an RPC answers, instead of checking tokens itself: it POSTs
a JSON body describing the client and the command to a hook URL and acts on
the JSON answer, which is one of

    {"result": {...}}                          go ahead (with what the result says)
    {"error": {"code": N, "message": "..."}}   refuse this command
    {"disconnect": {"code": N, "reason": "..."}}  refuse and close the connection

This backend answers the hooks `/connect`, `/refresh`, `/subscribe`,
`/sub_refresh`, `/publish`, `/rpc` and `/send` with fixed rules (see the
handlers below) so that tests can drive every kind of answer, and it doubles
as the README's example of what such a backend looks like. Standard library
only:

    python3 backend.py [--port 0] [--mode normal|slow|garbage|error500|huge] [--verbose]

It listens on 127.0.0.1 and prints one line, `listening PORT`, once it does.
Every request it receives is kept in memory so that tests can check what the
gateway sent:

    GET  /requests               every request so far: [{"path", "headers", "body"}]
    GET  /requests?path=/connect only those to one path
    POST /reset                  forget them (and the refresh counters)

`--mode` makes every hook misbehave the same way, for the gateway's failure
handling: `slow` answers after 3 s, `garbage` answers 200 with a body that is
not JSON, `error500` answers HTTP 500, `huge` answers a valid 2 MiB result.
"""

import argparse
import json
import sys
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

HOOKS = ("/connect", "/refresh", "/subscribe", "/sub_refresh", "/publish", "/rpc", "/send")
MODES = ("normal", "slow", "garbage", "error500", "huge")

# Size of the whole body `huge` answers with: over the usual 1 MiB limits.
HUGE_BYTES = 2 * 1024 * 1024


def now():
    return int(time.time())


def cookies(header):
    """The cookies of a `Cookie` header value, as a dict (the last one of a name wins)."""
    jar = {}
    for part in (header or "").split(";"):
        name, sep, value = part.strip().partition("=")
        if sep:
            jar[name.strip()] = value.strip()
    return jar


class Backend:
    """What the hooks remember: the requests, and how often each one refreshed."""

    def __init__(self, mode):
        self.mode = mode
        self.lock = threading.Lock()
        self.requests = []
        # Refresh calls per client id, and per (client id, channel): the first
        # one extends, the later ones say the connection or subscription expired.
        self.refreshes = {}
        self.sub_refreshes = {}

    def record(self, entry):
        with self.lock:
            self.requests.append(entry)

    def recorded(self, path=None):
        with self.lock:
            return [r for r in self.requests if path is None or r["path"] == path]

    def reset(self):
        with self.lock:
            self.requests.clear()
            self.refreshes.clear()
            self.sub_refreshes.clear()

    def count(self, table, key):
        """Counts one more call for `key` in `table`; returns how many there were."""
        with self.lock:
            table[key] = table.get(key, 0) + 1
            return table[key]

    # -- The hooks, in `normal` mode: each takes the request's headers and body,
    # -- and returns the answer to send as JSON.

    def connect(self, headers, body):
        session = cookies(headers.get("cookie")).get("session")
        if session == "alice":
            return {
                "result": {
                    "user": "alice",
                    "info": {"name": "Alice"},
                    "data": {"greeting": "hi alice", "echo": body.get("data")},
                    # A server-side subscription: the client is subscribed
                    # without asking, and may not subscribe to it itself.
                    "channels": ["notify:alice"],
                    # What she may do where no namespace option grants it.
                    "caps": [{"channels": ["capped:alice"], "allow": ["sub"]}],
                }
            }
        if session == "shortlived":
            # Expires soon: the gateway must call /refresh to keep it.
            return {"result": {"user": "bob", "expire_at": now() + 2}}
        if session == "custom-error":
            return {"error": {"code": 1001, "message": "custom connect error"}}
        return {"disconnect": {"code": 4501, "reason": "unauthorized"}}

    def refresh(self, headers, body):
        if self.count(self.refreshes, body.get("client")) == 1:
            return {"result": {"expire_at": now() + 2}}
        return {"result": {"expired": True}}

    def subscribe(self, headers, body):
        channel = body.get("channel") or ""
        if channel.startswith("secret:"):
            return {"error": {"code": 103, "message": "permission denied"}}
        if channel.startswith("expiring:"):
            return {"result": {"expire_at": now() + 2, "info": {"role": "reader"}}}
        return {"result": {"info": {"role": "member"}, "data": {"welcome": channel}}}

    def sub_refresh(self, headers, body):
        key = (body.get("client"), body.get("channel"))
        if self.count(self.sub_refreshes, key) == 1:
            return {"result": {"expire_at": now() + 2}}
        return {"result": {"expired": True}}

    def publish(self, headers, body):
        data = body.get("data")
        if not isinstance(data, dict):
            data = {}
        if data.get("forbidden") is True:
            return {"error": {"code": 403, "message": "publish refused"}}
        if "text" in data:
            # The backend may rewrite what is published: subscribers get this.
            return {"result": {"data": {"text": str(data["text"]).upper(), "by": body.get("user")}}}
        if data.get("skip") is True:
            return {"result": {"skip_history": True}}
        return {"result": {}}

    def rpc(self, headers, body):
        method = body.get("method")
        data = body.get("data")
        if method == "sum":
            a = data.get("a") if isinstance(data, dict) else None
            b = data.get("b") if isinstance(data, dict) else None
            numbers = all(isinstance(n, (int, float)) and not isinstance(n, bool) for n in (a, b))
            if not numbers:
                return {"error": {"code": 107, "message": "bad request: sum needs numbers a and b"}}
            return {"result": {"data": {"sum": a + b}}}
        if method == "fail":
            return {"error": {"code": 1002, "message": "rpc failed"}}
        if method == "bye":
            return {"disconnect": {"code": 4502, "reason": "bye"}}
        return {"error": {"code": 104, "message": "method not found"}}

    def send(self, headers, body):
        # Nothing to answer: the point is that the request is recorded.
        return {"result": {}}


class Handler(BaseHTTPRequestHandler):
    # Keep-alive, as the gateway's HTTP client is likely to pool connections.
    protocol_version = "HTTP/1.1"
    # Headers and body go out in two writes: without TCP_NODELAY the body
    # waits for the gateway's delayed ACK (40 ms a call).
    disable_nagle_algorithm = True
    server_version = "tether-proxy-backend"
    backend = None  # set in main()
    verbose = False

    def log_message(self, format, *args):
        if self.verbose:
            sys.stderr.write("%s - %s\n" % (self.address_string(), format % args))

    def reply(self, status, payload, content_type="application/json"):
        """Sends `payload` (bytes, or anything JSON) with `status`."""
        if not isinstance(payload, bytes):
            payload = json.dumps(payload).encode()
        self.send_response(status)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        self.wfile.write(payload)

    def read_body(self):
        """The request body's bytes, with a Content-Length or chunked."""
        if "chunked" in (self.headers.get("Transfer-Encoding") or "").lower():
            chunks = []
            while True:
                size = int(self.rfile.readline().split(b";")[0].strip() or b"0", 16)
                if size == 0:
                    # Trailers, up to the empty line.
                    while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                        pass
                    return b"".join(chunks)
                chunks.append(self.rfile.read(size))
                self.rfile.readline()
        length = int(self.headers.get("Content-Length") or 0)
        return self.rfile.read(length) if length > 0 else b""

    def do_GET(self):
        url = urlsplit(self.path)
        if url.path != "/requests":
            self.reply(404, {"error": "not found"})
            return
        path = parse_qs(url.query).get("path", [None])[0]
        self.reply(200, self.backend.recorded(path))

    def do_POST(self):
        url = urlsplit(self.path)
        raw = self.read_body()
        if url.path == "/reset":
            self.backend.reset()
            self.reply(200, {})
            return
        headers = {}
        for name, value in self.headers.items():
            name = name.lower()
            headers[name] = f"{headers[name]}, {value}" if name in headers else value
        try:
            body = json.loads(raw) if raw else None
        except ValueError:
            body = None
            bad_json = True
        else:
            bad_json = False
        # Recorded before anything else, whatever the answer: tests look at what
        # the gateway sent, also when it was refused or the mode breaks answers.
        self.backend.record({"path": url.path, "headers": headers, "body": body})
        if url.path not in HOOKS:
            self.reply(404, {"error": "no such hook"})
            return
        if bad_json or not isinstance(body, dict):
            self.reply(400, {"error": "the body must be a JSON object"})
            return
        mode = self.backend.mode
        if mode == "slow":
            time.sleep(3)
        elif mode == "garbage":
            self.reply(200, b"this is not json{")
            return
        elif mode == "error500":
            self.reply(500, b"internal error (error500 mode)", "text/plain")
            return
        elif mode == "huge":
            head, tail = b'{"result":{"user":"x","data":"', b'"}}'
            self.reply(200, head + b"x" * (HUGE_BYTES - len(head) - len(tail)) + tail)
            return
        hook = getattr(self.backend, url.path.lstrip("/"))
        self.reply(200, hook(headers, body))


def main():
    parser = argparse.ArgumentParser(description="Centrifugo-style proxy backend for tests.")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port (printed)")
    parser.add_argument("--mode", choices=MODES, default="normal")
    parser.add_argument("--verbose", action="store_true", help="log requests to stderr")
    args = parser.parse_args()

    Handler.backend = Backend(args.mode)
    Handler.verbose = args.verbose
    server = ThreadingHTTPServer(("127.0.0.1", args.port), Handler)
    server.daemon_threads = True
    print(f"listening {server.server_address[1]}", flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()


if __name__ == "__main__":
    main()
