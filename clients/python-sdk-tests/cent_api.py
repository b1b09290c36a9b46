"""The PyPI `cent` client (sync `Client`) against tetherd's HTTP API.

A centrifuge-python client connects as user "alice" and subscribes to
chat:room, so that presence, channels, info, and the API's subscribe,
unsubscribe and disconnect of a user have someone to act on.
"""

import asyncio

from cent import (
    BroadcastRequest,
    ChannelsRequest,
    Client as ApiClient,
    DisconnectRequest,
    HistoryRemoveRequest,
    HistoryRequest,
    InfoRequest,
    PresenceRequest,
    PresenceStatsRequest,
    PublishRequest,
    SubscribeRequest,
    UnsubscribeRequest,
)
from cent.exceptions import CentApiResponseError, CentUnauthorizedError
from centrifuge import Client, ClientEventHandler, SubscriptionEventHandler

from common import Events, parse_args, token


class AliceEvents(ClientEventHandler):
    """Connection-level events, including server-side subscriptions."""

    def __init__(self, events):
        self.events = events

    async def on_connected(self, ctx):
        self.events.put("connected", ctx)

    async def on_disconnected(self, ctx):
        self.events.put("disconnected", ctx)

    async def on_subscribed(self, ctx):
        self.events.put("server_subscribed", ctx)

    async def on_unsubscribed(self, ctx):
        self.events.put("server_unsubscribed", ctx)

    async def on_publication(self, ctx):
        self.events.put("server_publication", ctx)


class RoomEvents(SubscriptionEventHandler):
    def __init__(self, events):
        self.events = events

    async def on_subscribed(self, ctx):
        self.events.put("subscribed", ctx)

    async def on_publication(self, ctx):
        self.events.put("publication", ctx.pub)


async def main():
    args = parse_args()
    api = ApiClient(f"http://{args.addr}/api", args.api_key)
    call = lambda method, request: asyncio.to_thread(method, request)  # noqa: E731

    events = Events()
    alice = Client(
        f"ws://{args.addr}/connection/websocket",
        events=AliceEvents(events),
        token=token(args.secret, "alice"),
        proxy=None,
    )
    room = alice.new_subscription("chat:room", events=RoomEvents(events))
    await alice.connect()
    connected = await events.get("connected")
    await room.subscribe()
    await events.get("subscribed")

    # publish: the position comes back, and the subscriber gets the data.
    published = await call(api.publish, PublishRequest(channel="chat:room", data={"n": 1}))
    assert published.offset == 1, published
    assert published.epoch, published
    pub = await events.get("publication")
    assert pub.data == {"n": 1} and pub.offset == 1, pub

    # broadcast: one response per channel, errors per channel.
    broadcast = await call(
        api.broadcast,
        BroadcastRequest(channels=["chat:room", "chat:other", "nope:x"], data={"n": 2}),
    )
    assert len(broadcast.responses) == 3, broadcast
    room_result, other_result, unknown = broadcast.responses
    assert room_result.error is None and room_result.result.offset == 2, room_result
    assert room_result.result.epoch == published.epoch, room_result
    assert other_result.error is None and other_result.result.offset == 1, other_result
    assert unknown.error is not None and unknown.error.code == 102, unknown
    pub = await events.get("publication")
    assert pub.data == {"n": 2} and pub.offset == 2, pub

    # presence and presence_stats: alice, once.
    presence = await call(api.presence, PresenceRequest(channel="chat:room"))
    assert list(presence.presence) == [connected.client], presence
    info = presence.presence[connected.client]
    assert info.client == connected.client and info.user == "alice", info
    stats = await call(api.presence_stats, PresenceStatsRequest(channel="chat:room"))
    assert (stats.num_clients, stats.num_users) == (1, 1), stats

    # history: limit, order, position; history_remove keeps the position.
    history = await call(api.history, HistoryRequest(channel="chat:room", limit=1))
    assert [p.data for p in history.publications] == [{"n": 1}], history
    assert (history.offset, history.epoch) == (2, published.epoch), history
    history = await call(api.history, HistoryRequest(channel="chat:room", limit=10))
    assert [p.offset for p in history.publications] == [1, 2], history
    position_only = await call(api.history, HistoryRequest(channel="chat:room"))
    assert position_only.publications == [] and position_only.offset == 2, position_only
    await call(api.history_remove, HistoryRemoveRequest(channel="chat:room"))
    history = await call(api.history, HistoryRequest(channel="chat:room", limit=10))
    assert history.publications == [], history
    assert (history.offset, history.epoch) == (2, published.epoch), history

    # channels and info.
    channels = await call(api.channels, ChannelsRequest())
    assert channels.channels["chat:room"].num_clients == 1, channels
    channels = await call(api.channels, ChannelsRequest(pattern="nothing*"))
    assert channels.channels == {}, channels
    nodes = (await call(api.info, InfoRequest())).nodes
    assert len(nodes) == 1, nodes
    assert (nodes[0].num_clients, nodes[0].num_users) == (1, 1), nodes
    assert nodes[0].uid and nodes[0].name, nodes

    # subscribe a user server-side: the SDK sees a server-side subscription
    # and its publications.
    await call(api.subscribe, SubscribeRequest(user="alice", channel="chat:server"))
    subscribed = await events.get("server_subscribed")
    assert subscribed.channel == "chat:server", subscribed
    await call(api.publish, PublishRequest(channel="chat:server", data={"to": "alice"}))
    server_pub = await events.get("server_publication")
    assert server_pub.channel == "chat:server" and server_pub.pub.data == {"to": "alice"}, server_pub
    await call(api.unsubscribe, UnsubscribeRequest(user="alice", channel="chat:server"))
    unsubscribed = await events.get("server_unsubscribed")
    assert unsubscribed.channel == "chat:server", unsubscribed
    channels = await call(api.channels, ChannelsRequest())
    assert "chat:server" not in channels.channels, channels

    # disconnect a user: terminal by default, so the SDK stays disconnected.
    await call(api.disconnect, DisconnectRequest(user="alice"))
    disconnected = await events.get("disconnected")
    assert disconnected.code == 3503, disconnected
    await asyncio.sleep(0.5)
    assert alice.state.value == "disconnected", alice.state
    stats = await call(api.presence_stats, PresenceStatsRequest(channel="chat:room"))
    assert stats.num_clients == 0, stats

    # errors: an API error is cent's exception with Centrifugo's code, a
    # wrong key is unauthorized.
    try:
        await call(api.publish, PublishRequest(channel="nope:x", data={}))
    except CentApiResponseError as error:
        assert error.code == 102, error
    else:
        raise AssertionError("publish to an unknown namespace succeeded")
    try:
        await call(api.presence, PresenceRequest(channel="plain"))
    except CentApiResponseError as error:
        assert error.code == 108, error
    else:
        raise AssertionError("presence without presence enabled succeeded")
    wrong = ApiClient(f"http://{args.addr}/api", "wrong-key-0123456789")
    try:
        await call(wrong.info, InfoRequest())
    except CentUnauthorizedError:
        pass
    else:
        raise AssertionError("a wrong API key was accepted")

    await alice.disconnect()
    print("ok")


if __name__ == "__main__":
    asyncio.run(main())
