//! `tether-load hooks`: a gateway's proxy hooks under load, closed loop.
//!
//! - `connect`: each cycle opens a connection, sends Centrifugo's `connect`
//!   without a token (so the gateway asks its connect hook who the client
//!   is), checks that the reply is a connect result, and closes.
//! - `rpc`: each connection connects once, then sends `rpc` commands one
//!   after the other, each answered by the gateway's RPC hook.
//!
//! Reports cycles or calls per second with their latency, and the CPU time
//! of the gateway (`--server-pid`) and of the backend (`--backend-pid`)
//! apart, so that a slow backend is not mistaken for a slow gateway.
//! Closed connections leave `TIME_WAIT`s behind, so connection `i` comes
//! from source address `127.0.0.(1 + i % sources)`.

use std::time::Duration;

use hdrhistogram::Histogram;
use serde_json::{Value, json};
use tether::{ClientConfig, Message, WebSocket};
use tether_load_os as os;
use tokio::{net::TcpStream, time::Instant};

use crate::{
    meter::{CpuMeter, own_cpu_time},
    report::{Cpu, ErrorCounts, HumanTable, Report, latency_histogram, percentiles_us, total},
    sources::{self, connect_from},
    target::Target,
    workers,
};

/// Each worker steps through the source addresses by this much (a prime),
/// so that workers spread over them.
const SOURCE_STRIDE: usize = 97;

/// How long one command's reply (or one handshake) may take.
const REPLY_TIMEOUT: Duration = Duration::from_secs(10);

/// Which hook to load.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
pub(crate) enum Hook {
    /// Connect without a token and close, over and over.
    Connect,
    /// Connected clients calling `rpc`.
    Rpc,
}

/// Options of `tether-load hooks`.
#[derive(Debug, clap::Args)]
pub(crate) struct Args {
    /// The gateway's WebSocket endpoint: `ws://HOST[:PORT]/connection/websocket`.
    #[arg(long, value_parser = Target::parse)]
    url: Target,
    /// The hook to load.
    #[arg(long, value_enum)]
    hook: Hook,
    /// Seconds to run for.
    #[arg(long, default_value = "10", value_parser = crate::parse_seconds)]
    duration: Duration,
    /// Connections working at once.
    #[arg(long, default_value_t = 64)]
    concurrency: usize,
    /// Source addresses to rotate over (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = 64)]
    sources: usize,
    /// The RPC method called.
    #[arg(long, default_value = "sum")]
    method: String,
    /// The RPC call's data (JSON).
    #[arg(long, default_value = r#"{"a":1,"b":2}"#)]
    data: String,
    /// Also report the CPU time of this (gateway) process.
    #[arg(long)]
    server_pid: Option<u32>,
    /// Also report the CPU time of this (backend) process.
    #[arg(long)]
    backend_pid: Option<u32>,
    /// Print one JSON object instead of a table.
    #[arg(long)]
    json: bool,
}

/// Runs `tether-load hooks` and prints its report.
pub(crate) fn run(args: Args) -> Result<(), String> {
    let data: Value =
        serde_json::from_str(&args.data).map_err(|error| format!("--data: {error}"))?;
    let report = workers::runtime()?.block_on(load(&args, data))?;
    report.print(args.json);
    Ok(())
}

async fn load(args: &Args, data: Value) -> Result<HooksReport, String> {
    let sources = args.sources.clamp(1, sources::source_count(&args.url));
    let rpc = json!({"id": 2, "rpc": {"method": args.method, "data": data}}).to_string();
    let meter = CpuMeter::start(args.server_pid, own_cpu_time)?;
    let backend = CpuMeter::start(args.backend_pid, || Duration::ZERO)?;
    let start = Instant::now();
    let deadline = start + args.duration;
    let mut tasks = Vec::new();
    for worker in 0..args.concurrency.max(1) {
        let (url, rpc, hook) = (args.url.clone(), rpc.clone(), args.hook);
        tasks.push(tokio::spawn(async move {
            let mut tally = Tally::default();
            let mut cycle = worker;
            while Instant::now() < deadline {
                // Invariant: `sources` is within source_count, checked above.
                let source = sources::source(&url, cycle % sources).expect("a source");
                cycle += SOURCE_STRIDE;
                let result = match hook {
                    Hook::Connect => connect_cycle(&url, source)
                        .await
                        .map(|took| tally.record(took)),
                    Hook::Rpc => rpc_loop(&url, source, &rpc, deadline, &mut tally).await,
                };
                if let Err(error) = result {
                    *tally.failures.entry(error).or_default() += 1;
                }
            }
            tally
        }));
    }
    let mut tally = Tally::default();
    for task in tasks {
        tally.merge(&task.await.map_err(|error| error.to_string())?);
    }
    let wall = start.elapsed();
    let cpu = meter.stop(wall, os::cores(), own_cpu_time)?;
    let backend_cpu = backend.stop(wall, os::cores(), || Duration::ZERO)?.server;
    Ok(HooksReport {
        target: args.url.to_string(),
        hook: args.hook,
        concurrency: args.concurrency,
        tally,
        cpu,
        backend_cpu,
    })
}

/// Opens a connection from `source`: TCP connect and upgrade.
async fn open(url: &Target, source: std::net::IpAddr) -> Result<WebSocket<TcpStream>, String> {
    let tcp = connect_from(source, url.addr)
        .await
        .map_err(|error| format!("connect: {error}"))?;
    let (ws, _) = tokio::time::timeout(
        REPLY_TIMEOUT,
        tether::client::handshake(tcp, &url.host, &url.path, &ClientConfig::default()),
    )
    .await
    .map_err(|_| "upgrade: timed out".to_owned())?
    .map_err(|error| format!("upgrade: {error}"))?;
    Ok(ws)
}

/// Sends one command (id `id`) and waits for its reply, which must hold a
/// `method` result: a reply with an error, or none, is an error.
async fn call(
    ws: &mut WebSocket<TcpStream>,
    frame: &str,
    id: u64,
    method: &str,
) -> Result<(), String> {
    ws.send(Message::text(frame.to_owned()))
        .await
        .map_err(|error| format!("{method}: send: {error}"))?;
    let reply = async {
        loop {
            match ws.recv().await {
                Some(Ok(Message::Text(text))) => {
                    for line in text.as_str().lines() {
                        let value: Value = serde_json::from_str(line)
                            .map_err(|_| format!("{method}: not JSON"))?;
                        if value["id"] != id {
                            continue;
                        }
                        if let Some(error) = value.get("error") {
                            return Err(format!("{method}: error {}", error["code"]));
                        }
                        return if value.get(method).is_some() {
                            Ok(())
                        } else {
                            Err(format!("{method}: an unexpected reply"))
                        };
                    }
                }
                Some(Ok(Message::Close(frame))) => {
                    return Err(format!(
                        "{method}: closed with {}",
                        frame.map_or(1005, |frame| frame.code.0)
                    ));
                }
                Some(Ok(_)) => {}
                Some(Err(error)) => return Err(format!("{method}: {error}")),
                None => return Err(format!("{method}: the connection ended")),
            }
        }
    };
    tokio::time::timeout(REPLY_TIMEOUT, reply)
        .await
        .map_err(|_| format!("{method}: no reply"))?
}

const CONNECT: &str = r#"{"id":1,"connect":{}}"#;

/// Connect (through the connect hook) and close; the cycle's time.
async fn connect_cycle(url: &Target, source: std::net::IpAddr) -> Result<Duration, String> {
    let started = std::time::Instant::now();
    let mut ws = open(url, source).await?;
    call(&mut ws, CONNECT, 1, "connect").await?;
    let _ = tokio::time::timeout(REPLY_TIMEOUT, ws.close(tether::CloseCode::NORMAL, "")).await;
    Ok(started.elapsed())
}

/// Connects once, then calls `rpc` until `deadline`, recording each call
/// in `tally`; the first failure ends the connection.
async fn rpc_loop(
    url: &Target,
    source: std::net::IpAddr,
    rpc: &str,
    deadline: Instant,
    tally: &mut Tally,
) -> Result<(), String> {
    let mut ws = open(url, source).await?;
    call(&mut ws, CONNECT, 1, "connect").await?;
    while Instant::now() < deadline {
        let started = std::time::Instant::now();
        call(&mut ws, rpc, 2, "rpc").await?;
        tally.record(started.elapsed());
    }
    let _ = tokio::time::timeout(REPLY_TIMEOUT, ws.close(tether::CloseCode::NORMAL, "")).await;
    Ok(())
}

/// What the workers did.
#[derive(Debug)]
struct Tally {
    done: u64,
    failures: ErrorCounts,
    latency: Histogram<u64>,
}

impl Default for Tally {
    fn default() -> Self {
        Self {
            done: 0,
            failures: ErrorCounts::new(),
            latency: latency_histogram(),
        }
    }
}

impl Tally {
    fn record(&mut self, took: Duration) {
        self.done += 1;
        self.latency.saturating_record(took.as_nanos() as u64);
    }

    fn merge(&mut self, other: &Self) {
        self.done += other.done;
        for (error, count) in &other.failures {
            *self.failures.entry(error.clone()).or_default() += count;
        }
        // Invariant: both have the same bounds.
        self.latency.add(&other.latency).expect("same bounds");
    }
}

/// What `tether-load hooks` measured.
#[derive(Debug)]
struct HooksReport {
    target: String,
    hook: Hook,
    concurrency: usize,
    tally: Tally,
    cpu: Cpu,
    /// The backend's user + system time, given `--backend-pid`.
    backend_cpu: Option<Duration>,
}

impl HooksReport {
    fn per_second(&self) -> f64 {
        self.tally.done as f64 / self.cpu.wall.as_secs_f64().max(1e-9)
    }

    /// CPU time per cycle or call, in µs.
    fn per_call_us(&self, cpu: Option<Duration>) -> Option<f64> {
        cpu.map(|cpu| cpu.as_secs_f64() * 1e6 / self.tally.done.max(1) as f64)
    }

    fn what(&self) -> &'static str {
        match self.hook {
            Hook::Connect => "connects",
            Hook::Rpc => "rpc calls",
        }
    }
}

impl Report for HooksReport {
    fn to_json(&self) -> Value {
        json!({
            "mode": "hooks",
            "hook": match self.hook { Hook::Connect => "connect", Hook::Rpc => "rpc" },
            "url": self.target,
            "concurrency": self.concurrency,
            "done": self.tally.done,
            "failed": total(&self.tally.failures),
            "failures": self.tally.failures,
            "per_s": self.per_second(),
            "latency_us": percentiles_us(&self.tally.latency),
            "server_cpu_us_per_call": self.per_call_us(self.cpu.server),
            "backend_cpu_s": self.backend_cpu.map(|cpu| cpu.as_secs_f64()),
            "backend_cpu_us_per_call": self.per_call_us(self.backend_cpu),
            "cpu": self.cpu.to_json(),
        })
    }

    fn table(&self) -> String {
        let mut table = HumanTable::new(format!(
            "tether-load hooks  {}  {}, {} connections",
            self.target,
            self.what(),
            self.concurrency
        ));
        table.row(
            self.what(),
            format!(
                "{:>12.0}/s  {} in {:.2} s, {} failed",
                self.per_second(),
                self.tally.done,
                self.cpu.wall.as_secs_f64(),
                total(&self.tally.failures)
            ),
        );
        table.latency("latency", &self.tally.latency);
        table.errors("failed", &self.tally.failures);
        for (label, cpu) in [
            ("gateway CPU", self.cpu.server),
            ("backend CPU", self.backend_cpu),
        ] {
            if let Some(per_call) = self.per_call_us(cpu) {
                table.row(label, format!("{per_call:>12.1} µs each"));
            }
        }
        self.cpu.add_rows(&mut table);
        table.render(&[])
    }
}

#[cfg(test)]
mod tests {
    use tether::ServerConfig;
    use tokio::net::TcpListener;

    use super::*;

    /// A gateway stand-in: answers `connect`, then three `rpc` calls per
    /// connection, then an error (100) to every further call.
    async fn scripted_gateway() -> std::net::SocketAddr {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            loop {
                let (tcp, _) = listener.accept().await.unwrap();
                tokio::spawn(async move {
                    let (mut ws, _) = tether::accept(tcp, &ServerConfig::default()).await.unwrap();
                    let mut calls = 0;
                    while let Some(Ok(Message::Text(text))) = ws.recv().await {
                        let command: Value = serde_json::from_str(text.as_str()).unwrap();
                        let reply = if command.get("connect").is_some() {
                            json!({"id": 1, "connect": {"client": "c"}})
                        } else if calls < 3 {
                            calls += 1;
                            json!({"id": 2, "rpc": {"data": {"sum": 3}}})
                        } else {
                            json!({"id": 2, "error": {"code": 100, "message": "internal server error"}})
                        };
                        ws.send(Message::text(reply.to_string())).await.unwrap();
                    }
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn rpc_calls_are_counted_and_error_replies_are_failures() {
        let addr = scripted_gateway().await;
        let args = Args {
            url: Target::parse(&format!("ws://{addr}/connection/websocket")).unwrap(),
            hook: Hook::Rpc,
            duration: Duration::from_millis(200),
            concurrency: 1,
            sources: 1,
            method: "sum".into(),
            data: "{}".into(),
            server_pid: None,
            backend_pid: None,
            json: true,
        };
        let report = load(&args, json!({})).await.unwrap();
        // Each connection makes three calls, then fails and reconnects (the
        // last one may be cut short by the deadline).
        let failed = report.tally.failures["rpc: error 100"];
        assert!(failed >= 1, "{:?}", report.tally.failures);
        let done = report.tally.done;
        assert!(
            (3 * failed..=3 * (failed + 1)).contains(&done),
            "{done} calls, {failed} failures"
        );
        assert_eq!(report.to_json()["hook"], "rpc");
    }
}
