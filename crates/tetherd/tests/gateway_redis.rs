//! Two gateway nodes sharing Redis, started by the tests on loopback ports:
//! one `redis-server`, two independent ones (channels spread by consistent
//! hashing) and a Redis Cluster of three masters (sharded pub/sub). The
//! same checks run against each: a publication made on node A reaches a
//! subscriber on node B, history and presence written through one node are
//! read through the other, a client recovers on A what it missed on B, and
//! `/api/info` lists both nodes. Then Redis faults and the node registry.

mod common;

use std::{
    collections::BTreeSet,
    time::{Duration, Instant},
};

use common::{RedisCluster, RedisServer, Tetherd, protocol::Client};
use serde_json::{Value, json};

const CONFIG: &str = r#"
[auth]
api_key = "redis-test-api-key-0123"
token_hmac_secret = "redis-test-secret-0123456789abcdef01"

[drain]
deadline = "3s"

[[namespace]]
name = "news"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_publish_for_client = true
allow_publish_for_anonymous = true
allow_history_for_subscriber = true
allow_history_for_anonymous = true
history_size = 10
history_ttl = "1m"
recovery = true

[[namespace]]
name = "room"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
allow_presence_for_subscriber = true
allow_presence_for_anonymous = true
presence = true
"#;

/// Channels the shared checks use: enough that every Redis of the setups
/// below holds some of them.
const CHANNELS: usize = 8;

/// What the nodes share.
enum Redis {
    Single(RedisServer),
    Instances(Vec<RedisServer>),
    Cluster(RedisCluster),
}

impl Redis {
    /// The `--broker` value.
    fn broker(&self) -> String {
        match self {
            Self::Single(server) => server.url(),
            Self::Instances(servers) => servers
                .iter()
                .map(RedisServer::url)
                .collect::<Vec<_>>()
                .join(","),
            Self::Cluster(cluster) => cluster.url(),
        }
    }

    /// Every server that holds keys.
    fn servers(&self) -> &[RedisServer] {
        match self {
            Self::Single(server) => std::slice::from_ref(server),
            Self::Instances(servers) => servers,
            Self::Cluster(cluster) => &cluster.masters,
        }
    }
}

#[tokio::test]
async fn nodes_share_channels_through_one_redis() {
    nodes_share_channels(&Redis::Single(RedisServer::start())).await;
}

#[tokio::test]
async fn nodes_share_channels_spread_over_two_redis_instances() {
    let redis = Redis::Instances(vec![RedisServer::start(), RedisServer::start()]);
    nodes_share_channels(&redis).await;
}

#[tokio::test]
async fn nodes_share_channels_through_a_redis_cluster() {
    nodes_share_channels(&Redis::Cluster(RedisCluster::start(3))).await;
}

async fn nodes_share_channels(redis: &Redis) {
    let broker = redis.broker();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &broker]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &broker]);
    let channels: Vec<String> = (0..CHANNELS).map(|i| format!("news:{i}")).collect();

    // Fan-out: subscribed on B, published on A.
    let mut on_b = Client::connect(&node_b).await;
    let mut epochs = Vec::new();
    for channel in &channels {
        let subscribed = on_b.call("subscribe", json!({ "channel": channel })).await;
        epochs.push(subscribed["epoch"].as_str().expect("an epoch").to_owned());
    }
    for (i, channel) in channels.iter().enumerate() {
        let published = api(
            &node_a,
            "publish",
            &json!({ "channel": channel, "data": { "n": i } }),
        );
        assert_eq!(published["result"]["offset"], 1, "{published}");
        assert_eq!(
            published["result"]["epoch"],
            epochs[i].as_str(),
            "one stream, shared by both nodes: {published}"
        );
        let push = on_b.push_in(channel).await;
        assert_eq!(push["pub"]["data"]["n"], i, "{push}");
        assert_eq!(push["pub"]["offset"], 1, "{push}");
    }
    assert_each_channel_lives_on_one_redis(redis, &channels);

    // History written through A is read through B.
    let history = api(
        &node_b,
        "history",
        &json!({ "channel": "news:0", "limit": 10 }),
    );
    assert_eq!(
        history["result"]["publications"][0]["data"]["n"], 0,
        "{history}"
    );

    // Presence: a client on A is seen through B.
    let mut on_a = Client::connect(&node_a).await;
    on_a.call("subscribe", json!({ "channel": "room:1" })).await;
    let presence = api(&node_b, "presence", &json!({ "channel": "room:1" }));
    let present: Vec<&String> = presence["result"]["presence"]
        .as_object()
        .unwrap_or_else(|| panic!("a presence map: {presence}"))
        .keys()
        .collect();
    assert_eq!(present, [&on_a.id], "{presence}");

    // Recovery: B's client goes away, misses two publications, and
    // recovers them on A.
    drop(on_b);
    for n in [100, 101] {
        let published = api(
            &node_a,
            "publish",
            &json!({ "channel": "news:0", "data": { "n": n } }),
        );
        assert!(published["result"]["offset"].is_u64(), "{published}");
    }
    let recovered = on_a
        .call(
            "subscribe",
            json!({ "channel": "news:0", "recover": true, "offset": 1, "epoch": epochs[0] }),
        )
        .await;
    assert_eq!(recovered["recovered"], true, "{recovered}");
    let missed: Vec<&Value> = recovered["publications"]
        .as_array()
        .unwrap_or_else(|| panic!("publications: {recovered}"))
        .iter()
        .map(|publication| &publication["data"]["n"])
        .collect();
    assert_eq!(missed, [&json!(100), &json!(101)], "{recovered}");

    // The node registry: each node lists both.
    for node in [&node_a, &node_b] {
        let nodes = wait_for_nodes(node, 2);
        assert_eq!(nodes.len(), 2, "{nodes:?}");
    }
}

/// Every key of a channel is on one Redis, and every Redis holds some
/// channel.
fn assert_each_channel_lives_on_one_redis(redis: &Redis, channels: &[String]) {
    let mut homes = Vec::new();
    for server in redis.servers() {
        let keys = server.cli(&["keys", "tether.*"]);
        let held: BTreeSet<&str> = channels
            .iter()
            .map(String::as_str)
            .filter(|channel| {
                keys.lines()
                    .any(|key| key.ends_with(&format!("}}{channel}")))
            })
            .collect();
        for channel in &held {
            for kind in ["meta", "history"] {
                assert!(
                    keys.lines()
                        .any(|key| key.starts_with(&format!("tether.{kind}."))
                            && key.ends_with(&format!("}}{channel}"))),
                    "{kind} of {channel} is with its other keys"
                );
            }
        }
        homes.push(held);
    }
    for channel in channels {
        let holders = homes
            .iter()
            .filter(|held| held.contains(channel.as_str()))
            .count();
        assert_eq!(
            holders, 1,
            "{channel} lives on exactly one Redis: {homes:?}"
        );
    }
    assert!(
        homes.iter().all(|held| !held.is_empty()),
        "channels are spread over every Redis: {homes:?}"
    );
}

#[tokio::test]
async fn redis_down_fails_publishes_and_redis_back_is_told_truthfully() {
    let mut redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let mut on_b = Client::connect(&node_b).await;
    let before = on_b
        .call("subscribe", json!({ "channel": "news:live" }))
        .await;
    let old_epoch = before["epoch"].as_str().expect("an epoch").to_owned();
    let published = api(
        &node_a,
        "publish",
        &json!({ "channel": "news:live", "data": 1 }),
    );
    assert_eq!(published["result"]["offset"], 1, "{published}");
    on_b.push_in("news:live").await;
    assert!(
        node_a
            .http("GET", "/ready", "", "")
            .starts_with("HTTP/1.1 200")
    );

    redis.stop();
    // Readiness follows the broker, so a load balancer takes the node out
    // of rotation; liveness does not (the node itself is fine).
    let unready = wait_for_status(&node_a, "/ready", "503").await;
    assert!(unready.contains("broker unavailable"), "{unready}");
    assert!(
        node_a
            .http("GET", "/health", "", "")
            .starts_with("HTTP/1.1 200")
    );
    let refused = api(
        &node_a,
        "publish",
        &json!({ "channel": "news:live", "data": 2 }),
    );
    assert_eq!(
        refused["error"]["code"], 100,
        "an internal error: {refused}"
    );
    assert!(
        refused["error"]["message"]
            .as_str()
            .is_some_and(|why| why.starts_with("redis")),
        "with the reason: {refused}"
    );
    // Calls for the whole cluster fail the same way, at once: the caller
    // knows they reached no node.
    for (method, body) in [
        ("disconnect", json!({ "user": "someone" })),
        (
            "subscribe",
            json!({ "user": "someone", "channel": "news:x" }),
        ),
        ("channels", json!({})),
    ] {
        let started = Instant::now();
        let refused = api(&node_a, method, &body);
        assert_eq!(refused["error"]["code"], 100, "{method}: {refused}");
        assert!(
            started.elapsed() < Duration::from_secs(2),
            "{method} answered in {:?}",
            started.elapsed()
        );
    }
    // B keeps its client, which is told its own publish failed.
    let reply = on_b
        .reply("publish", json!({ "channel": "news:live", "data": 3 }))
        .await;
    assert_eq!(reply["error"]["code"], 100, "{reply}");

    redis.restart();
    wait_for_status(&node_a, "/ready", "200").await;
    // B's subscription to Redis broke: what was published meanwhile may be
    // lost, so once B is subscribed again its client is sent away to
    // recover (3010), not left to miss publications in silence.
    assert_eq!(on_b.close_code(Duration::from_secs(30)).await, 3010);

    // Coming back with its position in the lost stream, it is told that
    // it was not recovered, and gets the new stream's publications.
    let mut returning = Client::connect(&node_b).await;
    let resubscribed = returning
        .call(
            "subscribe",
            json!({ "channel": "news:live", "recover": true, "offset": 1, "epoch": old_epoch }),
        )
        .await;
    assert_eq!(resubscribed["was_recovering"], true, "{resubscribed}");
    assert_ne!(resubscribed["recovered"], true, "{resubscribed}");
    let new_epoch = resubscribed["epoch"].as_str().expect("an epoch").to_owned();
    assert_ne!(new_epoch, old_epoch, "Redis restarted empty: a new stream");
    // A publishes again once its command connection is back.
    let deadline = Instant::now() + Duration::from_secs(20);
    let published = loop {
        let published = api(
            &node_a,
            "publish",
            &json!({ "channel": "news:live", "data": 4 }),
        );
        if published["result"].is_object() {
            break published;
        }
        assert!(Instant::now() < deadline, "A cannot publish: {published}");
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert_eq!(
        published["result"]["epoch"],
        new_epoch.as_str(),
        "{published}"
    );
    let push = returning.push_in("news:live").await;
    assert_eq!(push["pub"]["data"], 4, "{push}");
}

/// Under Redis Cluster the client library repairs a broken sharded
/// subscription by itself; the node still notices and sends the channel's
/// subscribers away to recover what may have been published meanwhile.
#[tokio::test]
async fn a_broken_cluster_subscription_sends_subscribers_to_recover() {
    let redis = RedisCluster::start(3);
    let node = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let mut client = Client::connect(&node).await;
    client
        .call("subscribe", json!({ "channel": "news:cut" }))
        .await;
    for master in &redis.masters {
        master.cli(&["client", "kill", "type", "pubsub"]);
    }
    assert_eq!(client.close_code(Duration::from_secs(30)).await, 3010);

    // The library subscribed again: a returning client gets publications.
    let mut returning = Client::connect(&node).await;
    returning
        .call("subscribe", json!({ "channel": "news:cut" }))
        .await;
    let published = api(
        &node,
        "publish",
        &json!({ "channel": "news:cut", "data": 1 }),
    );
    assert!(published["result"].is_object(), "{published}");
    assert_eq!(returning.push_in("news:cut").await["pub"]["data"], 1);
}

/// An idle node keeps its subscription to Redis: its keep-alive pings are
/// understood, so it neither reconnects (losing what is published
/// meanwhile) nor sends its subscribers away.
#[tokio::test]
async fn an_idle_subscription_survives_keepalive_pings() {
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let mut on_b = Client::connect(&node_b).await;
    on_b.call("subscribe", json!({ "channel": "news:idle" }))
        .await;
    // Longer than two ping intervals of the subscriber connection (5 s).
    assert_eq!(
        node_b.wait_for_log("redis subscriber", Duration::from_secs(11)),
        None,
        "the subscriber connection was lost while idle"
    );
    let published = api(
        &node_a,
        "publish",
        &json!({ "channel": "news:idle", "data": "still here" }),
    );
    assert_eq!(published["result"]["offset"], 1, "{published}");
    let push = on_b.push_in("news:idle").await;
    assert_eq!(push["pub"]["data"], "still here", "{push}");
}

#[tokio::test]
async fn a_draining_node_leaves_the_registry_at_once() {
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let mut node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let listed = wait_for_nodes(&node_a, 2);
    let uids: BTreeSet<&str> = listed
        .iter()
        .filter_map(|node| node["uid"].as_str())
        .collect();
    assert_eq!(uids.len(), 2, "two distinct nodes: {listed:?}");
    for node in &listed {
        for field in ["name", "address", "version"] {
            assert!(
                node[field].as_str().is_some_and(|v| !v.is_empty()),
                "{field}: {node}"
            );
        }
        for field in [
            "num_clients",
            "num_users",
            "num_subs",
            "num_channels",
            "uptime",
        ] {
            assert!(node[field].is_u64(), "{field}: {node}");
        }
    }
    // A client that never reads keeps B draining until its deadline.
    let _silent = Client::connect(&node_b).await;
    let _ = std::process::Command::new("kill")
        .args(["-TERM", &node_b.pid().to_string()])
        .status();
    let left = wait_for_nodes(&node_a, 1);
    assert!(
        node_b.is_running(),
        "B left the registry while draining, not when its entry expired"
    );
    assert_eq!(left.len(), 1, "{left:?}");
}

/// The response to GET `path` once it has `status`, within 20 s.
async fn wait_for_status(node: &Tetherd, path: &str, status: &str) -> String {
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let response = node.http("GET", path, "", "");
        if response.starts_with(&format!("HTTP/1.1 {status}")) {
            return response;
        }
        assert!(
            Instant::now() < deadline,
            "{path} never answered {status}: {response}"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

fn wait_for_nodes(node: &Tetherd, count: usize) -> Vec<Value> {
    common::protocol::wait_for_nodes(node, "redis-test-api-key-0123", count)
}

fn api(server: &Tetherd, method: &str, body: &Value) -> Value {
    common::protocol::api(server, "redis-test-api-key-0123", method, body)
}
