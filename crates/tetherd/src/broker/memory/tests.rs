//! The memory engine's behaviour, driven through the [`Broker`] trait.

use std::{
    panic::{AssertUnwindSafe, catch_unwind},
    pin::pin,
    sync::{Weak, mpsc},
    task::{Context, Poll, Waker},
    thread,
};

use bytes::Bytes;

use super::*;
use crate::broker::testing::{Recorder, Seen, client, publication};

fn broker() -> (Arc<MemoryBroker>, Arc<Recorder>) {
    let broker = Arc::new(MemoryBroker::new());
    let recorder = Arc::new(Recorder::default());
    broker.set_events(recorder.clone());
    (broker, recorder)
}

fn keep(size: usize, ttl_secs: u64) -> Option<HistoryOptions> {
    Some(HistoryOptions {
        size,
        ttl: Duration::from_secs(ttl_secs),
    })
}

fn since(position: &StreamPosition) -> HistoryQuery {
    HistoryQuery {
        since: Some(position.clone()),
        ..HistoryQuery::default()
    }
}

fn offsets(history: &History) -> Vec<u64> {
    history.publications.iter().map(|p| p.offset).collect()
}

/// Publishes `count` publications to `channel`, returning the last position.
async fn publish_n(broker: &MemoryBroker, channel: &str, count: usize) -> StreamPosition {
    let mut position = None;
    for i in 0..count {
        position = Some(
            broker
                .publish(channel, publication(&i.to_string()), keep(10, 60))
                .await
                .unwrap(),
        );
    }
    position.expect("count > 0")
}

/// Polls a broker future once; the memory broker's complete at once.
fn now_or_never<T>(future: BrokerFuture<'_, T>) -> Result<T, BrokerError> {
    match pin!(future).poll(&mut Context::from_waker(Waker::noop())) {
        Poll::Ready(result) => result,
        Poll::Pending => panic!("memory broker futures complete on their first poll"),
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 4)]
async fn offsets_strictly_increase_under_concurrent_publishers() {
    let (broker, recorder) = broker();
    broker.subscribe("chat").await.unwrap();
    let tasks: Vec<_> = (0..8)
        .map(|task| {
            let broker = broker.clone();
            tokio::spawn(async move {
                let mut offsets = Vec::new();
                for i in 0..200 {
                    let data = format!("{task}-{i}");
                    let position = broker
                        .publish("chat", publication(&data), keep(10_000, 60))
                        .await
                        .unwrap();
                    offsets.push(position.offset);
                    tokio::task::yield_now().await;
                }
                offsets
            })
        })
        .collect();
    let mut all = Vec::new();
    for task in tasks {
        let offsets = task.await.unwrap();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]), "per publisher");
        all.extend(offsets);
    }
    all.sort_unstable();
    assert_eq!(all, (1..=1600).collect::<Vec<u64>>());

    // Delivered to the hub exactly once each, in offset order.
    assert_eq!(recorder.offsets("chat"), (1..=1600).collect::<Vec<u64>>());
    let history = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(offsets(&history), (1..=1600).collect::<Vec<u64>>());
    assert_eq!(history.position.offset, 1600);
}

#[tokio::test]
async fn a_new_broker_has_new_epochs() {
    let (first, _) = broker();
    let (restarted, _) = broker();
    let before = publish_n(&first, "chat", 3).await;
    let after = publish_n(&restarted, "chat", 3).await;
    assert_eq!(before.offset, after.offset);
    assert_ne!(before.epoch, after.epoch);
    assert_eq!(before.epoch.len(), EPOCH_LEN);
    assert!(before.epoch.chars().all(|c| c.is_ascii_alphanumeric()));
    let old = StreamPosition {
        offset: 1,
        epoch: before.epoch,
    };
    assert_eq!(
        restarted.history("chat", since(&old)).await,
        Err(BrokerError::UnrecoverablePosition)
    );
}

#[tokio::test]
async fn remove_history_keeps_the_position() {
    let (broker, _) = broker();
    let old = publish_n(&broker, "chat", 3).await;
    broker.remove_history("chat").await.unwrap();
    let history = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap();
    assert!(history.publications.is_empty());
    assert_eq!(history.position, old, "clients at the top stay recoverable");
    let new = broker
        .publish("chat", publication("x"), keep(10, 60))
        .await
        .unwrap();
    assert_eq!((new.offset, &new.epoch), (4, &old.epoch));
    assert_eq!(
        offsets(&broker.history("chat", since(&old)).await.unwrap()),
        [4]
    );
    let before = StreamPosition {
        offset: 2,
        ..old.clone()
    };
    assert_eq!(
        broker.history("chat", since(&before)).await,
        Err(BrokerError::UnrecoverablePosition),
        "the removed publications cannot be recovered"
    );
}

#[tokio::test(start_paused = true)]
async fn stream_expires_ttl_after_its_last_publication() {
    let (broker, _) = broker();
    let first = broker
        .publish("chat", publication("a"), keep(10, 10))
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    let second = broker
        .publish("chat", publication("b"), keep(10, 10))
        .await
        .unwrap();
    assert_eq!((second.offset, &second.epoch), (2, &first.epoch));

    // 14 s after the first publication, 9 s after the last: still there.
    tokio::time::advance(Duration::from_secs(9)).await;
    let history = broker.history("chat", since(&first)).await.unwrap();
    assert_eq!(offsets(&history), [2]);

    // 11 s after the last: gone, with its position.
    tokio::time::advance(Duration::from_secs(2)).await;
    assert_eq!(
        broker.history("chat", since(&first)).await,
        Err(BrokerError::UnrecoverablePosition)
    );
    let history = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap();
    assert!(history.publications.is_empty());
    assert_eq!(history.position.offset, 0);
    assert_ne!(history.position.epoch, first.epoch);
    let third = broker
        .publish("chat", publication("c"), keep(10, 10))
        .await
        .unwrap();
    assert_eq!(third.offset, 1);
    assert_eq!(third.epoch, history.position.epoch);
}

#[tokio::test]
async fn history_keeps_at_most_size_publications() {
    let (broker, _) = broker();
    for i in 0..5 {
        broker
            .publish("chat", publication(&i.to_string()), keep(3, 60))
            .await
            .unwrap();
    }
    let history = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(offsets(&history), [3, 4, 5]);
    assert_eq!(history.publications[0].data, Bytes::from_static(b"\"2\""));
    assert_eq!(history.position.offset, 5);

    // A smaller size later trims to it.
    broker
        .publish("chat", publication("5"), keep(1, 60))
        .await
        .unwrap();
    let history = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(offsets(&history), [6]);
}

#[tokio::test]
async fn recovery_returns_exactly_the_missed_publications() {
    let (broker, _) = broker();
    let position = publish_n(&broker, "chat", 5).await;
    let at = |offset| StreamPosition {
        offset,
        epoch: position.epoch.clone(),
    };

    let history = broker.history("chat", since(&at(2))).await.unwrap();
    assert_eq!(offsets(&history), [3, 4, 5]);
    assert_eq!(history.position, position);
    assert_eq!(history.publications[0].data, Bytes::from_static(b"\"2\""));

    let history = broker.history("chat", since(&at(5))).await.unwrap();
    assert!(history.publications.is_empty());

    let history = broker.history("chat", since(&at(0))).await.unwrap();
    assert_eq!(offsets(&history), [1, 2, 3, 4, 5]);

    // A limit keeps the first ones; the caller sees the cut.
    let limited = HistoryQuery {
        limit: Some(2),
        ..since(&at(1))
    };
    assert_eq!(
        offsets(&broker.history("chat", limited).await.unwrap()),
        [2, 3]
    );
}

#[tokio::test]
async fn since_with_reverse_pages_backwards() {
    let (broker, _) = broker();
    crate::broker::paging_tests::since_with_reverse_pages_backwards(&*broker).await;
}

#[tokio::test(start_paused = true)]
async fn recovery_fails_from_a_lost_position() {
    let (broker, _) = broker();
    for i in 0..5 {
        broker
            .publish("chat", publication(&i.to_string()), keep(3, 10))
            .await
            .unwrap();
    }
    let position = broker
        .history("chat", HistoryQuery::default())
        .await
        .unwrap()
        .position;
    let at = |offset, epoch: &str| StreamPosition {
        offset,
        epoch: epoch.to_owned(),
    };
    let epoch = position.epoch.as_str();

    // Kept: 3, 4, 5. From 2 all missed ones are there; from 1, 2 is gone.
    let history = broker.history("chat", since(&at(2, epoch))).await.unwrap();
    assert_eq!(offsets(&history), [3, 4, 5]);
    for lost in [
        at(1, epoch),
        at(0, epoch),
        at(6, epoch),
        at(3, "other"),
        at(3, ""),
    ] {
        assert_eq!(
            broker.history("chat", since(&lost)).await,
            Err(BrokerError::UnrecoverablePosition),
            "{lost:?}"
        );
    }

    tokio::time::advance(Duration::from_secs(10)).await;
    assert_eq!(
        broker.history("chat", since(&at(5, epoch))).await,
        Err(BrokerError::UnrecoverablePosition)
    );
}

#[tokio::test(start_paused = true)]
async fn an_empty_channel_gives_a_position_to_recover_from() {
    let (broker, _) = broker();
    let empty = broker
        .history("news", HistoryQuery::default())
        .await
        .unwrap();
    assert!(empty.publications.is_empty());
    assert_eq!(empty.position.offset, 0);
    assert_eq!(empty.position.epoch.len(), EPOCH_LEN);

    let again = broker
        .history("news", HistoryQuery::default())
        .await
        .unwrap();
    assert_eq!(again.position, empty.position);

    let last = publish_n(&broker, "news", 3).await;
    assert_eq!(last.epoch, empty.position.epoch);
    let history = broker
        .history("news", since(&empty.position))
        .await
        .unwrap();
    assert_eq!(offsets(&history), [1, 2, 3]);

    // Without publications the position lasts while it is being read.
    let idle = broker
        .history("idle", HistoryQuery::default())
        .await
        .unwrap()
        .position;
    let ttl = MemoryBroker::DEFAULT_EMPTY_STREAM_TTL;
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    assert!(broker.history("idle", since(&idle)).await.is_ok());
    tokio::time::advance(ttl - Duration::from_secs(1)).await;
    assert!(broker.history("idle", since(&idle)).await.is_ok());
    tokio::time::advance(ttl).await;
    assert_eq!(
        broker.history("idle", since(&idle)).await,
        Err(BrokerError::UnrecoverablePosition)
    );
}

#[tokio::test]
async fn history_without_since_starts_at_the_oldest_or_with_reverse_the_latest() {
    let (broker, _) = broker();
    let position = publish_n(&broker, "chat", 5).await;
    let query = |limit, reverse| HistoryQuery {
        since: None,
        limit,
        reverse,
    };
    let read = async |q| offsets(&broker.history("chat", q).await.unwrap());
    assert_eq!(read(query(None, false)).await, [1, 2, 3, 4, 5]);
    assert_eq!(read(query(None, true)).await, [5, 4, 3, 2, 1]);
    // As Centrifugo: a limit without `since` keeps the oldest ones.
    assert_eq!(read(query(Some(2), false)).await, [1, 2]);
    assert_eq!(read(query(Some(2), true)).await, [5, 4]);
    assert_eq!(read(query(Some(9), false)).await, [1, 2, 3, 4, 5]);
    let only_position = broker.history("chat", query(Some(0), false)).await.unwrap();
    assert!(only_position.publications.is_empty());
    assert_eq!(only_position.position, position);
}

#[tokio::test]
async fn fan_out_reaches_only_subscribed_channels() {
    let (broker, recorder) = broker();
    broker
        .publish("chat", publication("before"), keep(10, 60))
        .await
        .unwrap();
    assert!(recorder.take().is_empty());

    broker.subscribe("chat").await.unwrap();
    broker.subscribe("chat").await.unwrap();
    let position = broker
        .publish("chat", publication("a"), keep(10, 60))
        .await
        .unwrap();
    broker
        .publish("other", publication("b"), keep(10, 60))
        .await
        .unwrap();
    let mut expected = publication("a");
    expected.offset = 2;
    assert_eq!(
        recorder.take(),
        [Seen::Publication("chat".into(), expected, position.epoch)]
    );

    // Without history: offset 0, empty epoch, still fanned out.
    let position = broker
        .publish("chat", publication("c"), None)
        .await
        .unwrap();
    assert_eq!(
        position,
        StreamPosition {
            offset: 0,
            epoch: String::new()
        }
    );
    assert_eq!(
        recorder.take(),
        [Seen::Publication(
            "chat".into(),
            publication("c"),
            String::new()
        )]
    );

    broker.unsubscribe("chat").await.unwrap();
    broker
        .publish("chat", publication("d"), keep(10, 60))
        .await
        .unwrap();
    assert_eq!(recorder.offsets("chat"), [3]);

    broker.unsubscribe("chat").await.unwrap();
    broker
        .publish("chat", publication("e"), keep(10, 60))
        .await
        .unwrap();
    broker
        .publish("chat", publication("f"), None)
        .await
        .unwrap();
    assert!(recorder.take().is_empty());

    // One unsubscribe too many does not go negative.
    broker.unsubscribe("chat").await.unwrap();
    broker.subscribe("chat").await.unwrap();
    broker
        .publish("chat", publication("g"), keep(10, 60))
        .await
        .unwrap();
    assert_eq!(recorder.offsets("chat"), [5]);
}

#[tokio::test]
async fn join_and_leave_reach_subscribed_channels() {
    let (broker, recorder) = broker();
    let alice = client("c1", "alice");
    broker.publish_join("chat", alice.clone()).await.unwrap();
    assert!(recorder.take().is_empty());

    broker.subscribe("chat").await.unwrap();
    broker.publish_join("chat", alice.clone()).await.unwrap();
    broker.publish_join("other", alice.clone()).await.unwrap();
    broker.publish_leave("chat", alice.clone()).await.unwrap();
    assert_eq!(
        recorder.take(),
        [
            Seen::Join("chat".into(), alice.clone()),
            Seen::Leave("chat".into(), alice.clone())
        ]
    );

    broker.unsubscribe("chat").await.unwrap();
    broker.publish_leave("chat", alice).await.unwrap();
    assert!(recorder.take().is_empty());
    assert_eq!(broker.channel_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn presence_adds_refreshes_expires_and_counts_users() {
    let (broker, _) = broker();
    let ttl = Duration::from_secs(10);
    broker
        .add_presence("chat", client("c1", "alice"), ttl)
        .await
        .unwrap();
    broker
        .add_presence("chat", client("c2", "alice"), ttl)
        .await
        .unwrap();
    broker
        .add_presence("chat", client("c3", "bob"), ttl)
        .await
        .unwrap();
    broker
        .add_presence("other", client("c4", "carol"), ttl)
        .await
        .unwrap();
    assert_eq!(
        broker.presence_stats("chat").await.unwrap(),
        PresenceStats {
            clients: 3,
            users: 2
        }
    );
    let ids = |clients: Vec<ClientInfo>| clients.into_iter().map(|c| c.client).collect::<Vec<_>>();
    assert_eq!(
        ids(broker.presence("chat").await.unwrap()),
        ["c1", "c2", "c3"]
    );

    // Refreshing replaces the info and extends the TTL.
    tokio::time::advance(Duration::from_secs(6)).await;
    let mut refreshed = client("c1", "alice");
    refreshed.conn_info = Some(Bytes::from_static(b"{\"x\":1}"));
    broker
        .add_presence("chat", refreshed.clone(), ttl)
        .await
        .unwrap();
    tokio::time::advance(Duration::from_secs(5)).await;
    assert_eq!(broker.presence("chat").await.unwrap(), [refreshed]);
    assert_eq!(
        broker.presence_stats("chat").await.unwrap(),
        PresenceStats {
            clients: 1,
            users: 1
        }
    );

    broker.remove_presence("chat", "c1").await.unwrap();
    broker.remove_presence("chat", "missing").await.unwrap();
    assert!(broker.presence("chat").await.unwrap().is_empty());
    assert_eq!(
        broker.presence_stats("nowhere").await.unwrap(),
        PresenceStats::default()
    );
    // "other" expired too; reading it drops it, and nothing is left.
    assert_eq!(broker.channel_count(), 1);
    assert!(broker.presence("other").await.unwrap().is_empty());
    assert_eq!(broker.channel_count(), 0);
}

#[tokio::test(start_paused = true)]
async fn expired_channels_are_swept() {
    let (broker, _) = broker();
    let channels = 4 * SWEEP_MIN_OPS;
    for i in 0..channels {
        let channel = format!("ch{i}");
        broker
            .publish(&channel, publication("x"), keep(10, 1))
            .await
            .unwrap();
        broker
            .add_presence(&channel, client("c", "u"), Duration::from_secs(1))
            .await
            .unwrap();
    }
    assert_eq!(broker.channel_count(), channels);
    tokio::time::advance(Duration::from_secs(2)).await;
    // Operations on one live channel only; the idle ones go anyway.
    for _ in 0..2 * SHARDS * SWEEP_MIN_OPS {
        broker
            .add_presence("live", client("c", "u"), Duration::from_secs(60))
            .await
            .unwrap();
    }
    assert_eq!(broker.channel_count(), 1);
}

/// Calls back into the broker from every event.
struct Reentrant {
    broker: OnceLock<Weak<MemoryBroker>>,
    seen: Recorder,
}

impl BrokerEvents for Reentrant {
    fn control(&self, _: Bytes) {}
    fn publication(&self, channel: &str, publication: Publication, epoch: &str) {
        let broker = self
            .broker
            .get()
            .and_then(Weak::upgrade)
            .expect("set before publishing");
        if channel != "chat" {
            self.seen.publication(channel, publication, epoch);
            return;
        }
        if publication.offset < 3 {
            // Same channel: queued, delivered after this one returns.
            now_or_never(broker.publish("chat", publication.clone(), keep(10, 60))).unwrap();
            now_or_never(broker.publish_join("chat", client("c1", "alice"))).unwrap();
        }
        now_or_never(broker.history(channel, HistoryQuery::default())).unwrap();
        now_or_never(broker.add_presence(channel, client("c1", "alice"), Duration::from_secs(5)))
            .unwrap();
        now_or_never(broker.presence(channel)).unwrap();
        now_or_never(broker.publish("elsewhere", publication.clone(), keep(10, 60))).unwrap();
        now_or_never(broker.unsubscribe("elsewhere")).unwrap();
        now_or_never(broker.subscribe("elsewhere")).unwrap();
        self.seen.publication(channel, publication, epoch);
    }
    fn interrupted(&self, channel: &str) {
        self.seen.interrupted(channel);
    }
    fn join(&self, channel: &str, info: ClientInfo) {
        let broker = self
            .broker
            .get()
            .and_then(Weak::upgrade)
            .expect("set before publishing");
        now_or_never(broker.publish_leave(channel, info.clone())).unwrap();
        self.seen.join(channel, info);
    }
    fn leave(&self, channel: &str, info: ClientInfo) {
        self.seen.leave(channel, info);
    }
}

#[test]
fn events_may_call_back_into_the_broker() {
    let (done, finished) = mpsc::channel();
    thread::spawn(move || {
        let broker = Arc::new(MemoryBroker::new());
        let events = Arc::new(Reentrant {
            broker: OnceLock::new(),
            seen: Recorder::default(),
        });
        let _ = events.broker.set(Arc::downgrade(&broker));
        broker.set_events(events.clone());
        now_or_never(broker.subscribe("chat")).unwrap();
        now_or_never(broker.subscribe("elsewhere")).unwrap();
        now_or_never(broker.publish("chat", publication("a"), keep(10, 60))).unwrap();
        let _ = done.send(events.seen.take());
    });
    let seen = finished
        .recv_timeout(Duration::from_secs(10))
        .expect("an events callback calling back into the broker deadlocked");
    let chat: Vec<_> = seen
        .iter()
        .filter(|s| !matches!(s, Seen::Publication(c, ..) if c == "elsewhere"))
        .map(|s| match s {
            Seen::Publication(_, p, _) => format!("pub {}", p.offset),
            Seen::Interrupted(..) => "interrupted".to_owned(),
            Seen::Join(..) => "join".to_owned(),
            Seen::Leave(..) => "leave".to_owned(),
            Seen::Control(..) => "control".to_owned(),
        })
        .collect();
    assert_eq!(
        chat,
        ["pub 1", "pub 2", "join", "pub 3", "join", "leave", "leave"]
    );
    let elsewhere = seen
        .iter()
        .filter(|s| matches!(s, Seen::Publication(c, ..) if c == "elsewhere"))
        .count();
    assert_eq!(elsewhere, 3);
}

/// Panics on its first publication.
#[derive(Default)]
struct PanicsOnce {
    panicked: Mutex<bool>,
    seen: Recorder,
}

impl BrokerEvents for PanicsOnce {
    fn control(&self, _: Bytes) {}
    fn publication(&self, channel: &str, publication: Publication, epoch: &str) {
        let first = !std::mem::replace(&mut *self.panicked.lock().unwrap(), true);
        assert!(!first, "events callback fails");
        self.seen.publication(channel, publication, epoch);
    }
    fn interrupted(&self, channel: &str) {
        self.seen.interrupted(channel);
    }
    fn join(&self, _: &str, _: ClientInfo) {}
    fn leave(&self, _: &str, _: ClientInfo) {}
}

#[test]
fn a_panicking_callback_does_not_stop_later_deliveries() {
    let broker = MemoryBroker::new();
    let events = Arc::new(PanicsOnce::default());
    broker.set_events(events.clone());
    now_or_never(broker.subscribe("chat")).unwrap();
    let publish = || now_or_never(broker.publish("chat", publication("a"), keep(10, 60)));
    assert!(catch_unwind(AssertUnwindSafe(publish)).is_err());
    assert_eq!(publish().unwrap().offset, 2);
    assert_eq!(events.seen.offsets("chat"), [2]);
}

#[tokio::test]
async fn the_registry_of_one_node_is_its_latest_announcement() {
    let broker = MemoryBroker::new();
    assert_eq!(broker.nodes().await, Ok(Vec::new()));
    let mut node = NodeInfo {
        uid: "n1".to_owned(),
        name: "n1".to_owned(),
        address: "127.0.0.1:8000".to_owned(),
        version: "1".to_owned(),
        num_clients: 1,
        num_users: 1,
        num_subs: 0,
        num_channels: 0,
        uptime: 0,
    };
    broker
        .announce(&node, Duration::from_secs(1))
        .await
        .unwrap();
    node.num_clients = 2;
    broker
        .announce(&node, Duration::from_secs(1))
        .await
        .unwrap();
    assert_eq!(broker.nodes().await, Ok(vec![node]));
    broker.withdraw("other").await.unwrap();
    assert_eq!(broker.nodes().await.map(|nodes| nodes.len()), Ok(1));
    broker.withdraw("n1").await.unwrap();
    assert_eq!(broker.nodes().await, Ok(Vec::new()));
}
