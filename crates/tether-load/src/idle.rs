//! `tether-load idle`: many open, quiet connections, and what they cost the
//! server.
//!
//! Connections are spread over source addresses 127.0.0.1, 127.0.0.2, … and,
//! past what one process may hold, over worker processes (see
//! [`crate::workers`]) run with the hidden `worker` subcommand. A worker's
//! first line says its connections are open; it holds them until its stdin
//! closes, then closes them cleanly and reports how that went.
//!
//! ```text
//!  parent ── RSS before ── spawn workers ──► line 1 from each: opened, handshakes
//!         ── settle, RSS open ── hold ── close stdins ──► line 2 from each: closes
//! ```

use std::{
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tether::{ClientConfig, Keepalive, Message, deflate::DeflateConfig};
use tether_load_os as os;
use tokio::{
    runtime::Runtime,
    sync::{mpsc, watch},
    task::JoinSet,
};

use crate::{
    held,
    meter::server_rss,
    progress,
    report::{
        ErrorCounts, IdleReport, Report as _, ServerMemory, histogram_to_json, latency_histogram,
        merge_histogram_json,
    },
    sources::Dialer,
    target::Target,
    workers::{self, Worker, merge_counts, runtime},
};

/// Options of `tether-load idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Server to connect to: `ws://HOST[:PORT][/PATH]`, HOST a loopback address.
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// Connections to open.
    #[arg(long, default_value_t = 1000)]
    conns: usize,
    /// Seconds to hold the connections once all are open.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    hold: Duration,
    /// Report this (server) process's resident memory before, with and
    /// after the connections.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Ping after this many seconds of silence on each connection (default:
    /// never; pings from the server are always answered).
    #[arg(long, value_parser = crate::parse_seconds)]
    ping_interval: Option<Duration>,
    /// Seconds to let the server settle before sampling its memory.
    #[arg(long, default_value = "1", value_parser = crate::parse_seconds)]
    settle: Duration,
    #[command(flatten)]
    fleet: workers::FleetArgs,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Offer permessage-deflate (without context takeover either way), to
    /// measure idle connections that negotiated compression.
    #[arg(long)]
    deflate: bool,
}

/// Options of the hidden `worker` subcommand: one shard of `idle`, the
/// connections of one process.
#[derive(Debug, Clone, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    #[command(flatten)]
    shard: workers::Shard,
    #[arg(long, value_parser = crate::parse_seconds)]
    ping_interval: Option<Duration>,
    /// Offer permessage-deflate.
    #[arg(long)]
    deflate: bool,
}

/// Runs `tether-load idle` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    let shards = plan_shards(&args)?;
    let sources = workers::sources_used(
        &shards
            .iter()
            .map(|shard| shard.worker.shard)
            .collect::<Vec<_>>(),
    );
    let rss_before = args.server_pid.map(server_rss).transpose()?;

    let start = Instant::now();
    let (opened, fleet) = if let [shard] = shards.as_slice() {
        Fleet::open_here(shard)?
    } else {
        Fleet::open_workers(&shards)?
    };
    let open_wall = start.elapsed();
    let all_open = Instant::now();
    thread::sleep(args.settle.min(args.hold));
    let rss_open = args.server_pid.map(server_rss).transpose()?;
    thread::sleep((all_open + args.hold).saturating_duration_since(Instant::now()));
    let hold = all_open.elapsed();
    let closed = fleet.close()?;
    let memory = match (args.server_pid, rss_before, rss_open) {
        (Some(pid), Some(before), Some(open)) => {
            thread::sleep(args.settle);
            Some(ServerMemory {
                pid,
                before,
                open,
                closed: os::rss_of(pid).ok(),
            })
        }
        _ => None,
    };

    let report = IdleReport {
        target: args.url.to_string(),
        conns: args.conns,
        processes: shards.len(),
        sources,
        opened: opened.opened,
        connect_errors: opened.errors,
        open_wall,
        handshake: opened.handshake,
        hold,
        pongs: closed.pongs,
        dropped: closed.dropped,
        closed_clean: closed.clean,
        closed_unclean: closed.unclean,
        memory,
    };
    report.print(args.json);
    Ok(())
}

/// Runs one shard for a parent `idle`: see the module docs.
pub(crate) fn worker(args: WorkerArgs) -> Result<(), String> {
    let shard = Shard {
        worker: args,
        progress: false,
    };
    let runtime = runtime()?;
    let (opened, holding) = runtime.block_on(shard.open())?;
    workers::tell_parent(&opened.to_json());
    // The runtime's threads keep serving the connections meanwhile.
    workers::wait_for_parent();
    let closed = runtime.block_on(holding.close());
    workers::tell_parent(&closed.to_json());
    Ok(())
}

/// Splits the connections over processes, each with its own source
/// addresses.
fn plan_shards(args: &Args) -> Result<Vec<Shard>, String> {
    let placed = args.fleet.plan(&args.url, "connections", args.conns)?;
    let progress = placed.len() == 1;
    Ok(placed
        .into_iter()
        .map(|shard| Shard {
            worker: WorkerArgs {
                url: args.url.clone(),
                shard,
                ping_interval: args.ping_interval,
                deflate: args.deflate,
            },
            progress,
        })
        .collect())
}

impl WorkerArgs {
    /// The command line that runs this shard in a worker process.
    fn command_line(&self) -> Vec<String> {
        let mut args = vec!["worker".to_owned()];
        args.extend(self.shard.flags(&self.url));
        if let Some(interval) = self.ping_interval {
            args.push(format!("--ping-interval={}", interval.as_secs_f64()));
        }
        if self.deflate {
            args.push("--deflate".to_owned());
        }
        args
    }

    fn client_config(&self) -> ClientConfig {
        let keepalive = match self.ping_interval {
            Some(interval) => Keepalive {
                interval: Some(interval),
                timeout: interval.max(Duration::from_secs(10)),
            },
            None => Keepalive::OFF,
        };
        let mut config = ClientConfig::default();
        config.connection.keepalive = keepalive;
        if self.deflate {
            config.deflate.push(DeflateConfig::default());
        }
        config
    }
}

/// The connections of one process, and whether it shows how their opening
/// goes.
#[derive(Debug, Clone)]
struct Shard {
    worker: WorkerArgs,
    /// Show progress on stderr if it is a terminal.
    progress: bool,
}

impl Shard {
    /// Opens every connection (the attempts that fail are counted) and
    /// returns once each has opened or failed.
    async fn open(&self) -> Result<(Opened, Holding), String> {
        let shard = &self.worker.shard;
        let dialer = Dialer::new(
            self.worker.url.clone(),
            self.worker.client_config(),
            shard.first_source,
            shard.per_source,
            shard.concurrency,
        );
        dialer.check_capacity(shard.conns)?;
        let dialer = Arc::new(dialer);
        let (closing_tx, closing_rx) = watch::channel(false);
        let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for index in 0..shard.conns {
            tasks.spawn(hold(
                index,
                dialer.clone(),
                opened_tx.clone(),
                closing_rx.clone(),
            ));
        }
        drop(opened_tx);
        let line = progress::line(self.progress, shard.conns as u64, progress::OPENED);
        let mut opened = Opened::default();
        while let Some(result) = opened_rx.recv().await {
            match result {
                Ok(latency) => {
                    opened.opened += 1;
                    opened
                        .handshake
                        .saturating_record(latency.as_nanos() as u64);
                    line.inc(1);
                }
                Err(error) => *opened.errors.entry(error).or_default() += 1,
            }
        }
        line.finish();
        opened.wall = start.elapsed();
        Ok((
            opened,
            Holding {
                closing: closing_tx,
                tasks,
            },
        ))
    }
}

/// What opening a shard's connections did.
#[derive(Debug)]
struct Opened {
    opened: usize,
    errors: ErrorCounts,
    /// Connect plus upgrade, in nanoseconds.
    handshake: Histogram<u64>,
    wall: Duration,
}

impl Default for Opened {
    fn default() -> Self {
        Self {
            opened: 0,
            errors: ErrorCounts::new(),
            handshake: latency_histogram(),
            wall: Duration::ZERO,
        }
    }
}

impl Opened {
    fn to_json(&self) -> Value {
        json!({
            "opened": self.opened,
            "errors": self.errors,
            "handshake_ns": histogram_to_json(&self.handshake),
            "open_s": self.wall.as_secs_f64(),
        })
    }

    fn merge_json(&mut self, line: &Value) {
        self.opened += line["opened"].as_u64().unwrap_or(0) as usize;
        merge_counts(&mut self.errors, &line["errors"]);
        merge_histogram_json(&mut self.handshake, &line["handshake_ns"]);
    }
}

/// Connections being held, each by its own task.
struct Holding {
    closing: watch::Sender<bool>,
    tasks: JoinSet<Outcome>,
}

impl Holding {
    /// Closes every connection cleanly and reports how that went.
    async fn close(mut self) -> Closed {
        let _ = self.closing.send(true);
        let mut closed = Closed::default();
        while let Some(joined) = self.tasks.join_next().await {
            let outcome = joined.unwrap_or_else(|error| Outcome {
                pongs: 0,
                end: End::Unclean(format!("task failed: {error}")),
            });
            closed.pongs += outcome.pongs;
            match outcome.end {
                End::NeverOpened => {}
                End::Clean => closed.clean += 1,
                End::Unclean(error) => *closed.unclean.entry(error).or_default() += 1,
                End::Dropped(error) => *closed.dropped.entry(error).or_default() += 1,
            }
        }
        closed
    }
}

/// What holding and closing a shard's connections did.
#[derive(Debug, Default)]
struct Closed {
    pongs: u64,
    dropped: ErrorCounts,
    clean: u64,
    unclean: ErrorCounts,
}

impl Closed {
    fn to_json(&self) -> Value {
        json!({
            "pongs": self.pongs,
            "dropped": self.dropped,
            "closed_clean": self.clean,
            "close_errors": self.unclean,
        })
    }

    fn merge_json(&mut self, line: &Value) {
        self.pongs += line["pongs"].as_u64().unwrap_or(0);
        self.clean += line["closed_clean"].as_u64().unwrap_or(0);
        merge_counts(&mut self.dropped, &line["dropped"]);
        merge_counts(&mut self.unclean, &line["close_errors"]);
    }
}

/// How one connection ended.
#[derive(Debug)]
struct Outcome {
    pongs: u64,
    end: End,
}

#[derive(Debug)]
enum End {
    NeverOpened,
    /// Our close frame was answered and the connection shut down.
    Clean,
    /// Closing failed or timed out.
    Unclean(String),
    /// The server closed the connection, or it failed, while held.
    Dropped(String),
}

/// Opens connection `index`, reports it, and holds it quietly (answering
/// pings) until `closing` turns true.
async fn hold(
    index: usize,
    dialer: Arc<Dialer>,
    opened: mpsc::UnboundedSender<Result<Duration, String>>,
    mut closing: watch::Receiver<bool>,
) -> Outcome {
    let mut ws = match dialer.dial(index).await {
        Ok(dialed) => {
            let _ = opened.send(Ok(dialed.latency));
            dialed.ws
        }
        Err(error) => {
            let _ = opened.send(Err(error.to_string()));
            return Outcome {
                pongs: 0,
                end: End::NeverOpened,
            };
        }
    };
    drop(opened);
    let mut pongs = 0;
    let dropped = loop {
        tokio::select! {
            biased;
            _ = closing.wait_for(|closing| *closing) => break None,
            received = ws.recv() => match held::message(received) {
                Ok(Message::Pong(_)) => pongs += 1,
                Ok(_) => {}
                Err(error) => break Some(error),
            },
        }
    };
    if let Some(error) = dropped {
        held::wind_down(&mut ws).await;
        return Outcome {
            pongs,
            end: End::Dropped(error),
        };
    }
    let end = match held::close(&mut ws, &mut pongs).await {
        Ok(()) => End::Clean,
        Err(error) => End::Unclean(error),
    };
    Outcome { pongs, end }
}

/// Where the connections live: in this process, or in worker processes.
enum Fleet {
    Here { runtime: Runtime, holding: Holding },
    Workers(Vec<Worker>),
}

impl Fleet {
    fn open_here(shard: &Shard) -> Result<(Opened, Self), String> {
        let runtime = runtime()?;
        let (opened, holding) = runtime.block_on(shard.open())?;
        Ok((opened, Self::Here { runtime, holding }))
    }

    fn open_workers(shards: &[Shard]) -> Result<(Opened, Self), String> {
        let mut workers = Vec::with_capacity(shards.len());
        for shard in shards {
            workers.push(Worker::spawn(shard.worker.command_line())?);
        }
        let mut opened = Opened::default();
        let line = progress::line(true, shards.len() as u64, progress::WORKERS_READY);
        for (i, worker) in workers.iter_mut().enumerate() {
            opened.merge_json(&worker.line(i)?);
            line.set_message(format!("{} opened", opened.opened));
            line.inc(1);
        }
        line.finish();
        Ok((opened, Self::Workers(workers)))
    }

    fn close(self) -> Result<Closed, String> {
        match self {
            Self::Here { runtime, holding } => Ok(runtime.block_on(holding.close())),
            Self::Workers(mut workers) => {
                for worker in &mut workers {
                    worker.finish("");
                }
                let mut closed = Closed::default();
                for (i, worker) in workers.iter_mut().enumerate() {
                    closed.merge_json(&worker.line(i)?);
                }
                workers.into_iter().for_each(Worker::wait);
                Ok(closed)
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    #[derive(Debug, Parser)]
    struct Cli {
        #[command(flatten)]
        args: Args,
    }

    fn args(extra: &[&str]) -> Args {
        let base = ["idle", "--url", "ws://127.0.0.1:1"];
        Cli::parse_from(base.iter().chain(extra)).args
    }

    #[test]
    fn shards_carry_the_options() {
        let shards = plan_shards(&args(&["--conns", "40001", "--per-source", "5000"])).unwrap();
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|shard| !shard.progress));
        assert_eq!(shards[2].worker.shard.first_source, 6);
        let shards = plan_shards(&args(&["--conns", "15000"])).unwrap();
        assert!(shards[0].progress);
        assert_eq!(shards[0].worker.shard.sources(), 2);
    }
}
