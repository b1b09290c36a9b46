"""Shared by the Python SDK checks: arguments, tokens, and waiting for events.

Every script takes the gateway's address, API key and HMAC secret:

    python SCRIPT.py --addr 127.0.0.1:PORT --api-key KEY --secret SECRET

and exits 0 after printing `ok`, or non-zero with the failed check.
"""

import argparse
import asyncio
import time

import jwt

# How long any one expected event may take to arrive.
TIMEOUT = 10.0


def parse_args():
    parser = argparse.ArgumentParser()
    parser.add_argument("--addr", required=True, help="the gateway's HOST:PORT")
    parser.add_argument("--api-key", required=True)
    parser.add_argument("--secret", required=True, help="auth.token_hmac_secret")
    return parser.parse_args()


def token(secret, user, **claims):
    """An HS256 connection token for `user`, valid for an hour."""
    payload = {"sub": user, "exp": int(time.time()) + 3600, **claims}
    return jwt.encode(payload, secret, algorithm="HS256")


class Events:
    """Collects SDK events into named queues, to be awaited in order."""

    def __init__(self):
        self._queues = {}

    def queue(self, name):
        return self._queues.setdefault(name, asyncio.Queue())

    def put(self, name, value):
        self.queue(name).put_nowait(value)

    async def get(self, name, timeout=TIMEOUT):
        try:
            return await asyncio.wait_for(self.queue(name).get(), timeout)
        except asyncio.TimeoutError:
            raise AssertionError(f"no {name!r} event within {timeout}s") from None

    def empty(self, name):
        return self.queue(name).empty()
