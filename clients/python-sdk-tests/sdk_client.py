"""centrifuge-python (the PyPI SDK) against tetherd: connect with a JWT,
subscribe, receive publications from the HTTP API, presence, history,
client-side publish, and recovery of what was missed across a reconnect
the server forced.
"""

import asyncio
import json
import urllib.request

from centrifuge import (
    Client,
    ClientEventHandler,
    ClientState,
    SubscriptionEventHandler,
)

from common import Events, parse_args, token

CHANNEL = "chat:sdk"


class ClientEvents(ClientEventHandler):
    def __init__(self, events):
        self.events = events

    async def on_connecting(self, ctx):
        self.events.put("connecting", ctx)

    async def on_connected(self, ctx):
        self.events.put("connected", ctx)

    async def on_disconnected(self, ctx):
        self.events.put("disconnected", ctx)


class SubEvents(SubscriptionEventHandler):
    def __init__(self, events):
        self.events = events

    async def on_subscribed(self, ctx):
        self.events.put("subscribed", ctx)

    async def on_publication(self, ctx):
        self.events.put("publication", ctx.pub)

    async def on_error(self, ctx):
        self.events.put("sub_error", ctx)


def api(args, method, params):
    """One HTTP API call with the standard library; returns the result."""
    request = urllib.request.Request(
        f"http://{args.addr}/api/{method}",
        data=json.dumps(params).encode(),
        headers={"X-API-Key": args.api_key, "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as response:
        body = json.load(response)
    assert "error" not in body, body
    return body["result"]


async def main():
    args = parse_args()
    events = Events()
    client = Client(
        f"ws://{args.addr}/connection/websocket",
        events=ClientEvents(events),
        token=token(args.secret, "bob", info={"name": "Bob"}),
        # Long enough that the publications made right after the forced
        # disconnect land before the SDK comes back.
        min_reconnect_delay=1.0,
        max_reconnect_delay=2.0,
        proxy=None,
    )
    sub = client.new_subscription(CHANNEL, events=SubEvents(events), recoverable=True)

    await client.connect()
    connected = await events.get("connected")
    assert connected.client, connected
    await events.get("connecting")  # the initial CONNECT_CALLED transition
    await sub.subscribe()
    subscribed = await events.get("subscribed")
    assert subscribed.recoverable and not subscribed.was_recovering, subscribed
    assert subscribed.stream_position is not None, subscribed
    epoch = subscribed.stream_position.epoch

    # A publication from the HTTP API reaches the subscriber.
    result = await asyncio.to_thread(api, args, "publish", {"channel": CHANNEL, "data": {"text": "hi"}})
    assert result["offset"] == 1 and result["epoch"] == epoch, result
    pub = await events.get("publication")
    assert (pub.offset, pub.data) == (1, {"text": "hi"}), pub

    # Client-side publish: delivered back with the publisher's info.
    await sub.publish({"text": "from bob"})
    pub = await events.get("publication")
    assert (pub.offset, pub.data) == (2, {"text": "from bob"}), pub
    assert pub.info is not None and pub.info.user == "bob", pub
    assert pub.info.client == connected.client, pub
    assert pub.info.conn_info == {"name": "Bob"}, pub

    # Presence and history through the SDK.
    presence = await sub.presence()
    assert list(presence.clients) == [connected.client], presence
    assert presence.clients[connected.client].user == "bob", presence
    stats = await sub.presence_stats()
    assert (stats.num_clients, stats.num_users) == (1, 1), stats
    history = await sub.history(limit=10)
    assert [p.data for p in history.publications] == [{"text": "hi"}, {"text": "from bob"}], history
    assert (history.offset, history.epoch) == (2, epoch), history
    history = await sub.history(limit=1, reverse=True)
    assert [p.offset for p in history.publications] == [2], history

    # Recovery: the server forces a reconnect (3011, not terminal); two
    # publications are made while the SDK is away; on resubscribe it asks
    # to recover from offset 2 and gets both, each once, in order.
    api(args, "disconnect", {"user": "bob", "disconnect": {"code": 3011, "reason": "force reconnect"}})
    connecting = await events.get("connecting")
    assert connecting.code == 3011, connecting
    for n in (3, 4):
        result = api(args, "publish", {"channel": CHANNEL, "data": {"text": f"missed {n}"}})
        assert result["offset"] == n, result
    reconnected = await events.get("connected")
    assert reconnected.client != connected.client, reconnected
    resubscribed = await events.get("subscribed")
    assert resubscribed.was_recovering and resubscribed.recovered, resubscribed
    offsets = []
    for _ in (3, 4):
        pub = await events.get("publication")
        offsets.append(pub.offset)
        assert pub.data == {"text": f"missed {pub.offset}"}, pub
    assert offsets == [3, 4], offsets

    # Live again after recovery, with nothing duplicated.
    api(args, "publish", {"channel": CHANNEL, "data": {"text": "live"}})
    pub = await events.get("publication")
    assert (pub.offset, pub.data) == (5, {"text": "live"}), pub
    await asyncio.sleep(0.3)
    assert events.empty("publication"), "a publication was delivered twice"
    assert events.empty("sub_error"), await events.get("sub_error")

    await client.disconnect()
    assert client.state == ClientState.DISCONNECTED, client.state
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
