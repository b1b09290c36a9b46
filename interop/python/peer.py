#!/usr/bin/env python3
"""Interop peer for Tether built on the Python `websockets` library.

Usage:
    peer.py client URL [--only NAME]... [--timeout SECONDS] [--deflate]
    peer.py server PORT [--deflate]
    peer.py list

`client` runs the scenarios against an echo server at URL and prints one
line per scenario (`ok NAME` / `FAIL NAME: reason`), then `N passed, N failed`.
`server` binds 127.0.0.1:PORT (0 picks a free port), prints `listening PORT`
and serves the echo endpoint with the behaviours chosen by the request path.
See ../README.md for the full contract; interop/node/peer.mjs implements the
same one on top of Node's `ws`.
"""

from __future__ import annotations

import argparse
import asyncio
import http
import sys
from typing import Awaitable, Callable
from urllib.parse import urlsplit

import websockets
from websockets.asyncio.client import ClientConnection, connect
from websockets.asyncio.server import ServerConnection, serve
from websockets.exceptions import ConnectionClosed

MIB = 1 << 20
# Far above the 1 MiB messages the scenarios use; the library default is 1 MiB.
MAX_SIZE = 64 * MIB
CLOSE_REASON = "interop ✓"


def log(*parts: object) -> None:
    print("[py-peer]", *parts, file=sys.stderr, flush=True)


def big_pattern(size: int = MIB) -> bytes:
    """The `/big` payload: byte i is i % 251."""
    return bytes(i % 251 for i in range(251)) * (size // 251) + bytes(range(size % 251))


def big_text(size: int = MIB) -> str:
    """Exactly `size` bytes of UTF-8 mixing 1-, 2-, 3- and 4-byte characters."""
    unit = "tether é ß € 日本 😀 "
    unit_len = len(unit.encode())
    text = unit * (size // unit_len)
    return text + "x" * (size - len(text.encode()))


def split3(data: bytes) -> list[bytes]:
    """Three fragments; cut points ignore UTF-8 boundaries on purpose."""
    n = len(data)
    return [data[: n // 3], data[n // 3 : 2 * n // 3], data[2 * n // 3 :]]


def describe(value: object) -> str:
    if isinstance(value, (bytes, bytearray, memoryview)):
        value = bytes(value)
        head = value[:16].hex()
        return f"binary({len(value)} bytes, {head}{'…' if len(value) > 16 else ''})"
    if isinstance(value, str):
        head = value[:24]
        return f"text({len(value.encode())} bytes, {head!r}{'…' if len(value) > 24 else ''})"
    return repr(value)


class Fail(Exception):
    pass


def expect_equal(got: object, want: object, what: str = "echo") -> None:
    if type(got) is not type(want):
        raise Fail(f"{what}: got {describe(got)}, want {describe(want)}")
    if got != want:
        raise Fail(f"{what}: got {describe(got)}, want {describe(want)}")


# --------------------------------------------------------------------------
# client scenarios
# --------------------------------------------------------------------------


class Client:
    def __init__(self, url: str, deflate: bool) -> None:
        self.url = url
        self.deflate = deflate

    def connect(self) -> connect:
        return connect(
            self.url,
            compression="deflate" if self.deflate else None,
            max_size=MAX_SIZE,
            ping_interval=None,  # no keepalive pings mixed into the scenarios
            open_timeout=10,
            close_timeout=5,
        )

    async def round_trip(self, message: str | bytes) -> None:
        async with self.connect() as ws:
            await ws.send(message)
            expect_equal(await ws.recv(), message)

    async def fragmented(self, fragments: list, want: str | bytes, text: bool | None = None) -> None:
        async with self.connect() as ws:
            await ws.send(fragments, text=text)
            expect_equal(await ws.recv(), want)

    async def close_with(self, code: int | None, reason: str = "") -> None:
        async with self.connect() as ws:
            # Round trip once first so the close is not racing the handshake.
            await ws.send("before close")
            expect_equal(await ws.recv(), "before close")
            if code is None:
                await ws.close(None)  # type: ignore[arg-type]  # empty close frame
            else:
                await ws.close(code, reason)
            await ws.wait_closed()
            want = 1005 if code is None else code
            rcvd = ws.protocol.close_rcvd
            if rcvd is None:
                raise Fail(f"no close frame received (close code seen: {ws.close_code})")
            if rcvd.code != want:
                raise Fail(f"close reply code {rcvd.code} ({rcvd.reason!r}), want {want}")

    # -- the scenarios -----------------------------------------------------

    async def s_text(self) -> None:
        await self.round_trip("hello, tether")

    async def s_text_unicode(self) -> None:
        await self.round_trip("héllo wörld – Ελληνικά – 日本語 – 😀🚀 – \u0000 end")

    async def s_binary(self) -> None:
        await self.round_trip(bytes(range(256)))

    async def s_empty_text(self) -> None:
        await self.round_trip("")

    async def s_empty_binary(self) -> None:
        await self.round_trip(b"")

    async def s_large_text(self) -> None:
        await self.round_trip(big_text())

    async def s_large_binary(self) -> None:
        await self.round_trip(big_pattern())

    async def s_fragmented_text(self) -> None:
        await self.fragmented(["frag", "mented ", "tëxt 😀"], "fragmented tëxt 😀")

    async def s_fragmented_text_split_utf8(self) -> None:
        # Fragment boundaries fall inside multi-byte code points.
        want = "a😀b€c"
        raw = want.encode()  # 61 f0 9f 98 80 62 e2 82 ac 63
        await self.fragmented([raw[:2], raw[2:4], raw[4:7], raw[7:]], want, text=True)

    async def s_fragmented_binary(self) -> None:
        data = bytes(range(256)) * 4
        await self.fragmented([data[:1], data[1:500], b"", data[500:]], data)

    async def s_fragmented_large(self) -> None:
        data = big_pattern()
        chunk = 64 * 1024
        await self.fragmented([data[i : i + chunk] for i in range(0, len(data), chunk)], data)

    async def s_fragmented_ping(self) -> None:
        # A ping interleaved between the fragments of one message.
        async with self.connect() as ws:
            pongs: list[Awaitable[float]] = []

            async def fragments():
                yield "inter"
                pongs.append(await ws.ping(b"mid-message"))
                yield "leaved"

            await ws.send(fragments())
            expect_equal(await ws.recv(), "interleaved")
            await asyncio.wait_for(pongs[0], 5)

    async def s_pipelined(self) -> None:
        count = 1000
        messages: list[str | bytes] = [
            f"message {i:04d}" if i % 2 == 0 else f"binary {i:04d}".encode() for i in range(count)
        ]
        async with self.connect() as ws:
            for message in messages:
                await ws.send(message)
            for i, message in enumerate(messages):
                expect_equal(await ws.recv(), message, f"message #{i}")

    async def ping_with(self, payload: bytes) -> None:
        async with self.connect() as ws:
            # The future resolves only on a pong carrying exactly this payload.
            waiter = await ws.ping(payload)
            try:
                await asyncio.wait_for(waiter, 5)
            except asyncio.TimeoutError:
                raise Fail(f"no pong with payload {payload!r} within 5 s") from None
            # The connection still works afterwards.
            await ws.send("after ping")
            expect_equal(await ws.recv(), "after ping")

    async def s_ping(self) -> None:
        await self.ping_with(b"tether-ping")

    async def s_ping_empty(self) -> None:
        await self.ping_with(b"")

    async def s_ping_max(self) -> None:
        await self.ping_with(bytes((i * 7 + 3) % 256 for i in range(125)))

    async def s_close_1000(self) -> None:
        await self.close_with(1000, CLOSE_REASON)

    async def s_close_1001(self) -> None:
        await self.close_with(1001, CLOSE_REASON)

    async def s_close_3000(self) -> None:
        await self.close_with(3000, CLOSE_REASON)

    async def s_close_4999(self) -> None:
        await self.close_with(4999, CLOSE_REASON)

    async def s_close_no_code(self) -> None:
        await self.close_with(None)

    async def s_invalid_utf8(self) -> None:
        # Protocol violation the library lets us produce: a text frame whose
        # payload is not UTF-8. The server must fail the connection with 1007.
        async with self.connect() as ws:
            await ws.send(b"ok \xff\xfe not utf-8", text=True)
            try:
                got = await ws.recv()
            except ConnectionClosed:
                pass
            else:
                raise Fail(f"server echoed invalid UTF-8 as {describe(got)}")
            await ws.wait_closed()
            rcvd = ws.protocol.close_rcvd
            if rcvd is None:
                raise Fail(f"connection dropped without a close frame ({ws.close_code})")
            if rcvd.code != 1007:
                raise Fail(f"close code {rcvd.code} ({rcvd.reason!r}), want 1007")


SCENARIOS: list[str] = [
    "text",
    "text-unicode",
    "binary",
    "empty-text",
    "empty-binary",
    "large-text",
    "large-binary",
    "fragmented-text",
    "fragmented-text-split-utf8",
    "fragmented-binary",
    "fragmented-large",
    "fragmented-ping",
    "pipelined",
    "ping",
    "ping-empty",
    "ping-max",
    "close-1000",
    "close-1001",
    "close-3000",
    "close-4999",
    "close-no-code",
    "invalid-utf8",
]


async def run_client(url: str, only: list[str], timeout: float, deflate: bool) -> int:
    client = Client(url, deflate)
    unknown = [name for name in only if name not in SCENARIOS]
    if unknown:
        print(f"unknown scenario(s): {', '.join(unknown)}", file=sys.stderr)
        return 2
    names = [name for name in SCENARIOS if not only or name in only]
    passed = failed = 0
    for name in names:
        method: Callable[[], Awaitable[None]] = getattr(client, "s_" + name.replace("-", "_"))
        try:
            await asyncio.wait_for(method(), timeout)
        except Fail as exc:
            failed += 1
            print(f"FAIL {name}: {exc}", flush=True)
        except asyncio.TimeoutError:
            failed += 1
            print(f"FAIL {name}: timed out after {timeout:g} s", flush=True)
        except ConnectionClosed as exc:
            failed += 1
            print(f"FAIL {name}: connection closed: {exc}", flush=True)
        except Exception as exc:  # noqa: BLE001 - report every failure the same way
            failed += 1
            print(f"FAIL {name}: {type(exc).__name__}: {exc}", flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


# --------------------------------------------------------------------------
# server
# --------------------------------------------------------------------------


def route(path: str) -> tuple[str, int | None] | None:
    """Map a request path to (behaviour, close code); None means 404."""
    path = urlsplit(path).path
    if path in ("/", "/echo"):
        return ("echo", None)
    if path in ("/echo-fragmented", "/echo-fragmented-ping", "/ping", "/drop", "/big"):
        return (path[1:], None)
    if path == "/close/none":
        return ("close", None)
    if path.startswith("/close/"):
        code = path[len("/close/") :]
        if code.isdigit() and 0 <= int(code) <= 0xFFFF:
            return ("close", int(code))
    return None


async def echo_loop(ws: ServerConnection) -> None:
    async for message in ws:
        await ws.send(message)


async def discard(ws: ServerConnection) -> None:
    try:
        async for _ in ws:
            pass
    except ConnectionClosed:
        pass


async def handle(ws: ServerConnection) -> None:
    path = ws.request.path
    behaviour, code = route(path) or ("echo", None)
    peer = ws.remote_address
    extensions = ws.response.headers.get("Sec-WebSocket-Extensions") if ws.response else None
    log(f"open {peer} {path} -> {behaviour}" + (f" [{extensions}]" if extensions else ""))
    try:
        if behaviour == "echo":
            await echo_loop(ws)
        elif behaviour in ("echo-fragmented", "echo-fragmented-ping"):
            pings = 0
            pong: Awaitable[float] | None = None
            async for message in ws:
                text = isinstance(message, str)
                raw = message.encode() if text else message
                if behaviour == "echo-fragmented":
                    await ws.send(split3(raw), text=text)
                else:

                    async def fragments(parts=split3(raw)):
                        # One ping between the first two fragments, unless the
                        # previous one is still unanswered (at most one ping in
                        # flight, so pipelining clients are not ping-flooded).
                        nonlocal pings, pong
                        for i, part in enumerate(parts):
                            if i == 1 and (pong is None or pong.done()):
                                pings += 1
                                pong = await ws.ping(f"mid-{pings}".encode())
                            yield part

                    await ws.send(fragments(), text=text)
        elif behaviour == "close":
            await ws.recv()
            # Keep reading (and discarding) while closing: websockets stops
            # reading once its incoming queue is full, and would then miss the
            # client's close reply to a pipelining client.
            drain = asyncio.create_task(discard(ws))
            if code is None:
                log("closing without a status code")
                await ws.close(None)  # type: ignore[arg-type]  # empty close frame
            else:
                try:
                    await ws.close(code, "bye")
                except websockets.exceptions.ProtocolError:
                    # The library refuses codes RFC 6455 forbids on the wire;
                    # write the close frame by hand so the client's rejection
                    # path can be tested (it must answer 1002).
                    log(f"code {code} refused by websockets; writing raw close frame")
                    payload = code.to_bytes(2, "big") + b"bye"
                    ws.transport.write(bytes([0x88, len(payload)]) + payload)
                    try:
                        await asyncio.wait_for(ws.wait_closed(), 5)
                    except asyncio.TimeoutError:
                        ws.transport.abort()
            await drain
        elif behaviour == "ping":
            pong = await ws.ping(b"tether")
            async for message in ws:
                if message == "pong?":
                    got = pong.done() and not pong.cancelled() and pong.exception() is None
                    await ws.send("yes" if got else "no")
                else:
                    await ws.send(message)
        elif behaviour == "drop":
            await ws.recv()
            log("dropping TCP connection without a close frame")
            ws.transport.abort()
        elif behaviour == "big":
            await ws.send(big_pattern())
            await echo_loop(ws)
    except ConnectionClosed:
        pass
    log(f"closed {peer} {path}: code={ws.close_code} reason={ws.close_reason!r}")


def process_request(connection: ServerConnection, request: websockets.http11.Request):
    if route(request.path) is None:
        log(f"404 {request.path}")
        return connection.respond(http.HTTPStatus.NOT_FOUND, "unknown path\n")
    return None


async def run_server(port: int, deflate: bool) -> int:
    async with serve(
        handle,
        "127.0.0.1",
        port,
        process_request=process_request,
        compression="deflate" if deflate else None,
        max_size=MAX_SIZE,
        ping_interval=None,
        close_timeout=5,
    ) as server:
        bound = server.sockets[0].getsockname()[1]
        log(f"websockets {websockets.__version__} serving on 127.0.0.1:{bound}")
        print(f"listening {bound}", flush=True)
        await server.serve_forever()
    return 0


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="mode", required=True)
    p_client = sub.add_parser("client", help="run the scenarios against an echo server")
    p_client.add_argument("url")
    p_client.add_argument("--only", action="append", default=[], metavar="NAME", help="run only this scenario (repeatable)")
    p_client.add_argument("--timeout", type=float, default=15.0, help="seconds per scenario (default 15)")
    p_client.add_argument("--deflate", action="store_true", help="offer permessage-deflate")
    p_server = sub.add_parser("server", help="serve the echo endpoint with per-path behaviours")
    p_server.add_argument("port", type=int)
    p_server.add_argument("--deflate", action="store_true", help="accept permessage-deflate")
    sub.add_parser("list", help="print the scenario names")
    args = parser.parse_args()

    if args.mode == "list":
        print("\n".join(SCENARIOS))
        return 0
    try:
        if args.mode == "client":
            return asyncio.run(run_client(args.url, args.only, args.timeout, args.deflate))
        return asyncio.run(run_server(args.port, args.deflate))
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":
    sys.exit(main())
