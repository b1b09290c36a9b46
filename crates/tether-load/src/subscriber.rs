//! The subscribers of `tether-load broadcast`, run in worker processes (see
//! [`crate::workers`]) with the hidden `broadcast-worker` subcommand.
//!
//! Each connection connects, subscribes to the broadcast channel and its
//! extra channels, answers pings, and checks every publication on the
//! broadcast channel: its sequence number (lost, repeated, reordered) and
//! its delivery latency (`CLOCK_MONOTONIC` now minus the stamp the publisher
//! put in it), and for each publication the latest arrival at any of the
//! worker's subscribers (the parent takes the latest over all workers: the
//! time until the last subscriber had it). The worker's first line reports
//! the subscriptions; a line on its stdin then brings the number of
//! publications sent, and each
//! connection waits (up to `--drain`) for all of them. The second line
//! reports what arrived. Connections stay open until the parent closes the
//! worker's stdin, so that no close overlaps a delivery still under way in
//! another worker (the parent reads the server's CPU time in between); the
//! third line reports the closes.

use std::{
    collections::HashMap,
    sync::{Arc, Mutex, PoisonError},
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tether::{ClientConfig, Keepalive, Message, WebSocket};
use tether_load_os as os;
use tokio::{
    net::TcpStream,
    sync::{mpsc, watch},
    task::JoinSet,
    time::{sleep_until, timeout},
};

use crate::{
    gateway::{self, Event, SeqTracker},
    held,
    report::{ErrorCounts, histogram_to_json, latency_histogram, merge_histogram_json},
    sources::Dialer,
    target::Target,
    workers::{self, merge_counts},
};

/// How long connecting and subscribing may take per connection.
const SUBSCRIBE_TIMEOUT: Duration = Duration::from_secs(30);

/// Latency samples a connection collects before adding them to the shared
/// histogram.
const SAMPLE_BATCH: usize = 256;

/// Options of the hidden `broadcast-worker` subcommand: the subscribers of
/// one process.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(long, value_parser = Target::parse)]
    pub(crate) url: Target,
    #[command(flatten)]
    pub(crate) shard: workers::Shard,
    /// The channel publications arrive on.
    #[arg(long)]
    pub(crate) channel: String,
    /// Subscriptions per connection, the broadcast channel included.
    #[arg(long)]
    pub(crate) channels: usize,
    /// Seconds to wait for missing publications once the count is known.
    #[arg(long, value_parser = crate::parse_seconds)]
    pub(crate) drain: Duration,
}

impl WorkerArgs {
    /// The command line that runs these subscribers in a worker process.
    pub(crate) fn command_line(&self) -> Vec<String> {
        let mut args = vec!["broadcast-worker".to_owned()];
        args.extend(self.shard.flags(&self.url));
        args.extend([
            format!("--channel={}", self.channel),
            format!("--channels={}", self.channels),
            format!("--drain={}", self.drain.as_secs_f64()),
        ]);
        args
    }
}

/// The channels connection `index` subscribes to: the broadcast channel,
/// then `channels - 1` more in its namespace, shared by every hundredth
/// connection (so the server holds both many subscribers per channel and
/// many channels).
pub(crate) fn channels_of(channel: &str, channels: usize, index: usize) -> Vec<String> {
    let namespace = channel
        .split_once(':')
        .map_or("", |(namespace, _)| namespace);
    let prefix = if namespace.is_empty() {
        String::new()
    } else {
        format!("{namespace}:")
    };
    std::iter::once(channel.to_owned())
        .chain((1..channels).map(|extra| format!("{prefix}c{extra}-{}", index % 100)))
        .collect()
}

/// Runs one worker: see the module docs.
pub(crate) fn worker(args: WorkerArgs) -> Result<(), String> {
    let runtime = workers::runtime()?;
    let (ready, running) = runtime.block_on(subscribe_all(&args))?;
    workers::tell_parent(&ready.to_json());
    let input = workers::line_from_parent().unwrap_or_default();
    let published = input
        .trim()
        .parse::<u64>()
        .map_err(|_| format!("the parent sent {input:?}, not a number of publications"))?;
    let (received, open) = runtime.block_on(running.receive(published, args.drain));
    workers::tell_parent(&received.to_json(published));
    workers::wait_for_parent();
    let closed = runtime.block_on(open.close());
    workers::tell_parent(&closed.to_json(published));
    Ok(())
}

async fn subscribe_all(args: &WorkerArgs) -> Result<(Ready, Running), String> {
    let mut config = ClientConfig::default();
    config.connection.keepalive = Keepalive::OFF;
    let dialer = Dialer::new(
        args.url.clone(),
        config,
        args.shard.first_source,
        args.shard.per_source,
        args.shard.concurrency,
    );
    dialer.check_capacity(args.shard.conns)?;
    let dialer = Arc::new(dialer);
    let latencies = Arc::new(Mutex::new(Latencies::default()));
    let (published_tx, published_rx) = watch::channel(None);
    let (ready_tx, mut ready_rx) = mpsc::unbounded_channel();
    let (receipts_tx, receipts) = mpsc::unbounded_channel();
    let (close_tx, close_rx) = watch::channel(false);
    let mut tasks = JoinSet::new();
    for index in 0..args.shard.conns {
        let subscriber = Subscriber {
            index,
            channels: channels_of(&args.channel, args.channels, index),
            latencies: latencies.clone(),
        };
        let signals = Signals {
            ready: ready_tx.clone(),
            published: published_rx.clone(),
            receipts: receipts_tx.clone(),
            close: close_rx.clone(),
        };
        tasks.spawn(subscriber.run(dialer.clone(), signals));
    }
    drop((ready_tx, receipts_tx));
    let mut ready = Ready::default();
    while let Some(result) = ready_rx.recv().await {
        match result {
            Ok(subscribed) => {
                ready.subscribed += 1;
                ready.handshake.saturating_record(subscribed.handshake);
                ready.subscribe.saturating_record(subscribed.subscribe);
            }
            Err(error) => *ready.errors.entry(error).or_default() += 1,
        }
    }
    Ok((
        ready,
        Running {
            published: published_tx,
            receipts,
            latencies,
            open: Open {
                close: close_tx,
                tasks,
            },
        },
    ))
}

/// What subscribing did, in one process or all of them.
#[derive(Debug)]
pub(crate) struct Ready {
    pub(crate) subscribed: u64,
    /// Why connections failed to connect or subscribe.
    pub(crate) errors: ErrorCounts,
    /// TCP connect plus upgrade, in nanoseconds.
    pub(crate) handshake: Histogram<u64>,
    /// `connect` plus every `subscribe` command until the last reply.
    pub(crate) subscribe: Histogram<u64>,
}

impl Default for Ready {
    fn default() -> Self {
        Self {
            subscribed: 0,
            errors: ErrorCounts::new(),
            handshake: latency_histogram(),
            subscribe: latency_histogram(),
        }
    }
}

impl Ready {
    fn to_json(&self) -> Value {
        json!({
            "subscribed": self.subscribed,
            "errors": self.errors,
            "handshake_ns": histogram_to_json(&self.handshake),
            "subscribe_ns": histogram_to_json(&self.subscribe),
        })
    }

    pub(crate) fn merge_json(&mut self, line: &Value) {
        self.subscribed += line["subscribed"].as_u64().unwrap_or(0);
        merge_counts(&mut self.errors, &line["errors"]);
        merge_histogram_json(&mut self.handshake, &line["handshake_ns"]);
        merge_histogram_json(&mut self.subscribe, &line["subscribe_ns"]);
    }
}

/// Subscribers receiving, each in its own task.
struct Running {
    /// How many publications were sent, once the publisher is done, and
    /// until when to wait for them.
    published: watch::Sender<Option<Expected>>,
    /// What each subscriber received; ends once every task has sent its
    /// receipt or ended without one.
    receipts: mpsc::UnboundedReceiver<Receipt>,
    latencies: Arc<Mutex<Latencies>>,
    open: Open,
}

impl Running {
    /// Tells every subscriber how many publications to expect and waits for
    /// them to receive those (or `drain` to pass); their connections stay
    /// open.
    async fn receive(mut self, published: u64, drain: Duration) -> (Received, Open) {
        let _ = self.published.send(Some(Expected {
            published,
            until: tokio::time::Instant::now() + drain,
        }));
        let mut received = Received::default();
        while let Some(receipt) = self.receipts.recv().await {
            received.add(receipt, published);
        }
        received.latencies = std::mem::take(
            &mut *self
                .latencies
                .lock()
                .unwrap_or_else(PoisonError::into_inner),
        );
        (received, self.open)
    }
}

/// Subscribers done receiving, waiting to close.
struct Open {
    close: watch::Sender<bool>,
    /// Each ends with its close: `None` if the connection was already gone.
    tasks: JoinSet<Option<Result<(), String>>>,
}

impl Open {
    /// Closes every connection; only the close fields of the result are set.
    async fn close(mut self) -> Received {
        let _ = self.close.send(true);
        let mut closed = Received::default();
        while let Some(joined) = self.tasks.join_next().await {
            match joined {
                Ok(Some(Ok(()))) => closed.closed_clean += 1,
                Ok(Some(Err(error))) => *closed.close_errors.entry(error).or_default() += 1,
                Ok(None) => {}
                Err(error) => {
                    *closed
                        .close_errors
                        .entry(format!("task failed: {error}"))
                        .or_default() += 1
                }
            }
        }
        closed
    }
}

/// What the subscribers received, in one process or all of them.
#[derive(Debug, Default)]
pub(crate) struct Received {
    /// Publications received on the broadcast channel, repeats included.
    pub(crate) deliveries: u64,
    pub(crate) lost: u64,
    pub(crate) duplicated: u64,
    pub(crate) reordered: u64,
    /// Sequence numbers that were never published.
    pub(crate) unexpected: u64,
    pub(crate) latencies: Latencies,
    /// `CLOCK_MONOTONIC` of the last delivery, in nanoseconds.
    pub(crate) last_delivery_ns: u64,
    /// Connections the server closed, or that failed, while subscribed.
    pub(crate) dropped: ErrorCounts,
    pub(crate) closed_clean: u64,
    pub(crate) close_errors: ErrorCounts,
}

impl Received {
    fn add(&mut self, receipt: Receipt, published: u64) {
        let Receipt {
            seqs,
            last_delivery_ns,
            dropped,
        } = receipt;
        self.deliveries += seqs.received;
        self.lost += seqs.lost(published);
        self.duplicated += seqs.duplicated;
        self.reordered += seqs.reordered;
        self.unexpected += seqs.unexpected(published);
        self.last_delivery_ns = self.last_delivery_ns.max(last_delivery_ns);
        if let Some(error) = dropped {
            *self.dropped.entry(error).or_default() += 1;
        }
    }

    fn to_json(&self, published: u64) -> Value {
        json!({
            "published": published,
            "deliveries": self.deliveries,
            "lost": self.lost,
            "duplicated": self.duplicated,
            "reordered": self.reordered,
            "unexpected": self.unexpected,
            "latency_ns": histogram_to_json(&self.latencies.all),
            "last_arrival_ns": self.latencies.last.iter().map(|(&seq, &ns)| [seq, ns]).collect::<Vec<_>>(),
            "last_delivery_ns": self.last_delivery_ns,
            "dropped": self.dropped,
            "closed_clean": self.closed_clean,
            "close_errors": self.close_errors,
        })
    }

    pub(crate) fn merge_json(&mut self, line: &Value) {
        let count = |key: &str| line[key].as_u64().unwrap_or(0);
        self.deliveries += count("deliveries");
        self.lost += count("lost");
        self.duplicated += count("duplicated");
        self.reordered += count("reordered");
        self.unexpected += count("unexpected");
        self.closed_clean += count("closed_clean");
        self.last_delivery_ns = self.last_delivery_ns.max(count("last_delivery_ns"));
        merge_histogram_json(&mut self.latencies.all, &line["latency_ns"]);
        let pairs = line["last_arrival_ns"].as_array().into_iter().flatten();
        for (seq, latency) in pairs.filter_map(|pair| Some((pair[0].as_u64()?, pair[1].as_u64()?)))
        {
            self.latencies.note_last(seq, latency);
        }
        merge_counts(&mut self.dropped, &line["dropped"]);
        merge_counts(&mut self.close_errors, &line["close_errors"]);
    }
}

/// Publisher's stamp to receipt, in nanoseconds: shared by the subscribers
/// of one worker, then merged over all workers.
#[derive(Debug)]
pub(crate) struct Latencies {
    /// Every delivery's.
    pub(crate) all: Histogram<u64>,
    /// Each publication's latest (its last subscriber's), by sequence
    /// number.
    pub(crate) last: HashMap<u64, u64>,
}

impl Latencies {
    /// Publication `seq` reached a subscriber `latency` nanoseconds after
    /// it was sent.
    fn record(&mut self, seq: u64, latency: u64) {
        self.all.saturating_record(latency);
        self.note_last(seq, latency);
    }

    /// Keeps `latency` as publication `seq`'s latest, unless a later
    /// arrival is known.
    fn note_last(&mut self, seq: u64, latency: u64) {
        let last = self.last.entry(seq).or_default();
        *last = (*last).max(latency);
    }
}

impl Default for Latencies {
    fn default() -> Self {
        Self {
            all: latency_histogram(),
            last: HashMap::new(),
        }
    }
}

/// What the subscribers wait for once the publisher is done.
#[derive(Debug, Clone, Copy)]
struct Expected {
    /// Publications sent: sequence numbers `0..published`.
    published: u64,
    /// When to stop waiting for missing ones.
    until: tokio::time::Instant,
}

/// Handshake and subscribe latency of one connection, in nanoseconds.
struct Subscribed {
    handshake: u64,
    subscribe: u64,
}

/// What one subscribed connection received.
struct Receipt {
    seqs: SeqTracker,
    last_delivery_ns: u64,
    /// Why the connection ended before everything arrived.
    dropped: Option<String>,
}

/// How a subscriber task hears from its worker and answers.
struct Signals {
    ready: mpsc::UnboundedSender<Result<Subscribed, String>>,
    published: watch::Receiver<Option<Expected>>,
    receipts: mpsc::UnboundedSender<Receipt>,
    /// Turns true when the connection may close.
    close: watch::Receiver<bool>,
}

/// One subscriber connection.
struct Subscriber {
    index: usize,
    channels: Vec<String>,
    latencies: Arc<Mutex<Latencies>>,
}

impl Subscriber {
    /// Subscribes, receives, and closes when told; returns how the close
    /// went (`None` if the connection never subscribed or was dropped).
    async fn run(self, dialer: Arc<Dialer>, signals: Signals) -> Option<Result<(), String>> {
        let Signals {
            ready,
            published,
            receipts,
            mut close,
        } = signals;
        let mut ws = match dialer.dial(self.index).await {
            Ok(mut dialed) => {
                let start = Instant::now();
                match timeout(SUBSCRIBE_TIMEOUT, self.subscribe(&mut dialed.ws)).await {
                    Ok(Ok(())) => {
                        let _ = ready.send(Ok(Subscribed {
                            handshake: dialed.latency.as_nanos() as u64,
                            subscribe: start.elapsed().as_nanos() as u64,
                        }));
                        dialed.ws
                    }
                    Ok(Err(error)) => {
                        let _ = ready.send(Err(error));
                        return None;
                    }
                    Err(_) => {
                        let _ = ready.send(Err("subscribing timed out".into()));
                        return None;
                    }
                }
            }
            Err(error) => {
                let _ = ready.send(Err(error.to_string()));
                return None;
            }
        };
        drop(ready);
        let mut receiving = Receiving {
            channel: &self.channels[0],
            latencies: &self.latencies,
            seqs: SeqTracker::default(),
            samples: Vec::new(),
            last_delivery_ns: 0,
        };
        let dropped = receiving.until_done(&mut ws, published).await.err();
        receiving.flush_samples();
        let was_dropped = dropped.is_some();
        let _ = receipts.send(Receipt {
            seqs: receiving.seqs,
            last_delivery_ns: receiving.last_delivery_ns,
            dropped,
        });
        drop(receipts);
        if was_dropped {
            held::wind_down(&mut ws).await;
            return None;
        }
        // A closed sender (the worker is gone) closes too.
        let _ = close.wait_for(|&close| close).await;
        // Pongs are not counted here: the subscribers send no pings.
        Some(held::close(&mut ws, &mut 0).await)
    }

    /// Sends `connect` and the `subscribe`s, and waits for every reply.
    async fn subscribe(&self, ws: &mut WebSocket<TcpStream>) -> Result<(), String> {
        ws.send(Message::text(gateway::connect_and_subscribe(
            &self.channels,
        )))
        .await
        .map_err(|error| error.to_string())?;
        let mut waiting = self.channels.len() + 1;
        while waiting > 0 {
            let Message::Text(text) = held::message(ws.recv().await)? else {
                continue;
            };
            for event in gateway::events(&text) {
                match event? {
                    Event::Reply {
                        error: Some(error),
                        id,
                    } => {
                        let command = if id == 1 { "connect" } else { "subscribe" };
                        return Err(format!("{command} refused: {error}"));
                    }
                    Event::Reply { error: None, .. } => waiting -= 1,
                    Event::Ping => ws
                        .send(Message::text(gateway::PONG))
                        .await
                        .map_err(|error| error.to_string())?,
                    Event::Publication { .. } | Event::Other => {}
                }
            }
        }
        Ok(())
    }
}

/// A subscriber's state while publications arrive.
struct Receiving<'a> {
    channel: &'a str,
    latencies: &'a Mutex<Latencies>,
    seqs: SeqTracker,
    /// Sequence number and latency of deliveries not yet in `latencies`.
    samples: Vec<(u64, u64)>,
    last_delivery_ns: u64,
}

impl Receiving<'_> {
    /// Receives until every publication arrived once the count is known,
    /// or the drain time after that passed; an error if the connection
    /// ends first.
    async fn until_done(
        &mut self,
        ws: &mut WebSocket<TcpStream>,
        mut published: watch::Receiver<Option<Expected>>,
    ) -> Result<(), String> {
        let mut expected: Option<Expected> = None;
        loop {
            if expected.is_some_and(|expected| self.seqs.has_all(expected.published)) {
                return Ok(());
            }
            let until = expected.map_or_else(tokio::time::Instant::now, |e| e.until);
            let received = tokio::select! {
                changed = published.wait_for(Option::is_some), if expected.is_none() => {
                    match changed {
                        Ok(value) => expected = *value,
                        Err(_) => return Ok(()),
                    }
                    continue;
                }
                () = sleep_until(until), if expected.is_some() => return Ok(()),
                received = ws.recv() => received,
            };
            let Message::Text(text) = held::message(received)? else {
                continue;
            };
            let now = os::monotonic_ns();
            for event in gateway::events(&text) {
                match event? {
                    Event::Publication { channel, stamp } if channel == self.channel => {
                        self.seqs.record(stamp.seq);
                        self.last_delivery_ns = now;
                        self.samples.push((stamp.seq, now.saturating_sub(stamp.t)));
                        if self.samples.len() == SAMPLE_BATCH {
                            self.flush_samples();
                        }
                    }
                    Event::Ping => ws
                        .send(Message::text(gateway::PONG))
                        .await
                        .map_err(|error| error.to_string())?,
                    Event::Publication { .. } | Event::Reply { .. } | Event::Other => {}
                }
            }
        }
    }

    fn flush_samples(&mut self) {
        let mut latencies = self
            .latencies
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        for &(seq, latency) in &self.samples {
            latencies.record(seq, latency);
        }
        drop(latencies);
        self.samples.clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn extra_channels_share_the_namespace() {
        assert_eq!(channels_of("bench:all", 1, 5), ["bench:all"]);
        assert_eq!(
            channels_of("bench:all", 3, 205),
            ["bench:all", "bench:c1-5", "bench:c2-5"]
        );
        assert_eq!(channels_of("news", 2, 7), ["news", "c1-7"]);
    }
}
