#!/usr/bin/env python3
"""Check the per-path behaviours of a `peer server` (either implementation).

Usage: check_server.py PORT

This is the self-test of the peers' server side, a stand-in for the Tether
client until the Rust interop tests exist. Output follows the client's
format: `ok NAME` / `FAIL NAME: reason`, then `N passed, N failed`.
"""

from __future__ import annotations

import asyncio
import sys

from websockets.asyncio.client import connect
from websockets.exceptions import ConnectionClosed, InvalidStatus

from peer import MAX_SIZE, Fail, big_pattern, describe

BASE = ""


def open_ws(path: str):
    return connect(BASE + path, compression=None, max_size=MAX_SIZE, ping_interval=None, close_timeout=5)


async def expect_closed_by_server(ws, code: int | None, reason: str | None = None) -> None:
    """Send one message; the server must close (code None: drop, no close frame)."""
    await ws.send("trigger")
    try:
        got = await ws.recv()
    except ConnectionClosed:
        pass
    else:
        raise Fail(f"expected the server to close, got {describe(got)}")
    await ws.wait_closed()
    rcvd = ws.protocol.close_rcvd
    if code is None:
        if rcvd is not None:
            raise Fail(f"expected no close frame, got {rcvd.code} {rcvd.reason!r}")
        if ws.close_code != 1006:
            raise Fail(f"close code {ws.close_code}, want 1006")
        return
    if rcvd is None:
        raise Fail("no close frame received")
    if rcvd.code != code:
        raise Fail(f"close code {rcvd.code}, want {code}")
    if reason is not None and rcvd.reason != reason:
        raise Fail(f"close reason {rcvd.reason!r}, want {reason!r}")


async def c_echo() -> None:
    for path in ("/", "/echo", "/echo?x=1"):
        async with open_ws(path) as ws:
            for msg in ("hi é", b"\x00\xff", "", b""):
                await ws.send(msg)
                got = await ws.recv()
                if got != msg or type(got) is not type(msg):
                    raise Fail(f"{path}: got {describe(got)}, want {describe(msg)}")


async def fragmented(path: str) -> None:
    async with open_ws(path) as ws:
        for msg in ("a😀b€c" * 10, bytes(range(256)), big_pattern()):
            await ws.send(msg)
            frames = [f async for f in ws.recv_streaming()]
            joined = "".join(frames) if isinstance(msg, str) else b"".join(frames)
            if joined != msg:
                raise Fail(f"got {describe(joined)}, want {describe(msg)}")
            if len(frames) < 3:
                raise Fail(f"echo came in {len(frames)} frame(s), want >= 3")


async def c_echo_fragmented() -> None:
    await fragmented("/echo-fragmented")


async def c_echo_fragmented_ping() -> None:
    await fragmented("/echo-fragmented-ping")


async def c_close_codes() -> None:
    for code in (1000, 1001, 1011, 3000, 4001, 4999):
        async with open_ws(f"/close/{code}") as ws:
            try:
                await expect_closed_by_server(ws, code, "bye")
            except Fail as exc:
                raise Fail(f"/close/{code}: {exc}") from None


async def c_close_none() -> None:
    async with open_ws("/close/none") as ws:
        await expect_closed_by_server(ws, 1005, "")


async def c_close_invalid() -> None:
    # The server writes a close frame with a forbidden code; a conforming
    # client (here websockets) must fail the connection with 1002.
    for code in (1005, 1006, 999, 2000, 5000):
        async with open_ws(f"/close/{code}") as ws:
            await ws.send("trigger")
            try:
                await ws.recv()
            except ConnectionClosed:
                pass
            await ws.wait_closed()
            sent = ws.protocol.close_sent
            if sent is None or sent.code != 1002:
                raise Fail(f"/close/{code}: client sent {sent}, want 1002")


async def c_ping() -> None:
    async with open_ws("/ping") as ws:
        await ws.send("first")  # by its echo, the server's ping has been answered
        if (got := await ws.recv()) != "first":
            raise Fail(f"echo: {describe(got)}")
        await ws.send("pong?")
        if (got := await ws.recv()) != "yes":
            raise Fail(f"pong? -> {describe(got)}, want 'yes'")


async def c_drop() -> None:
    async with open_ws("/drop") as ws:
        await expect_closed_by_server(ws, None)


async def c_big() -> None:
    async with open_ws("/big") as ws:
        got = await ws.recv()
        if got != big_pattern():
            raise Fail(f"first message {describe(got)}, want the 1 MiB pattern")
        await ws.send("then echo")
        if (got := await ws.recv()) != "then echo":
            raise Fail(f"echo: {describe(got)}")


async def c_not_found() -> None:
    try:
        async with open_ws("/no-such-path"):
            pass
    except InvalidStatus as exc:
        if exc.response.status_code != 404:
            raise Fail(f"HTTP {exc.response.status_code}, want 404") from None
    else:
        raise Fail("handshake succeeded, want 404")


CHECKS = {
    "echo": c_echo,
    "echo-fragmented": c_echo_fragmented,
    "echo-fragmented-ping": c_echo_fragmented_ping,
    "close-codes": c_close_codes,
    "close-none": c_close_none,
    "close-invalid": c_close_invalid,
    "ping": c_ping,
    "drop": c_drop,
    "big": c_big,
    "not-found": c_not_found,
}


async def main(port: int) -> int:
    global BASE
    BASE = f"ws://127.0.0.1:{port}"
    passed = failed = 0
    for name, check in CHECKS.items():
        try:
            await asyncio.wait_for(check(), 15)
        except Exception as exc:  # noqa: BLE001
            failed += 1
            detail = str(exc) if isinstance(exc, Fail) else f"{type(exc).__name__}: {exc}"
            print(f"FAIL {name}: {detail}", flush=True)
        else:
            passed += 1
            print(f"ok {name}", flush=True)
    print(f"{passed} passed, {failed} failed", flush=True)
    return 0 if failed == 0 else 1


if __name__ == "__main__":
    if len(sys.argv) != 2 or not sys.argv[1].isdigit():
        sys.exit(__doc__)
    sys.exit(asyncio.run(main(int(sys.argv[1]))))
