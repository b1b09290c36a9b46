//! Closed-loop load for `echo-tcp`, shaped like `tether-load echo`: N
//! connections, each keeping K messages of S bytes in flight, every echoed
//! byte compared with what was sent. Messages are fixed-size byte runs with
//! no framing (the server echoes bytes, not messages), so this client does
//! less work per message than a WebSocket client (no framing, no masking):
//! what it measures is a ceiling. Prints one JSON object with the keys of
//! `tether-load echo --json` that the runner reads.

use std::{
    net::SocketAddr,
    process::ExitCode,
    sync::{
        Arc,
        atomic::{AtomicU64, Ordering},
    },
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tether_load_os as os;
use tokio::{
    io::{AsyncReadExt, AsyncWriteExt},
    net::{
        TcpStream,
        tcp::{OwnedReadHalf, OwnedWriteHalf},
    },
    sync::Semaphore,
};

/// Message `seq` is `PATTERN[seq % PERIOD ..][.. size]`: consecutive messages
/// differ, and no message needs to be built.
const PERIOD: usize = 251;

/// Messages up to this size are copied into one buffer and written together;
/// larger ones are written straight from the pattern.
const BATCH_BELOW: usize = 16 * 1024;

/// Bytes read at once.
const READ_BUFFER: usize = 256 * 1024;

/// Options of `tcp-load`.
#[derive(Debug, Parser)]
#[command(about = "Closed-loop load for the plain TCP echo server")]
struct Args {
    /// Echo server to load.
    #[arg(long)]
    addr: SocketAddr,
    /// Connections to open.
    #[arg(long, default_value_t = 100)]
    conns: usize,
    /// Bytes per message.
    #[arg(long, default_value_t = 16)]
    size: usize,
    /// Messages each connection keeps in flight.
    #[arg(long, default_value_t = 8)]
    inflight: usize,
    /// Seconds to measure, after every connection is open.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Also report the CPU time of this (server) process.
    #[arg(long)]
    server_pid: Option<u32>,
}

/// Counters every connection adds to.
#[derive(Debug, Default)]
struct Totals {
    messages: AtomicU64,
    verify_errors: AtomicU64,
    connection_errors: AtomicU64,
}

fn main() -> ExitCode {
    let args = Args::parse();
    if args.size == 0 || args.inflight == 0 || args.conns == 0 {
        eprintln!("tcp-load: --size, --inflight and --conns must be at least 1");
        return ExitCode::FAILURE;
    }
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("tcp-load: cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(&args)) {
        Ok(report) => {
            println!("{report}");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("tcp-load: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(args: &Args) -> Result<serde_json::Value, String> {
    let pattern: Arc<[u8]> = (0..args.size + PERIOD)
        .map(|i| (i % PERIOD) as u8)
        .collect();
    let totals = Arc::new(Totals::default());
    for _ in 0..args.conns {
        let tcp = TcpStream::connect(args.addr)
            .await
            .map_err(|error| format!("cannot connect to {}: {error}", args.addr))?;
        tcp.set_nodelay(true)
            .map_err(|error| format!("cannot set TCP_NODELAY: {error}"))?;
        let (read, write) = tcp.into_split();
        let credits = Arc::new(Semaphore::new(args.inflight));
        tokio::spawn(send(write, pattern.clone(), args.size, credits.clone()));
        tokio::spawn(receive(
            read,
            pattern.clone(),
            args.size,
            credits,
            totals.clone(),
        ));
    }

    let server_cpu = |pid| {
        os::cpu_time_of(pid).map_err(|error| format!("cannot read the CPU time of {pid}: {error}"))
    };
    let server_before = args.server_pid.map(server_cpu).transpose()?;
    let own_cpu = || os::own_cpu_time().map_err(|error| format!("getrusage failed: {error}"));
    let own_before = own_cpu()?;
    let messages_before = totals.messages.load(Ordering::Relaxed);
    let start = Instant::now();
    tokio::time::sleep(Duration::from_secs_f64(args.duration)).await;
    let messages = totals.messages.load(Ordering::Relaxed) - messages_before;
    let wall = start.elapsed().as_secs_f64();
    let own = own_cpu()?.saturating_sub(own_before).as_secs_f64();
    let server = match (args.server_pid, server_before) {
        (Some(pid), Some(before)) => Some(server_cpu(pid)?.saturating_sub(before).as_secs_f64()),
        _ => None,
    };
    let bytes = messages * args.size as u64;
    Ok(json!({
        "mode": "tcp-echo",
        "addr": args.addr.to_string(),
        "conns": args.conns,
        "size": args.size,
        "inflight": args.inflight,
        "messages": messages,
        "bytes": bytes,
        "messages_per_s": messages as f64 / wall,
        "mb_per_s": bytes as f64 / wall / 1e6,
        "latency_us": null,
        "verify_errors": totals.verify_errors.load(Ordering::Relaxed),
        "connection_errors": totals.connection_errors.load(Ordering::Relaxed),
        "cpu": {
            "wall_s": wall,
            "load_cpu_s": own,
            "load_cores": 1,
            "load_cpu_fraction": own / wall,
            "load_saturated": own / wall >= 0.9,
            "server_cpu_s": server,
        },
    }))
}

/// The bytes of message `seq`.
fn message(pattern: &[u8], size: usize, seq: u64) -> &[u8] {
    let start = (seq % PERIOD as u64) as usize;
    &pattern[start..start + size]
}

/// Sends one message for every credit, as many at once as there are credits.
async fn send(mut write: OwnedWriteHalf, pattern: Arc<[u8]>, size: usize, credits: Arc<Semaphore>) {
    let mut seq = 0;
    let mut batch = Vec::new();
    loop {
        let Ok(first) = credits.acquire().await else {
            return;
        };
        first.forget();
        let mut ready = 1;
        while let Ok(more) = credits.try_acquire() {
            more.forget();
            ready += 1;
        }
        let written = if size < BATCH_BELOW {
            batch.clear();
            for _ in 0..ready {
                batch.extend_from_slice(message(&pattern, size, seq));
                seq += 1;
            }
            write.write_all(&batch).await
        } else {
            let mut written = Ok(());
            for _ in 0..ready {
                written = write.write_all(message(&pattern, size, seq)).await;
                seq += 1;
                if written.is_err() {
                    break;
                }
            }
            written
        };
        if written.is_err() {
            return;
        }
    }
}

/// Compares every echoed byte with what was sent and gives a credit back
/// for every complete message.
async fn receive(
    mut read: OwnedReadHalf,
    pattern: Arc<[u8]>,
    size: usize,
    credits: Arc<Semaphore>,
    totals: Arc<Totals>,
) {
    let mut buffer = vec![0; READ_BUFFER];
    let mut seq = 0;
    let mut offset = 0;
    loop {
        let mut chunk = match read.read(&mut buffer).await {
            Ok(0) | Err(_) => {
                totals.connection_errors.fetch_add(1, Ordering::Relaxed);
                credits.close();
                return;
            }
            Ok(read) => &buffer[..read],
        };
        let mut completed = 0;
        while !chunk.is_empty() {
            let expected = &message(&pattern, size, seq)[offset..];
            let take = expected.len().min(chunk.len());
            if chunk[..take] != expected[..take] {
                totals.verify_errors.fetch_add(1, Ordering::Relaxed);
                credits.close();
                return;
            }
            chunk = &chunk[take..];
            offset += take;
            if offset == size {
                offset = 0;
                seq += 1;
                completed += 1;
            }
        }
        totals.messages.fetch_add(completed, Ordering::Relaxed);
        credits.add_permits(completed as usize);
    }
}
