//! The server API acts on the whole cluster: calls sent to node A act on a
//! client connected to node B (through one `redis-server`, and through a
//! 3-primary Redis Cluster with three nodes), cluster-wide reads report a
//! node killed with SIGKILL instead of waiting for it, and a malformed
//! control message published into Redis by hand is logged and dropped.
//!
//! Two measurements print their figures (`-- --nocapture`): the latency of
//! a cross-node `disconnect` over 1,000 calls, and `channels` over 10,000
//! channels spread on three nodes.

mod common;

use std::{
    process::Command,
    time::{Duration, Instant},
};

use common::{
    RedisCluster, RedisServer, Tetherd,
    protocol::{self, Client},
};
use serde_json::{Value, json};
use tether::Message;

const API_KEY: &str = "cluster-test-api-key-0123";
const HMAC_SECRET: &str = "cluster-test-hmac-secret-0123456789abcdef";

const CONFIG: &str = r#"
[auth]
api_key = "cluster-test-api-key-0123"
token_hmac_secret = "cluster-test-hmac-secret-0123456789abcdef"

[drain]
deadline = "2s"

[[namespace]]
name = "news"
history_size = 10
history_ttl = "1m"
allow_subscribe_for_client = true
allow_subscribe_for_anonymous = true
"#;

/// How long the SDK script may take.
const SCRIPT_TIMEOUT: Duration = Duration::from_secs(60);

/// The cluster-wide read deadline of `node/control.rs`, and some room.
const READ_DEADLINE: Duration = Duration::from_secs(3);

fn api(node: &Tetherd, method: &str, body: &Value) -> Value {
    protocol::api(node, API_KEY, method, body)
}

fn wait_for_nodes(node: &Tetherd, count: usize) -> Vec<Value> {
    protocol::wait_for_nodes(node, API_KEY, count)
}

/// Runs `clients/sdk-tests/cluster.mjs`: the SDK client on `client_node`,
/// the API calls to `api_node`; panics unless it printed `ok`.
fn sdk_across(api_node: &Tetherd, client_node: &Tetherd) {
    let (status, stdout, stderr) = common::run_sdk_script(
        [
            "cluster.mjs",
            "--ws",
            &client_node.gateway_url(),
            "--http",
            &api_node.http_url(),
            "--api-key",
            API_KEY,
            "--secret",
            HMAC_SECRET,
        ],
        SCRIPT_TIMEOUT,
    );
    assert!(
        status.is_some_and(|status| status.success()) && stdout.lines().any(|line| line == "ok"),
        "cluster.mjs failed ({status:?}):\n{stdout}\n{stderr}"
    );
}

#[test]
fn api_calls_to_one_node_act_on_another_through_one_redis() {
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    wait_for_nodes(&node_a, 2);
    sdk_across(&node_a, &node_b);
}

#[test]
fn api_calls_to_one_node_act_on_another_through_a_redis_cluster() {
    let redis = RedisCluster::start(3);
    let nodes: Vec<Tetherd> = (0..3)
        .map(|_| Tetherd::gateway(CONFIG, &["--broker", &redis.url()]))
        .collect();
    wait_for_nodes(&nodes[0], 3);
    sdk_across(&nodes[0], &nodes[2]);
}

#[tokio::test]
async fn a_killed_node_is_reported_by_cluster_reads_not_waited_for() {
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let mut node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let uids: Vec<String> = wait_for_nodes(&node_a, 2)
        .iter()
        .map(|node| node["uid"].as_str().expect("a uid").to_owned())
        .collect();
    let mut on_b = Client::connect(&node_b).await;
    on_b.call("subscribe", json!({ "channel": "news:on-b" }))
        .await;
    let listed = api(&node_a, "channels", &json!({}));
    assert_eq!(
        listed["result"]["channels"]["news:on-b"]["num_clients"], 1,
        "{listed}"
    );

    let _ = Command::new("kill")
        .args(["-KILL", &node_b.pid().to_string()])
        .status();
    let _ = node_b.terminate(Duration::from_secs(5));

    // B's registry entry outlives it: A expects its answer, and names it
    // when the deadline passes.
    let started = Instant::now();
    let listed = api(&node_a, "channels", &json!({}));
    let took = started.elapsed();
    println!("channels with a SIGKILLed node: answered in {took:?}: {listed}");
    assert!(took < READ_DEADLINE + Duration::from_secs(2), "{took:?}");
    let missing = listed["result"]["missing_nodes"]
        .as_array()
        .unwrap_or_else(|| panic!("missing_nodes: {listed}"));
    assert_eq!(missing.len(), 1, "{listed}");
    assert!(
        uids.iter().any(|uid| missing[0] == uid.as_str()),
        "{listed}"
    );
    assert!(
        listed["result"]["channels"].get("news:on-b").is_none(),
        "{listed}"
    );

    // Calls that act on users are handed to Redis and answered at once.
    let started = Instant::now();
    let disconnected = api(&node_a, "disconnect", &json!({ "user": "someone" }));
    assert_eq!(disconnected, json!({ "result": {} }));
    assert!(
        started.elapsed() < Duration::from_secs(1),
        "{:?}",
        started.elapsed()
    );
}

#[tokio::test]
async fn malformed_control_messages_are_logged_and_dropped() {
    let redis = RedisServer::start();
    let mut node = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    wait_for_nodes(&node, 1);
    // The control channel is the pub/sub channel of the empty channel name.
    let control = redis
        .cli(&["PUBSUB", "CHANNELS", "tether.pub.*"])
        .lines()
        .find(|name| name.ends_with('}'))
        .unwrap_or_else(|| panic!("no control channel subscribed"))
        .to_owned();
    let cases = [
        ("not json", "undecodable control message dropped"),
        (
            r#"{"k":"c","d":{"v":1,"from":"x","op":"explode"}}"#,
            "undecodable control message dropped",
        ),
        (
            r#"{"k":"c","d":{"v":2,"from":"x","op":"disconnect","user":"u","code":4000,"reason":""}}"#,
            "control message of another version ignored",
        ),
        (
            r#"{"k":"c","d":{"v":1,"from":"x","op":"disconnect","user":"","code":1005,"reason":""}}"#,
            "control message dropped: disconnect code must be 3000 to 4999",
        ),
        (
            r#"{"k":"c","d":{"v":1,"from":"x","op":"channels_reply","id":1,"to":"x","channels":[["c",1]]}}"#,
            "",
        ),
    ];
    let mut client = Client::connect(&node).await;
    client
        .call("subscribe", json!({ "channel": "news:alive" }))
        .await;
    for (message, logged) in cases {
        let receivers = redis.cli(&["PUBLISH", &control, message]);
        assert_eq!(receivers.trim(), "1", "the node listens on {control}");
        if !logged.is_empty() {
            node.wait_for_log_async(logged)
                .await
                .unwrap_or_else(|| panic!("{message}: no log line {logged:?}"));
        }
    }
    // The anonymous client survived the forged disconnect with a code no
    // close frame may carry, and the node still works.
    let published = api(
        &node,
        "publish",
        &json!({ "channel": "news:alive", "data": 1 }),
    );
    assert!(published.get("error").is_none(), "{published}");
    let push = client.push_in("news:alive").await;
    assert_eq!(push["pub"]["data"], 1, "{push}");
    let listed = api(&node, "channels", &json!({}));
    assert_eq!(
        listed["result"]["channels"]["news:alive"]["num_clients"], 1,
        "{listed}"
    );
    assert!(node.is_running(), "no panic");
}

/// 1,000 clients, each connected to node B and disconnected by a call to
/// node A: the time from sending the call to B's close frame arriving.
#[tokio::test]
async fn cross_node_disconnect_latency() {
    const CALLS: usize = 1000;
    let redis = RedisServer::start();
    let node_a = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    let node_b = Tetherd::gateway(CONFIG, &["--broker", &redis.url()]);
    wait_for_nodes(&node_a, 2);
    let mut latencies = Vec::with_capacity(CALLS);
    for _ in 0..CALLS {
        let mut client = Client::connect(&node_b).await;
        let started = Instant::now();
        let answer = api(
            &node_a,
            "disconnect",
            &json!({ "user": "", "client": client.id, "disconnect": { "code": 4000, "reason": "x" } }),
        );
        assert_eq!(answer, json!({ "result": {} }));
        assert_eq!(client.close_code(Duration::from_secs(5)).await, 4000);
        latencies.push(started.elapsed());
    }
    latencies.sort_unstable();
    let at = |percent: usize| latencies[(latencies.len() * percent / 100).min(CALLS - 1)];
    println!(
        "cross-node disconnect (API on A, client on B, one redis-server), {CALLS} calls: \
         median {:?}, p99 {:?}, max {:?}",
        at(50),
        at(99),
        latencies[CALLS - 1]
    );
    assert!(at(99) < Duration::from_secs(1), "p99 {:?}", at(99));
}

/// `channels` on node A with 10,000 channels held by clients of three
/// nodes (81 clients of 124 channels each).
#[tokio::test]
async fn channels_over_ten_thousand_channels_on_three_nodes() {
    const CLIENTS_PER_NODE: usize = 27;
    const CHANNELS_PER_CLIENT: usize = 124;
    let redis = RedisServer::start();
    let nodes: Vec<Tetherd> = (0..3)
        .map(|_| Tetherd::gateway(CONFIG, &["--broker", &redis.url()]))
        .collect();
    wait_for_nodes(&nodes[0], 3);
    let mut clients = Vec::new();
    let mut channel = 0;
    for node in &nodes {
        for _ in 0..CLIENTS_PER_NODE {
            let mut client = Client::connect(node).await;
            // One message of subscribe commands: one message, many commands.
            let commands: Vec<String> = (0..CHANNELS_PER_CLIENT)
                .map(|i| {
                    json!({ "id": 1000 + i, "subscribe": { "channel": format!("news:{}", channel + i) } })
                        .to_string()
                })
                .collect();
            channel += CHANNELS_PER_CLIENT;
            client
                .ws
                .send(Message::text(commands.join("\n")))
                .await
                .expect("sent");
            let last = 1000 + CHANNELS_PER_CLIENT as u64 - 1;
            let reply = client.next(|value| value["id"] == last).await;
            assert!(reply.get("error").is_none(), "{reply}");
            clients.push(client);
        }
    }
    let total = channel;
    let mut timings = Vec::new();
    for _ in 0..5 {
        let started = Instant::now();
        let listed = api(&nodes[0], "channels", &json!({}));
        timings.push(started.elapsed());
        let channels = listed["result"]["channels"]
            .as_object()
            .unwrap_or_else(|| panic!("channels: {listed}"));
        assert_eq!(channels.len(), total, "every channel of every node");
        assert!(
            channels.values().all(|info| info["num_clients"] == 1),
            "one client each"
        );
        assert_eq!(
            listed["result"].get("missing_nodes"),
            None,
            "{}",
            listed["result"]
        );
    }
    timings.sort_unstable();
    println!(
        "channels on A over {total} channels on 3 nodes (one redis-server), 5 calls: \
         min {:?}, median {:?}, max {:?}",
        timings[0], timings[2], timings[4]
    );
}
