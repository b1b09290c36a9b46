//! `tether-load`: a load generator for WebSocket servers you run yourself.
//!
//! What it does not do: it targets loopback addresses only (it refuses any
//! other host), speaks plain `ws://` (no TLS), and measures rather than
//! judges: it has no pass/fail thresholds.
//!
//! ```text
//!  echo:  N connections × K messages in flight ──► server ──► echo, verified
//!         → msg/s, MB/s, latency p50/p99/p99.9, CPU of both sides
//!  idle:  N quiet connections, spread over 127.0.0.x and worker processes
//!         → handshakes/s, handshake latency, server RSS per connection
//!  broadcast: N gateway subscribers (worker processes) ◄── gateway ◄── HTTP API
//!         publisher at R/s → deliveries/s, delivery latency, losses, RSS per subscriber
//!  handshake: open, (echo), close at R/s over 127.0.0.x → handshakes/s, latency, failures
//!  overhead: one message stream by HTTP polling and by WebSocket → bytes/s each way
//! ```

use std::{process::ExitCode, time::Duration};

use clap::{Parser, Subcommand};
use tether_load_os as os;

mod broadcast;
mod echo;
mod framing;
mod gateway;
mod handshake;
mod held;
mod hooks;
mod http1;
mod idle;
mod meter;
mod overhead;
mod progress;
mod publisher;
mod report;
mod sources;
mod subscriber;
mod target;
mod workers;

/// Load generator for WebSocket servers on loopback addresses.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Closed-loop echo load: throughput, latency and verification.
    Echo(echo::Args),
    /// Many idle connections: handshake rate and server memory per connection.
    Idle(idle::Args),
    /// One shard of `idle`, run by `idle` itself.
    #[command(hide = true)]
    Worker(idle::WorkerArgs),
    /// Gateway fan-out: subscribers, publications through the HTTP API,
    /// delivery latency and losses, server memory per subscriber.
    Broadcast(broadcast::Args),
    /// One shard of `broadcast`'s subscribers, run by `broadcast` itself.
    #[command(hide = true)]
    BroadcastWorker(subscriber::WorkerArgs),
    /// Connection churn: open, optionally echo one message, close, at a rate.
    Handshake(handshake::Args),
    /// A gateway's proxy hooks: connects or RPC calls per second through
    /// them, with the gateway's and the backend's CPU apart.
    Hooks(hooks::Args),
    /// Bytes on the wire: one message stream by HTTP polling and by WebSocket.
    #[command(long_about = overhead::LONG_HELP)]
    Overhead(overhead::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    if let Err(error) = os::raise_fd_limit() {
        eprintln!("tether-load: warning: cannot raise the open-file limit: {error}");
    }
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
        Command::Hooks(args) => hooks::run(args),
        Command::Idle(args) => idle::run(args),
        Command::Worker(args) => idle::worker(args),
        Command::Broadcast(args) => broadcast::run(args),
        Command::BroadcastWorker(args) => subscriber::worker(args),
        Command::Handshake(args) => handshake::run(args),
        Command::Overhead(args) => overhead::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("tether-load: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Parses a number of seconds such as `5` or `0.25`.
fn parse_seconds(text: &str) -> Result<Duration, String> {
    text.parse::<f64>()
        .ok()
        .and_then(|seconds| Duration::try_from_secs_f64(seconds).ok())
        .ok_or_else(|| format!("{text:?} is not a number of seconds"))
}
