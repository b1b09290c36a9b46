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
    io::{self, IsTerminal},
    sync::Arc,
    thread,
    time::{Duration, Instant},
};

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tether::{ClientConfig, CloseCode, Keepalive, Message, deflate::DeflateConfig};
use tokio::{
    runtime::Runtime,
    sync::{mpsc, watch},
    task::JoinSet,
    time::timeout,
};

use crate::{
    report::{
        ErrorCounts, IdleReport, ServerMemory, histogram_to_json, latency_histogram,
        merge_histogram_json,
    },
    spread::{self, Dialer, Target},
    sys,
    workers::{self, Worker, merge_counts, runtime},
};

/// How long closing may take once the hold is over.
const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

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
    /// Connections per source address (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = spread::DEFAULT_PER_SOURCE)]
    per_source: usize,
    /// Connections per process; more are opened by worker processes.
    #[arg(long, default_value_t = spread::DEFAULT_PER_PROCESS)]
    per_process: usize,
    /// Connection attempts in flight at once, over all processes.
    #[arg(long, default_value_t = spread::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
    /// Offer permessage-deflate (without context takeover either way), to
    /// measure idle connections that negotiated compression.
    #[arg(long)]
    deflate: bool,
}

/// Options of the hidden `worker` subcommand: one shard of `idle`.
#[derive(Debug, clap::Args)]
pub(crate) struct WorkerArgs {
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    #[arg(long)]
    conns: usize,
    #[arg(long)]
    first_source: usize,
    #[arg(long)]
    per_source: usize,
    #[arg(long)]
    concurrency: usize,
    #[arg(long, value_parser = crate::parse_seconds)]
    ping_interval: Option<Duration>,
    #[arg(long)]
    deflate: bool,
}

/// Runs `tether-load idle` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if args.conns == 0 {
        return Err("--conns must be at least 1".into());
    }
    let shards = plan_shards(&args);
    let sources =
        workers::sources_used(&shards.iter().map(|shard| shard.spread).collect::<Vec<_>>());
    if sources > spread::source_count(&args.url) {
        return Err(format!(
            "{} connections at {} per source address need {sources} source addresses; {} has {}",
            args.conns,
            args.per_source,
            args.url.addr.ip(),
            spread::source_count(&args.url)
        ));
    }
    let rss = |pid: u32| {
        sys::rss_of(pid)
            .map_err(|error| format!("cannot read the memory of process {pid}: {error}"))
    };
    let rss_before = args.server_pid.map(rss).transpose()?;

    let start = Instant::now();
    let (opened, fleet) = if let [shard] = shards.as_slice() {
        Fleet::open_here(shard)?
    } else {
        Fleet::open_workers(&shards)?
    };
    let open_wall = start.elapsed();
    let all_open = Instant::now();
    thread::sleep(args.settle.min(args.hold));
    let rss_open = args.server_pid.map(rss).transpose()?;
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
                closed: sys::rss_of(pid).ok(),
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
    if args.json {
        println!("{}", report.to_json());
    } else {
        print!("{}", report.table());
    }
    Ok(())
}

/// Runs one shard for a parent `idle`: see the module docs.
pub(crate) fn worker(args: WorkerArgs) -> Result<(), String> {
    let shard = Shard {
        target: args.url,
        spread: workers::Shard {
            conns: args.conns,
            first_source: args.first_source,
            per_source: args.per_source,
            concurrency: args.concurrency,
        },
        ping_interval: args.ping_interval,
        deflate: args.deflate,
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
fn plan_shards(args: &Args) -> Vec<Shard> {
    let spreads = workers::plan_shards(
        args.conns,
        args.per_process,
        args.per_source,
        args.concurrency,
    );
    let progress = spreads.len() == 1;
    spreads
        .into_iter()
        .map(|spread| Shard {
            target: args.url.clone(),
            spread,
            ping_interval: args.ping_interval,
            deflate: args.deflate,
            progress,
        })
        .collect()
}

/// The connections of one process.
#[derive(Debug, Clone)]
struct Shard {
    target: Target,
    spread: workers::Shard,
    ping_interval: Option<Duration>,
    /// Offer permessage-deflate.
    deflate: bool,
    /// Show progress on stderr if it is a terminal.
    progress: bool,
}

impl Shard {
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

    /// Opens every connection (the attempts that fail are counted) and
    /// returns once each has opened or failed.
    async fn open(&self) -> Result<(Opened, Holding), String> {
        let dialer = Dialer::new(
            self.target.clone(),
            self.client_config(),
            self.spread.first_source,
            self.spread.per_source,
            self.spread.concurrency,
        );
        dialer.check_capacity(self.spread.conns)?;
        let dialer = Arc::new(dialer);
        let (closing_tx, closing_rx) = watch::channel(false);
        let (opened_tx, mut opened_rx) = mpsc::unbounded_channel();
        let start = Instant::now();
        let mut tasks = JoinSet::new();
        for index in 0..self.spread.conns {
            tasks.spawn(hold(
                index,
                dialer.clone(),
                opened_tx.clone(),
                closing_rx.clone(),
            ));
        }
        drop(opened_tx);
        let progress = self.progress && io::stderr().is_terminal();
        let mut opened = Opened {
            opened: 0,
            errors: ErrorCounts::new(),
            handshake: latency_histogram(),
            wall: Duration::ZERO,
        };
        let mut shown = Instant::now();
        while let Some(result) = opened_rx.recv().await {
            match result {
                Ok(latency) => {
                    opened.opened += 1;
                    opened
                        .handshake
                        .saturating_record(latency.as_nanos() as u64);
                }
                Err(error) => *opened.errors.entry(error).or_default() += 1,
            }
            if progress && shown.elapsed() >= Duration::from_millis(250) {
                shown = Instant::now();
                eprint!("\r  opened {} of {} ", opened.opened, self.spread.conns);
            }
        }
        if progress {
            eprintln!("\r  opened {} of {} ", opened.opened, self.spread.conns);
        }
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
            received = ws.recv() => match received {
                Some(Ok(Message::Pong(_))) => pongs += 1,
                Some(Ok(Message::Close(frame))) => {
                    let code = frame.map_or(1005, |frame| frame.code.0);
                    break Some(format!("server closed the connection ({code})"));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => break Some(error.to_string()),
                None => break Some("connection ended without a close frame".to_owned()),
            },
        }
    };
    if let Some(error) = dropped {
        // Let the stream finish the close handshake and shut down.
        let _ = timeout(CLOSE_TIMEOUT, async { while ws.recv().await.is_some() {} }).await;
        return Outcome {
            pongs,
            end: End::Dropped(error),
        };
    }
    let closing = async {
        ws.close(CloseCode::NORMAL, "done")
            .await
            .map_err(|error| error.to_string())?;
        let mut answered = false;
        while let Some(received) = ws.recv().await {
            match received {
                Ok(Message::Close(_)) => answered = true,
                Ok(Message::Pong(_)) => pongs += 1,
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        if answered {
            Ok(())
        } else {
            Err("no close frame from the server".to_owned())
        }
    };
    let end = match timeout(CLOSE_TIMEOUT, closing).await {
        Ok(Ok(())) => End::Clean,
        Ok(Err(error)) => End::Unclean(error),
        Err(_) => End::Unclean("close timed out".to_owned()),
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
            let mut args = vec![
                "worker".to_owned(),
                format!("--url={}", shard.target),
                format!("--conns={}", shard.spread.conns),
                format!("--first-source={}", shard.spread.first_source),
                format!("--per-source={}", shard.spread.per_source),
                format!("--concurrency={}", shard.spread.concurrency),
            ];
            if let Some(interval) = shard.ping_interval {
                args.push(format!("--ping-interval={}", interval.as_secs_f64()));
            }
            if shard.deflate {
                args.push("--deflate".to_owned());
            }
            workers.push(Worker::spawn(args)?);
        }
        let mut opened = Opened {
            opened: 0,
            errors: ErrorCounts::new(),
            handshake: latency_histogram(),
            wall: Duration::ZERO,
        };
        let progress = io::stderr().is_terminal();
        for (i, worker) in workers.iter_mut().enumerate() {
            opened.merge_json(&worker.line(i)?);
            if progress {
                eprint!(
                    "\r  {} of {} workers ready, {} opened ",
                    i + 1,
                    shards.len(),
                    opened.opened
                );
            }
        }
        if progress {
            eprintln!();
        }
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
        let shards = plan_shards(&args(&["--conns", "40001", "--per-source", "5000"]));
        assert_eq!(shards.len(), 3);
        assert!(shards.iter().all(|shard| !shard.progress));
        assert_eq!(shards[2].spread.first_source, 6);
        let shards = plan_shards(&args(&["--conns", "15000"]));
        assert!(shards[0].progress);
        assert_eq!(shards[0].spread.sources(), 2);
    }
}
