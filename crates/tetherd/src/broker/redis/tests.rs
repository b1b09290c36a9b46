//! The engine against real `redis-server`s started by the tests.

use std::{
    io::{Read, Write},
    net::{TcpListener, TcpStream},
    process::{Child, Command, Stdio},
    time::Instant,
};

use bytes::Bytes;

use super::*;
use crate::broker::{
    BrokerError, NodeInfo,
    testing::{Recorder, Seen, client, publication},
};

/// A `redis-server` child on a loopback port, killed on drop.
struct RedisServer {
    port: u16,
    child: Option<Child>,
}

impl RedisServer {
    fn start() -> Self {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|listener| listener.local_addr())
            .expect("a free loopback port")
            .port();
        let mut server = Self { port, child: None };
        server.restart();
        server
    }

    /// Starts (again) on the same port, without persistence.
    fn restart(&mut self) {
        let child = Command::new("redis-server")
            .args(["--port", &self.port.to_string()])
            .args(["--bind", "127.0.0.1", "--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|error| {
                panic!(
                    "cannot start redis-server ({error}); these tests need it installed \
                     (Debian: apt-get install -y redis-server)"
                )
            });
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(10);
        while !self.answers_ping() {
            assert!(Instant::now() < deadline, "redis-server did not start");
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    fn answers_ping(&self) -> bool {
        let Ok(mut stream) = TcpStream::connect(("127.0.0.1", self.port)) else {
            return false;
        };
        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
        let mut reply = [0; 7];
        stream.write_all(b"PING\r\n").is_ok()
            && stream.read_exact(&mut reply).is_ok()
            && &reply == b"+PONG\r\n"
    }

    fn url(&self) -> String {
        format!("redis://127.0.0.1:{}/", self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.stop();
    }
}

async fn node(server: &RedisServer) -> (Arc<RedisBroker>, Arc<Recorder>) {
    node_over(RedisServers::Instances(vec![server.url()])).await
}

async fn node_over(servers: RedisServers) -> (Arc<RedisBroker>, Arc<Recorder>) {
    let broker = RedisBroker::connect(&servers)
        .await
        .expect("redis-server is running");
    let recorder = Arc::new(Recorder::default());
    broker.set_events(recorder.clone());
    (broker, recorder)
}

const KEEP: HistoryOptions = HistoryOptions {
    size: 3,
    ttl: Duration::from_secs(60),
};

fn offsets(publications: &[Publication]) -> Vec<u64> {
    publications.iter().map(|p| p.offset).collect()
}

fn since(position: &StreamPosition, offset: u64) -> HistoryQuery {
    HistoryQuery {
        since: Some(StreamPosition {
            offset,
            epoch: position.epoch.clone(),
        }),
        ..HistoryQuery::default()
    }
}

/// Lets messages in flight arrive (to check that none does).
async fn settle() {
    tokio::time::sleep(Duration::from_millis(200)).await;
}

#[tokio::test]
async fn publications_reach_other_nodes_only_while_subscribed() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, seen_by_b) = node(&server).await;

    a.publish("chat", publication("before"), None)
        .await
        .unwrap();
    settle().await;
    assert!(seen_by_b.take().is_empty(), "B did not subscribe yet");

    b.subscribe("chat").await.unwrap();
    let position = a.publish("chat", publication("live"), None).await.unwrap();
    assert_eq!(position.offset, 0);
    assert!(position.epoch.is_empty());
    a.publish_join("chat", client("c1", "u1")).await.unwrap();
    a.publish_leave("chat", client("c1", "u1")).await.unwrap();
    assert_eq!(
        seen_by_b.wait_for(3).await,
        vec![
            Seen::Publication("chat".to_owned(), publication("live"), String::new()),
            Seen::Join("chat".to_owned(), client("c1", "u1")),
            Seen::Leave("chat".to_owned(), client("c1", "u1")),
        ]
    );

    b.unsubscribe("chat").await.unwrap();
    a.publish("chat", publication("after"), None).await.unwrap();
    settle().await;
    assert!(seen_by_b.take().is_empty(), "B unsubscribed");
}

#[tokio::test]
async fn racing_subscribe_and_unsubscribe_follow_the_last_call() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, seen_by_b) = node(&server).await;
    for (calls, last_subscribes) in [(51, true), (50, false), (7, true)] {
        // All calls are made before any is awaited; they are answered
        // in reverse, as racing sessions might.
        let pending: Vec<_> = (0..calls)
            .map(|i| {
                if i % 2 == 0 {
                    b.subscribe("c")
                } else {
                    b.unsubscribe("c")
                }
            })
            .collect();
        for call in pending.into_iter().rev() {
            call.await.unwrap();
        }
        a.publish("c", publication("x"), None).await.unwrap();
        if last_subscribes {
            assert_eq!(seen_by_b.wait_for(1).await.len(), 1);
        } else {
            settle().await;
            assert!(seen_by_b.take().is_empty());
        }
    }
}

#[tokio::test]
async fn offsets_increase_across_publishers() {
    let server = RedisServer::start();
    let (a, seen_by_a) = node(&server).await;
    let (b, seen_by_b) = node(&server).await;
    a.subscribe("c").await.unwrap();
    b.subscribe("c").await.unwrap();
    let history = HistoryOptions {
        size: 100,
        ttl: Duration::from_secs(60),
    };
    let publish_from = |broker: Arc<RedisBroker>| async move {
        let mut offsets = Vec::new();
        for i in 0..20 {
            let position = broker
                .publish("c", publication(&i.to_string()), Some(history))
                .await
                .unwrap();
            offsets.push(position.offset);
        }
        offsets
    };
    let (from_a, from_b) = tokio::join!(publish_from(a.clone()), publish_from(b.clone()));
    assert!(from_a.windows(2).all(|w| w[0] < w[1]));
    assert!(from_b.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<u64> = from_a.into_iter().chain(from_b).collect();
    all.sort_unstable();
    assert_eq!(all, (1..=40).collect::<Vec<_>>());
    let position = a
        .history(
            "c",
            HistoryQuery {
                limit: Some(0),
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap()
        .position;
    for seen in [seen_by_a, seen_by_b] {
        let delivered: Vec<u64> = seen
            .wait_for(40)
            .await
            .into_iter()
            .map(|seen| match seen {
                Seen::Publication(_, p, epoch) if epoch == position.epoch => p.offset,
                other => panic!("unexpected {other:?}, epoch {}", position.epoch),
            })
            .collect();
        assert_eq!(delivered, (1..=40).collect::<Vec<_>>(), "in offset order");
    }
}

#[tokio::test]
async fn history_recovers_exactly_or_says_it_cannot() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, _) = node(&server).await;

    // A channel without a stream: offset 0 and an epoch to recover from.
    let empty = b
        .history(
            "c",
            HistoryQuery {
                limit: Some(0),
                ..HistoryQuery::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(empty.position.offset, 0);
    assert_eq!(empty.position.epoch.len(), EPOCH_LEN);
    let mut last = StreamPosition {
        offset: 0,
        epoch: String::new(),
    };
    for i in 1..=5 {
        last = a
            .publish("c", publication(&i.to_string()), Some(KEEP))
            .await
            .unwrap();
        assert_eq!(last.offset, i);
        assert_eq!(last.epoch, empty.position.epoch);
    }

    let recovered = b.history("c", since(&last, 2)).await.unwrap();
    assert_eq!(offsets(&recovered.publications), [3, 4, 5]);
    assert_eq!(recovered.publications[0].data, publication("3").data);
    assert_eq!(recovered.position, last);
    assert!(
        b.history("c", since(&last, 5))
            .await
            .unwrap()
            .publications
            .is_empty()
    );
    for gone in [since(&last, 1), since(&last, 0), since(&last, 6)] {
        assert_eq!(
            b.history("c", gone).await,
            Err(BrokerError::UnrecoverablePosition)
        );
    }
    let other_epoch = HistoryQuery {
        since: Some(StreamPosition {
            offset: 4,
            epoch: "other".to_owned(),
        }),
        ..HistoryQuery::default()
    };
    assert_eq!(
        b.history("c", other_epoch).await,
        Err(BrokerError::UnrecoverablePosition)
    );

    let oldest = HistoryQuery {
        limit: Some(2),
        ..HistoryQuery::default()
    };
    assert_eq!(
        offsets(&b.history("c", oldest).await.unwrap().publications),
        [3, 4]
    );
    let newest = HistoryQuery {
        limit: Some(2),
        reverse: true,
        ..HistoryQuery::default()
    };
    assert_eq!(
        offsets(&b.history("c", newest).await.unwrap().publications),
        [5, 4]
    );
    let position_only = HistoryQuery {
        limit: Some(0),
        ..since(&last, 3)
    };
    let history = b.history("c", position_only).await.unwrap();
    assert!(history.publications.is_empty());
    assert_eq!(history.position, last);
}

#[tokio::test]
async fn since_with_reverse_pages_backwards() {
    let server = RedisServer::start();
    let (broker, _) = node(&server).await;
    crate::broker::paging_tests::since_with_reverse_pages_backwards(&*broker).await;
}

#[tokio::test]
async fn remove_history_keeps_the_position() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, _) = node(&server).await;
    let mut last = None;
    for i in 0..3 {
        last = Some(
            a.publish("c", publication(&i.to_string()), Some(KEEP))
                .await
                .unwrap(),
        );
    }
    let last = last.expect("published three times");
    b.remove_history("c").await.unwrap();
    let history = b.history("c", HistoryQuery::default()).await.unwrap();
    assert!(history.publications.is_empty());
    assert_eq!(history.position, last);
    assert!(
        b.history("c", since(&last, 3))
            .await
            .unwrap()
            .publications
            .is_empty()
    );
    assert_eq!(
        b.history("c", since(&last, 2)).await,
        Err(BrokerError::UnrecoverablePosition)
    );
    let next = a
        .publish("c", publication("next"), Some(KEEP))
        .await
        .unwrap();
    assert_eq!((next.offset, next.epoch), (4, last.epoch.clone()));
    assert_eq!(
        offsets(&b.history("c", since(&last, 3)).await.unwrap().publications),
        [4]
    );
}

#[tokio::test]
async fn presence_is_shared_and_expires() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, _) = node(&server).await;
    a.add_presence("c", client("c1", "u1"), Duration::from_secs(60))
        .await
        .unwrap();
    b.add_presence("c", client("c3", "u2"), Duration::from_millis(300))
        .await
        .unwrap();
    b.add_presence("c", client("c2", "u1"), Duration::from_millis(300))
        .await
        .unwrap();
    assert_eq!(
        a.presence("c").await.unwrap(),
        [client("c1", "u1"), client("c2", "u1"), client("c3", "u2")]
    );
    assert_eq!(
        b.presence_stats("c").await.unwrap(),
        PresenceStats {
            clients: 3,
            users: 2
        }
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    // A refresh keeps an entry alive; the others expired.
    a.add_presence("c", client("c1", "u1"), Duration::from_secs(60))
        .await
        .unwrap();
    assert_eq!(b.presence("c").await.unwrap(), [client("c1", "u1")]);
    assert_eq!(
        a.presence_stats("c").await.unwrap(),
        PresenceStats {
            clients: 1,
            users: 1
        }
    );

    b.remove_presence("c", "c1").await.unwrap();
    assert!(a.presence("c").await.unwrap().is_empty());
    assert_eq!(
        b.presence_stats("other").await.unwrap(),
        PresenceStats::default()
    );
}

#[tokio::test]
async fn a_redis_restart_is_reported_and_survived() {
    let mut server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, seen_by_b) = node(&server).await;
    b.subscribe("c").await.unwrap();
    let before = a
        .publish("c", publication("before"), Some(KEEP))
        .await
        .unwrap();
    seen_by_b.wait_for(1).await;

    server.stop();
    let started = Instant::now();
    let down = a.publish("c", publication("down"), Some(KEEP)).await;
    assert!(matches!(down, Err(BrokerError::Unavailable(_))), "{down:?}");
    assert!(
        started.elapsed() <= CALL_TIMEOUT + Duration::from_secs(1),
        "fails quickly"
    );
    assert!(matches!(
        b.history("c", HistoryQuery::default()).await,
        Err(BrokerError::Unavailable(_))
    ));

    server.restart();
    // The command connection reconnects, and B's subscriber
    // resubscribes: a publication after the restart reaches B, after B
    // was told that the channel's messages may have been lost meanwhile.
    let deadline = Instant::now() + Duration::from_secs(15);
    let mut seen = Vec::new();
    let after = loop {
        assert!(
            Instant::now() < deadline,
            "no publication reached B after the restart"
        );
        if let Ok(position) = a.publish("c", publication("after"), Some(KEEP)).await {
            tokio::time::sleep(Duration::from_millis(100)).await;
            seen.extend(seen_by_b.take());
            if seen.iter().any(|seen| {
                matches!(seen, Seen::Publication(_, p, _) if p.data == publication("after").data)
            }) {
                break position;
            }
        } else {
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    };
    assert_eq!(seen[0], Seen::Interrupted("c".to_owned()), "{seen:?}");
    assert!(
        matches!(&seen[1], Seen::Publication(_, p, epoch) if p.data == publication("after").data && *epoch == after.epoch),
        "{seen:?}"
    );
    assert_ne!(
        after.epoch, before.epoch,
        "history was lost, so the epoch changed"
    );
    assert_eq!(
        b.history("c", since(&before, before.offset)).await,
        Err(BrokerError::UnrecoverablePosition)
    );
}

#[tokio::test]
async fn connect_fails_when_redis_is_down() {
    let mut server = RedisServer::start();
    server.stop();
    let result = RedisBroker::connect(&RedisServers::Instances(vec![server.url()])).await;
    assert!(matches!(result, Err(BrokerError::Unavailable(_))));
}

fn node_info(uid: &str) -> NodeInfo {
    NodeInfo {
        uid: uid.to_owned(),
        name: format!("name-{uid}"),
        address: "127.0.0.1:8000".to_owned(),
        version: "1.2.3".to_owned(),
        num_clients: 3,
        num_users: 2,
        num_subs: 5,
        num_channels: 4,
        uptime: 60,
    }
}

#[tokio::test]
async fn the_registry_lists_live_nodes_until_they_expire_or_withdraw() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, _) = node(&server).await;
    let (short, long) = (Duration::from_millis(300), Duration::from_secs(60));
    a.announce(&node_info("a"), long).await.unwrap();
    b.announce(&node_info("b"), short).await.unwrap();
    let mut changed = node_info("c");
    b.announce(&changed, long).await.unwrap();
    changed.num_clients = 7;
    b.announce(&changed, long).await.unwrap();
    assert_eq!(
        a.nodes().await.unwrap(),
        [node_info("a"), node_info("b"), changed.clone()]
    );

    tokio::time::sleep(Duration::from_millis(400)).await;
    assert_eq!(
        a.nodes().await.unwrap(),
        [node_info("a"), changed],
        "b stopped announcing"
    );
    b.withdraw("c").await.unwrap();
    assert_eq!(b.nodes().await.unwrap(), [node_info("a")]);
}

#[tokio::test]
async fn each_channel_stays_on_one_of_several_instances() {
    let servers = [RedisServer::start(), RedisServer::start()];
    let urls = servers.iter().map(RedisServer::url).collect();
    let (a, _) = node_over(RedisServers::Instances(urls)).await;
    let channels: Vec<String> = (0..16).map(|i| format!("c{i}")).collect();
    for channel in &channels {
        a.publish(channel, publication("x"), Some(KEEP))
            .await
            .unwrap();
        a.add_presence(channel, client("c1", "u1"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    let mut held = Vec::new();
    for server in &servers {
        let client = ::redis::Client::open(server.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        let keys: Vec<String> = ::redis::cmd("KEYS")
            .arg("tether.*")
            .query_async(&mut conn)
            .await
            .unwrap();
        held.push(keys);
    }
    for channel in &channels {
        let keys = ChannelKeys::new(channel);
        let home = held
            .iter()
            .position(|keys_there| keys_there.contains(&keys.meta))
            .expect("the channel's stream is somewhere");
        for key in [&keys.history, &keys.presence, &keys.presence_expiry] {
            assert!(held[home].contains(key), "{key} is with {}", keys.meta);
        }
        for (other, keys_there) in held.iter().enumerate() {
            if other != home {
                assert!(
                    !keys_there
                        .iter()
                        .any(|key| key.ends_with(&format!("}}{channel}")))
                );
            }
        }
    }
    assert!(
        held.iter().all(|keys| !keys.is_empty()),
        "both instances are used"
    );
}

#[tokio::test]
async fn an_instance_down_fails_only_the_channels_it_holds() {
    let mut servers = [RedisServer::start(), RedisServer::start()];
    let urls = servers.iter().map(RedisServer::url).collect();
    let (a, _) = node_over(RedisServers::Instances(urls)).await;
    let held_by = |instance: usize| {
        (0..)
            .map(|n| format!("c{n}"))
            .find(|channel| jump_bucket(channel_hash(channel), 2) == instance)
            .expect("some channel hashes to each instance")
    };
    let (up, down) = (held_by(0), held_by(1));
    servers[1].stop();
    a.subscribe(&up).await.unwrap();
    let position = a.publish(&up, publication("x"), Some(KEEP)).await.unwrap();
    assert_eq!(position.offset, 1);
    assert!(matches!(
        a.publish(&down, publication("x"), Some(KEEP)).await,
        Err(BrokerError::Unavailable(_))
    ));
    assert!(matches!(
        a.subscribe(&down).await,
        Err(BrokerError::Unavailable(_))
    ));
}

#[test]
fn a_message_that_cannot_be_placed_in_its_stream_interrupts_the_channel() {
    let (subscriptions, _requests) = Subscriptions::new();
    let recorder = Arc::new(Recorder::default());
    subscriptions.set_events(recorder.clone());
    // Only the wanted set matters here; no task applies the request.
    drop(subscriptions.subscribe("c"));
    let shared = subscriptions.shared();
    let name = ChannelKeys::new("c").pubsub;
    let deliver = |message: &str| shared.deliver(name.as_bytes(), message.as_bytes());

    deliver(r#"{"o":3,"e":"E1","k":"p","d":1}"#);
    deliver(r#"{"k":"p","d":2}"#);
    deliver(r#"{"o":4,"k":"p","d":3}"#);
    deliver("not json");
    deliver(r#"{"k":"p","d":4}"#);
    let data = |offset, json: &'static str| Publication {
        offset,
        data: Bytes::from_static(json.as_bytes()),
        info: None,
        tags: Vec::new(),
    };
    assert_eq!(
        recorder.take(),
        [
            Seen::Publication("c".to_owned(), data(3, "1"), "E1".to_owned()),
            Seen::Publication("c".to_owned(), data(0, "2"), String::new()),
            Seen::Interrupted("c".to_owned()),
            Seen::Interrupted("c".to_owned()),
            Seen::Publication("c".to_owned(), data(0, "4"), String::new()),
        ]
    );

    drop(subscriptions.unsubscribe("c"));
    deliver("not json");
    assert!(recorder.take().is_empty(), "not wanted any more");
}

#[tokio::test]
async fn an_idle_subscriber_stays_connected_across_pings() {
    let server = RedisServer::start();
    let (a, _) = node(&server).await;
    let (b, seen_by_b) = node(&server).await;
    b.subscribe("c").await.unwrap();
    // Several pings while subscribed: each must be understood, or the
    // subscriber reconnects (and reports the channel interrupted).
    tokio::time::sleep(subscriber::PING_INTERVAL * 4).await;
    let position = a.publish("c", publication("x"), Some(KEEP)).await.unwrap();
    let mut expected = publication("x");
    expected.offset = position.offset;
    assert_eq!(
        seen_by_b.wait_for(1).await,
        [Seen::Publication("c".to_owned(), expected, position.epoch)]
    );
    settle().await;
    assert!(seen_by_b.take().is_empty());
}
