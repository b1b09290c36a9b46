//! `tether-load handshake`: connection churn. Each cycle opens a
//! connection (TCP connect plus upgrade), optionally exchanges one message
//! with an echo server, and closes cleanly; cycles start at a fixed rate, or
//! as fast as `--concurrency` allows with `--rate 0`.
//!
//! Every closed connection leaves a TCP `TIME_WAIT` behind for a minute, so
//! one source address would run out of ports: cycle `i` comes from source
//! address `127.0.0.(1 + i % sources)`.

mod cycle;

use std::{
    sync::{Arc, Mutex, PoisonError},
    time::Duration,
};

use hdrhistogram::Histogram;
use indicatif::ProgressBar;
use serde_json::{Value, json};
use tether_load_os as os;
use tether_proto::handshake::client::ClientRequest;
use tokio::{
    sync::Semaphore,
    time::{Instant, sleep_until},
};

use self::cycle::{Churn, CycleResult};
use crate::{
    meter::{CpuMeter, own_cpu_time},
    progress,
    report::{
        Cpu, ErrorCounts, HumanTable, Report, counted, latency_histogram, percentiles_us, total,
    },
    sources,
    target::Target,
    workers,
};

/// Options of `tether-load handshake`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// Server to connect to: `ws://HOST[:PORT][/PATH]`, HOST a loopback address.
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// Cycles started per second; 0: as fast as --concurrency allows.
    #[arg(long, default_value_t = 1000.0)]
    rate: f64,
    /// Seconds to start cycles for.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    duration: Duration,
    /// Cycles in flight at once, at most.
    #[arg(long, default_value_t = sources::DEFAULT_CONCURRENCY)]
    concurrency: usize,
    /// Source addresses to rotate over (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// Exchange one binary message with the server (an echo server) before
    /// closing.
    #[arg(long)]
    message: bool,
    /// Also report the CPU time of this (server) process.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `tether-load handshake` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    if !(args.rate.is_finite() && args.rate >= 0.0) {
        return Err("--rate must be 0 or a positive number of cycles per second".into());
    }
    let sources = args.sources.clamp(1, sources::source_count(&args.url));
    // On one core, a second runtime thread only adds wake-ups and context
    // switches to every cycle.
    let runtime = if os::cores() == 1 {
        tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .map_err(|error| format!("cannot start the runtime: {error}"))?
    } else {
        workers::runtime()?
    };
    let report = runtime.block_on(churn(&args, sources))?;
    report.print(args.json);
    Ok(())
}

async fn churn(args: &Args, sources: usize) -> Result<HandshakeReport, String> {
    let churn = Arc::new(Churn {
        addr: args.url.addr,
        request: ClientRequest::new(&args.url.host, &args.url.path),
        message: args.message,
    });
    let slots = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let tally = Arc::new(Mutex::new(Tally::default()));
    let meter = CpuMeter::start(args.server_pid, own_cpu_time)?;
    let start = Instant::now();
    let deadline = start + args.duration;
    let period = (args.rate > 0.0).then(|| Duration::from_secs_f64(1.0 / args.rate));
    let mut progress = Progress::new(start);
    let mut started: u64 = 0;
    loop {
        if let Some(period) = period {
            let at = start + period.mul_f64(started as f64);
            if at >= deadline {
                break;
            }
            sleep_until(at).await;
        } else if Instant::now() >= deadline {
            break;
        }
        // Invariant: the semaphore is never closed.
        let slot = slots.clone().acquire_owned().await.expect("never closed");
        // Invariant: `sources` is within source_count, checked above.
        let source = sources::source(&args.url, started as usize % sources).expect("a source");
        let (churn, shared) = (churn.clone(), tally.clone());
        tokio::spawn(async move {
            let result = churn.cycle(source).await;
            shared
                .lock()
                .unwrap_or_else(PoisonError::into_inner)
                .add(result);
            drop(slot);
        });
        started += 1;
        progress.show(&tally);
    }
    // Wait for the cycles in flight.
    let _all = slots
        .acquire_many(args.concurrency.max(1) as u32)
        .await
        .expect("never closed");
    progress.done(&tally);
    let cpu = meter.stop(start.elapsed(), os::cores(), own_cpu_time)?;
    let tally = std::mem::take(&mut *tally.lock().unwrap_or_else(PoisonError::into_inner));
    Ok(HandshakeReport {
        target: args.url.to_string(),
        rate: args.rate,
        concurrency: args.concurrency,
        sources,
        message: args.message,
        started,
        tally,
        cpu,
    })
}

/// Cycles done so far.
#[derive(Debug)]
struct Tally {
    succeeded: u64,
    failures: ErrorCounts,
    /// TCP connect plus upgrade, in nanoseconds.
    handshake: Histogram<u64>,
    /// Connect to closed, in nanoseconds.
    cycle: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            succeeded: 0,
            failures: ErrorCounts::new(),
            handshake: latency_histogram(),
            cycle: latency_histogram(),
        }
    }
}

impl Tally {
    fn add(&mut self, result: CycleResult) {
        match result {
            Ok((handshake, cycle)) => {
                self.succeeded += 1;
                self.handshake
                    .saturating_record(handshake.as_nanos() as u64);
                self.cycle.saturating_record(cycle.as_nanos() as u64);
            }
            Err(error) => *self.failures.entry(error).or_default() += 1,
        }
    }

    fn done(&self) -> u64 {
        self.succeeded + total(&self.failures)
    }
}

/// A once-a-second progress line on stderr, if it is a terminal.
struct Progress {
    line: ProgressBar,
    /// Whether the line is drawn at all (read once: the check is a system
    /// call, and `show` runs once per cycle).
    on: bool,
    next: Instant,
    start: Instant,
    last: u64,
}

impl Progress {
    fn new(start: Instant) -> Self {
        let line = progress::line(true, 0, progress::MESSAGE);
        Self {
            on: !line.is_hidden(),
            line,
            next: start + Duration::from_secs(1),
            start,
            last: 0,
        }
    }

    fn show(&mut self, tally: &Mutex<Tally>) {
        if !self.on || Instant::now() < self.next {
            return;
        }
        self.next += Duration::from_secs(1);
        let tally = tally.lock().unwrap_or_else(PoisonError::into_inner);
        self.line.set_message(format!(
            "{:>6.1} s  {:>10} cycles  ~{:>8}/s  {} failed",
            self.start.elapsed().as_secs_f64(),
            tally.done(),
            tally.done() - self.last,
            total(&tally.failures)
        ));
        self.last = tally.done();
    }

    fn done(&mut self, tally: &Mutex<Tally>) {
        if self.on {
            self.next = Instant::now();
            self.show(tally);
            self.line.finish();
        }
    }
}

/// What `tether-load handshake` measured.
#[derive(Debug)]
struct HandshakeReport {
    target: String,
    rate: f64,
    concurrency: usize,
    sources: usize,
    message: bool,
    started: u64,
    tally: Tally,
    cpu: Cpu,
}

impl HandshakeReport {
    fn per_second(&self, count: u64) -> f64 {
        count as f64 / self.cpu.wall.as_secs_f64().max(1e-9)
    }
}

impl Report for HandshakeReport {
    fn to_json(&self) -> Value {
        json!({
            "mode": "handshake",
            "url": self.target,
            "rate": self.rate,
            "concurrency": self.concurrency,
            "source_addresses": self.sources,
            "message": self.message,
            "started": self.started,
            "succeeded": self.tally.succeeded,
            "failed": total(&self.tally.failures),
            "failures": self.tally.failures,
            "handshakes_per_s": self.per_second(self.tally.succeeded),
            "handshake_latency_us": percentiles_us(&self.tally.handshake),
            "cycle_latency_us": percentiles_us(&self.tally.cycle),
            "cpu": self.cpu.to_json(),
        })
    }

    fn table(&self) -> String {
        let rate = if self.rate > 0.0 {
            format!("{} /s", self.rate)
        } else {
            "as fast as possible".to_owned()
        };
        let mut table = HumanTable::new(format!(
            "tether-load handshake  {}  {rate}, {} in flight at most, {}{}",
            self.target,
            self.concurrency,
            counted(self.sources, "source address", "es"),
            if self.message { ", one echo each" } else { "" },
        ));
        table.row(
            "cycles",
            format!(
                "{:>12}   succeeded, {} failed, of {} started",
                self.tally.succeeded,
                total(&self.tally.failures),
                self.started
            ),
        );
        table.row(
            "handshakes",
            format!(
                "{:>12.0}/s  in {:.2} s",
                self.per_second(self.tally.succeeded),
                self.cpu.wall.as_secs_f64()
            ),
        );
        table.latency("hs latency", &self.tally.handshake);
        table.latency("cycle", &self.tally.cycle);
        table.errors("failed", &self.tally.failures);
        self.cpu.add_rows(&mut table);
        table.render(&[])
    }
}

#[cfg(test)]
mod tests {
    use tokio::{
        io::{AsyncReadExt as _, AsyncWriteExt as _},
        net::TcpListener,
    };

    use super::*;

    fn args(url: &str, message: bool) -> Args {
        Args {
            url: Target::parse(url).unwrap(),
            rate: 200.0,
            duration: Duration::from_millis(100),
            concurrency: 4,
            sources: 2,
            message,
            server_pid: None,
            json: true,
        }
    }

    #[tokio::test]
    async fn every_cycle_against_an_echo_server_succeeds() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let config = tether::ServerConfig::default();
                    let (mut ws, _) = tether::accept(tcp, &config).await.unwrap();
                    while let Some(Ok(message)) = ws.recv().await {
                        if matches!(message, tether::Message::Binary(_)) {
                            ws.send(message).await.unwrap();
                        }
                    }
                });
            }
        });
        let report = churn(&args(&url, true), 2).await.unwrap();
        assert!(report.started >= 10, "{}", report.started);
        assert_eq!(report.tally.succeeded, report.started);
        assert_eq!(report.to_json()["failed"], 0);
        assert_eq!(report.tally.cycle.len(), report.started);
    }

    #[tokio::test]
    async fn a_wrong_accept_key_is_counted_as_a_failure() {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let url = format!("ws://{}/", listener.local_addr().unwrap());
        tokio::spawn(async move {
            loop {
                let (mut tcp, _) = listener.accept().await.unwrap();
                let mut head = Vec::new();
                while !head.ends_with(b"\r\n\r\n") {
                    head.push(tcp.read_u8().await.unwrap());
                }
                // The accept key of the RFC's sample key, not of this
                // request's.
                let response = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n\
                    Connection: Upgrade\r\nSec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\r\n";
                tcp.write_all(response.as_bytes()).await.unwrap();
            }
        });
        let report = churn(&args(&url, false), 2).await.unwrap();
        assert!(report.started >= 10, "{}", report.started);
        assert_eq!(report.tally.succeeded, 0);
        let failures = &report.to_json()["failures"];
        assert_eq!(
            failures["upgrade: Sec-WebSocket-Accept is missing or does not match"], report.started,
            "{failures}"
        );
    }

    #[test]
    fn tally_counts_failures_by_kind() {
        let mut tally = Tally::default();
        tally.add(Ok((Duration::from_micros(100), Duration::from_micros(300))));
        tally.add(Err("connect: refused".into()));
        tally.add(Err("connect: refused".into()));
        tally.add(Err("close: timed out".into()));
        assert_eq!(tally.succeeded, 1);
        assert_eq!(tally.done(), 4);
        assert_eq!(tally.failures["connect: refused"], 2);
        assert_eq!(tally.handshake.len(), 1);
    }
}
