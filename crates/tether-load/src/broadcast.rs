//! `tether-load broadcast`: fan-out through a gateway that speaks
//! Centrifugo's v2 JSON client protocol (such as `tetherd`).
//!
//! Subscribers live in worker processes ([`crate::subscriber`]); this
//! process samples the server's memory once they are all subscribed, then
//! publishes at a fixed rate ([`crate::publisher`]: the HTTP API or a
//! WebSocket client, on one connection or several), each publication
//! stamped with its sequence number and `CLOCK_MONOTONIC` send time, and
//! finally gathers what every subscriber received.
//!
//! ```text
//!  RSS before ── workers: connect + subscribe ── settle, RSS subscribed
//!  ── publish R/s for S s (--via api|websocket, --publishers N)
//!  ── workers: wait for every publication (or --drain); CPU times read
//!  ── workers: close ── report
//! ```

use std::{
    thread,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tether_load_os as os;

use crate::{
    meter::{CpuMeter, own_cpu_time, server_rss},
    progress,
    publisher::{self, Plan, Publishing, Via},
    report::{
        Cpu, HumanTable, Report, counted, fleet_title, latency_histogram, mib, percentiles_us,
        plural, total,
    },
    subscriber::{self, Ready, Received},
    target::Target,
    workers::{self, Worker},
};

/// Options of `tether-load broadcast`.
#[derive(Debug, clap::Args)]
// The fleet's flags speak of connections; here each is a subscriber.
#[command(mut_arg("per_process", |arg| arg.help("Subscribers per worker process")))]
pub(crate) struct Args {
    /// The gateway's WebSocket endpoint, e.g.
    /// ws://127.0.0.1:8000/connection/websocket (a loopback address).
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// The gateway's HTTP API (default: /api on the --url's address).
    #[arg(long, value_parser = Target::parse_http)]
    api: Option<Target>,
    /// The HTTP API key (sent as X-API-Key).
    #[arg(long)]
    api_key: String,
    /// Subscriber connections.
    #[arg(long, default_value_t = 1000)]
    subscribers: usize,
    /// Channel every subscriber subscribes to and every publication goes
    /// to; its namespace must allow anonymous subscribers.
    #[arg(long, default_value = "bench:all")]
    channel: String,
    /// Subscriptions per connection: the broadcast channel and K-1 more in
    /// its namespace (`c1-0` … `c1-99`, `c2-…`), to measure memory per
    /// subscription.
    #[arg(long, default_value_t = 1, value_parser = clap::value_parser!(u32).range(1..=1000))]
    channels: u32,
    /// Publications per second, over all publisher connections.
    #[arg(long, default_value_t = 10.0)]
    rate: f64,
    /// How publications reach the gateway: the HTTP API, or a client's
    /// `publish` command over the WebSocket endpoint.
    #[arg(long, value_enum, default_value_t = Via::Api)]
    via: Via,
    /// Publisher connections; publication k goes out on connection
    /// k mod N (so several may be under way at once).
    #[arg(long, default_value_t = 1)]
    publishers: usize,
    /// Seconds to publish.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    duration: Duration,
    /// Bytes of JSON data per publication (at least the stamp, about 40).
    #[arg(long, default_value_t = 0)]
    size: usize,
    /// Report this (server) process's memory per subscriber and CPU time.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Seconds to let the server settle before sampling its memory.
    #[arg(long, default_value = "1", value_parser = crate::parse_seconds)]
    settle: Duration,
    /// Seconds subscribers wait for missing publications after the last
    /// one was sent, before counting them lost.
    #[arg(long, default_value = "5", value_parser = crate::parse_seconds)]
    drain: Duration,
    #[command(flatten)]
    fleet: workers::FleetArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `tether-load broadcast` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.subscribers == 0 {
        return Err("--subscribers must be at least 1".into());
    }
    if args.publishers == 0 {
        return Err("--publishers must be at least 1".into());
    }
    if !(args.rate.is_finite() && args.rate > 0.0) {
        return Err("--rate must be a positive number of publications per second".into());
    }
    let published = (args.rate * args.duration.as_secs_f64()).round().max(1.0) as u64;
    let shards = args
        .fleet
        .plan(&args.url, "subscribers", args.subscribers)?;
    let sources = workers::sources_used(&shards);
    let api = args.api.clone().unwrap_or_else(|| Target {
        path: "/api".into(),
        ..args.url.clone()
    });
    let rss_before = args.server_pid.map(server_rss).transpose()?;

    let start = Instant::now();
    let (mut fleet, ready) = subscribe(&args, &shards)?;
    let subscribe_wall = start.elapsed();
    if ready.subscribed == 0 {
        let why = ready.errors.keys().next().cloned().unwrap_or_default();
        return Err(format!("no subscriber could subscribe: {why}"));
    }
    thread::sleep(args.settle);
    let rss_subscribed = args.server_pid.map(server_rss).transpose()?;

    let mut delivered = publish_and_deliver(&args, &api, published, &mut fleet)?;
    close(fleet, &mut delivered.received)?;
    let Delivered {
        publishing,
        publish_wall,
        first_send_ns,
        received,
        cpu,
    } = delivered;
    let publishing = publishing?;

    let report = BroadcastReport {
        target: args.url.to_string(),
        channel: args.channel.clone(),
        channels: args.channels,
        subscribers: args.subscribers,
        processes: shards.len(),
        sources,
        ready,
        subscribe_wall,
        memory: match (args.server_pid, rss_before, rss_subscribed) {
            (Some(pid), Some(before), Some(subscribed)) => Some(Memory {
                pid,
                before,
                subscribed,
            }),
            _ => None,
        },
        rate: args.rate,
        via: args.via,
        publishers: args.publishers,
        size: args.size,
        publishing,
        publish_wall,
        delivery_wall_ns: received.last_delivery_ns.saturating_sub(first_send_ns),
        received,
        cpu,
    };
    report.print(args.json);
    Ok(())
}

/// What the publisher did and the subscribers received, with the CPU time
/// both sides and the server spent on it.
struct Delivered {
    /// What the publisher did, or why it stopped.
    publishing: Result<Publishing, String>,
    publish_wall: Duration,
    /// `CLOCK_MONOTONIC` when the first publication was sent.
    first_send_ns: u64,
    received: Received,
    cpu: Cpu,
}

/// Publishes `count` publications, tells the workers how many went out and
/// waits until each reports what arrived. The CPU time read covers all of
/// it, not only the API calls: a publication's fan-out goes on after the
/// API has answered. The connections close only after this reading.
fn publish_and_deliver(
    args: &Args,
    api: &Target,
    count: u64,
    fleet: &mut [Worker],
) -> Result<Delivered, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))?;
    let cpu_of_all =
        |fleet: &[Worker]| own_cpu_time() + fleet.iter().map(Worker::cpu_time).sum::<Duration>();
    let meter = CpuMeter::start(args.server_pid, || cpu_of_all(fleet))?;
    let publish_start = Instant::now();
    let first_send_ns = os::monotonic_ns();
    let plan = Plan {
        via: args.via,
        api: api.clone(),
        api_key: args.api_key.clone(),
        url: args.url.clone(),
        channel: args.channel.clone(),
        size: args.size,
        rate: args.rate,
        count,
        connections: args.publishers,
    };
    let publishing = runtime.block_on(publisher::publish(plan));
    let publish_wall = publish_start.elapsed();
    // Tell the workers how many to expect even if publishing failed, so
    // they report what did arrive.
    let sent = publishing.as_ref().map_or(0, |publishing| publishing.sent);
    for worker in fleet.iter_mut() {
        worker.tell(&sent.to_string());
    }
    let mut received = Received::default();
    for (i, worker) in fleet.iter_mut().enumerate() {
        received.merge_json(&worker.line(i)?);
    }
    let cpu = meter.stop(publish_start.elapsed(), os::cores(), || cpu_of_all(fleet))?;
    Ok(Delivered {
        publishing,
        publish_wall,
        first_send_ns,
        received,
        cpu,
    })
}

/// Tells every worker to close its connections, adds how that went to
/// `received` and waits for the workers to exit.
fn close(mut fleet: Vec<Worker>, received: &mut Received) -> Result<(), String> {
    for worker in &mut fleet {
        worker.finish("");
    }
    for (i, worker) in fleet.iter_mut().enumerate() {
        received.merge_json(&worker.line(i)?);
    }
    fleet.into_iter().for_each(Worker::wait);
    Ok(())
}

/// Starts the worker processes and waits until each has subscribed.
fn subscribe(args: &Args, shards: &[workers::Shard]) -> Result<(Vec<Worker>, Ready), String> {
    let mut fleet = Vec::with_capacity(shards.len());
    for &shard in shards {
        let worker = subscriber::WorkerArgs {
            url: args.url.clone(),
            shard,
            channel: args.channel.clone(),
            channels: args.channels as usize,
            drain: args.drain,
        };
        fleet.push(Worker::spawn(worker.command_line())?);
    }
    let line = progress::line(true, shards.len() as u64, progress::WORKERS_READY);
    let mut ready = Ready::default();
    for (i, worker) in fleet.iter_mut().enumerate() {
        ready.merge_json(&worker.line(i)?);
        line.set_message(format!("{} subscribed", ready.subscribed));
        line.inc(1);
    }
    line.finish();
    Ok((fleet, ready))
}

/// The server's resident memory before and with the subscribers.
#[derive(Debug, Clone, Copy)]
struct Memory {
    pid: u32,
    before: u64,
    subscribed: u64,
}

impl Memory {
    /// Growth per subscriber connection, in bytes (negative if it shrank).
    fn per_subscriber(&self, subscribed: u64) -> Option<f64> {
        (subscribed > 0).then(|| (self.subscribed as f64 - self.before as f64) / subscribed as f64)
    }
}

/// What `tether-load broadcast` measured.
#[derive(Debug)]
struct BroadcastReport {
    target: String,
    channel: String,
    channels: u32,
    subscribers: usize,
    processes: usize,
    sources: usize,
    ready: Ready,
    subscribe_wall: Duration,
    memory: Option<Memory>,
    rate: f64,
    via: Via,
    publishers: usize,
    size: usize,
    publishing: Publishing,
    publish_wall: Duration,
    /// From the first publication sent to the last one received.
    delivery_wall_ns: u64,
    received: Received,
    cpu: Cpu,
}

impl BroadcastReport {
    fn expected(&self) -> u64 {
        self.ready.subscribed * self.publishing.sent
    }

    /// Publications per second achieved: lower than asked when each
    /// publish call takes longer than the period (they go one at a time).
    fn publish_rate(&self) -> f64 {
        self.publishing.sent as f64 / self.publish_wall.as_secs_f64().max(1e-9)
    }

    fn deliveries_per_s(&self) -> f64 {
        self.received.deliveries as f64 / (self.delivery_wall_ns as f64 / 1e9).max(1e-9)
    }

    /// For each publication that reached any subscriber: from sending it to
    /// its last subscriber having it, in nanoseconds.
    fn last_subscriber_latency(&self) -> Histogram<u64> {
        let mut histogram = latency_histogram();
        let published = self.received.latencies.last.iter();
        for (_, &latency) in published.filter(|&(&seq, _)| seq < self.publishing.sent) {
            histogram.saturating_record(latency);
        }
        histogram
    }

    fn via(&self) -> &'static str {
        match self.via {
            Via::Api => "api",
            Via::Websocket => "websocket",
        }
    }
}

impl Report for BroadcastReport {
    fn to_json(&self) -> Value {
        let received = &self.received;
        let memory = self.memory.map(|memory| {
            json!({
                "pid": memory.pid,
                "rss_before": memory.before,
                "rss_subscribed": memory.subscribed,
                "rss_per_subscriber": memory.per_subscriber(self.ready.subscribed),
            })
        });
        json!({
            "mode": "broadcast",
            "url": self.target,
            "channel": self.channel,
            "channels_per_subscriber": self.channels,
            "subscribers": self.subscribers,
            "processes": self.processes,
            "source_addresses": self.sources,
            "subscribed": self.ready.subscribed,
            "subscribe_failed": total(&self.ready.errors),
            "subscribe_errors": self.ready.errors,
            "subscribe_s": self.subscribe_wall.as_secs_f64(),
            "handshake_latency_us": percentiles_us(&self.ready.handshake),
            "subscribe_latency_us": percentiles_us(&self.ready.subscribe),
            "rate": self.rate,
            "via": self.via(),
            "publishers": self.publishers,
            "size": self.size,
            "published": self.publishing.sent,
            "publish_s": self.publish_wall.as_secs_f64(),
            "publish_rate": self.publish_rate(),
            "publish_latency_us": percentiles_us(&self.publishing.latency),
            "expected_deliveries": self.expected(),
            "deliveries": received.deliveries,
            "deliveries_per_s": self.deliveries_per_s(),
            "delivery_latency_us": percentiles_us(&received.latencies.all),
            "last_subscriber_latency_us": percentiles_us(&self.last_subscriber_latency()),
            "lost": received.lost,
            "duplicated": received.duplicated,
            "reordered": received.reordered,
            "unexpected": received.unexpected,
            "dropped": total(&received.dropped),
            "dropped_errors": received.dropped,
            "closed_clean": received.closed_clean,
            "close_errors": received.close_errors,
            "server": memory,
            "cpu": self.cpu.to_json(),
        })
    }

    fn table(&self) -> String {
        let received = &self.received;
        let mut table = HumanTable::new(format!(
            "tether-load broadcast  {}  {} subscribers x {} {}",
            self.target,
            self.subscribers,
            counted(self.channels as usize, "channel", "s"),
            fleet_title(self.sources, self.processes),
        ));
        table.row(
            "subscribed",
            format!(
                "{:>12}   failed {}, in {:.2} s",
                self.ready.subscribed,
                total(&self.ready.errors),
                self.subscribe_wall.as_secs_f64()
            ),
        );
        table.latency("hs latency", &self.ready.handshake);
        table.latency("sub latency", &self.ready.subscribe);
        if let Some(memory) = self.memory {
            table.row(
                "server RSS",
                format!(
                    "{} before, {} subscribed",
                    mib(memory.before),
                    mib(memory.subscribed)
                ),
            );
            if let Some(per) = memory.per_subscriber(self.ready.subscribed) {
                table.row(
                    "RSS per sub",
                    format!(
                        "{per:>12.0} B   ({:.2} KiB, {} subscription{} each)",
                        per / 1024.0,
                        self.channels,
                        plural(self.channels, "s"),
                    ),
                );
            }
        }
        table.row(
            "published",
            format!(
                "{:>12}   to {}, {} B, via {} x{}, at {:.1} /s of {} /s asked, in {:.2} s",
                self.publishing.sent,
                self.channel,
                self.size,
                self.via(),
                self.publishers,
                self.publish_rate(),
                self.rate,
                self.publish_wall.as_secs_f64()
            ),
        );
        table.latency("publish latency", &self.publishing.latency);
        table.row(
            "deliveries",
            format!(
                "{:>12}   of {} expected, {:.0} /s",
                received.deliveries,
                self.expected(),
                self.deliveries_per_s()
            ),
        );
        table.latency("latency", &received.latencies.all);
        table.latency("last sub latency", &self.last_subscriber_latency());
        table.row(
            "errors",
            format!(
                "lost {}, duplicated {}, reordered {}, unexpected {}, dropped {}",
                received.lost,
                received.duplicated,
                received.reordered,
                received.unexpected,
                total(&received.dropped)
            ),
        );
        table.row(
            "closed",
            format!(
                "{:>12}   clean, {} unclean",
                received.closed_clean,
                total(&received.close_errors)
            ),
        );
        table.errors("subscribe", &self.ready.errors);
        table.errors("dropped", &received.dropped);
        table.errors("close", &received.close_errors);
        self.cpu.add_rows(&mut table);
        table.render(&[])
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_per_subscriber() {
        let memory = Memory {
            pid: 1,
            before: 10_000_000,
            subscribed: 40_000_000,
        };
        assert_eq!(memory.per_subscriber(15_000), Some(2000.0));
        assert_eq!(memory.per_subscriber(0), None);
    }
}
