//! What the engines' tests share: a recorder of broker events and small
//! builders of publications and client infos.

use std::{
    sync::Mutex,
    time::{Duration, Instant},
};

use bytes::Bytes;

use super::{BrokerEvents, ClientInfo, Publication};

/// What a [`Recorder`] saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) enum Seen {
    /// Channel, publication, epoch.
    Publication(String, Publication, String),
    Interrupted(String),
    Join(String, ClientInfo),
    Leave(String, ClientInfo),
    Control(Bytes),
}

/// Records every event.
#[derive(Default)]
pub(crate) struct Recorder(Mutex<Vec<Seen>>);

impl Recorder {
    /// Everything seen so far, kept.
    pub(crate) fn seen(&self) -> Vec<Seen> {
        self.0.lock().expect("no test panics holding it").clone()
    }

    /// Everything seen so far, taken.
    pub(crate) fn take(&self) -> Vec<Seen> {
        std::mem::take(&mut self.0.lock().expect("no test panics holding it"))
    }

    /// The offsets of the publications taken for `channel`.
    pub(crate) fn offsets(&self, channel: &str) -> Vec<u64> {
        self.take()
            .into_iter()
            .filter_map(|seen| match seen {
                Seen::Publication(c, p, _) if c == channel => Some(p.offset),
                _ => None,
            })
            .collect()
    }

    /// Waits until at least `count` events arrived, then takes them.
    pub(crate) async fn wait_for(&self, count: usize) -> Vec<Seen> {
        let deadline = Instant::now() + Duration::from_secs(5);
        while self.seen().len() < count {
            assert!(
                Instant::now() < deadline,
                "only {:?} arrived, expected {count}",
                self.seen()
            );
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        self.take()
    }

    fn push(&self, seen: Seen) {
        self.0.lock().expect("no test panics holding it").push(seen);
    }
}

impl BrokerEvents for Recorder {
    fn publication(&self, channel: &str, publication: Publication, epoch: &str) {
        self.push(Seen::Publication(
            channel.to_owned(),
            publication,
            epoch.to_owned(),
        ));
    }
    fn interrupted(&self, channel: &str) {
        self.push(Seen::Interrupted(channel.to_owned()));
    }
    fn join(&self, channel: &str, info: ClientInfo) {
        self.push(Seen::Join(channel.to_owned(), info));
    }
    fn leave(&self, channel: &str, info: ClientInfo) {
        self.push(Seen::Leave(channel.to_owned(), info));
    }
    fn control(&self, message: Bytes) {
        self.push(Seen::Control(message));
    }
}

/// A publication of the JSON string `data`, not yet in a stream.
pub(crate) fn publication(data: &str) -> Publication {
    Publication {
        offset: 0,
        data: Bytes::from(format!("\"{data}\"")),
        info: None,
        tags: Vec::new(),
    }
}

/// A client with connection info.
pub(crate) fn client(id: &str, user: &str) -> ClientInfo {
    ClientInfo {
        client: id.to_owned(),
        user: user.to_owned(),
        conn_info: Some(Bytes::from_static(br#"{"name":"Ann"}"#)),
        chan_info: None,
    }
}
