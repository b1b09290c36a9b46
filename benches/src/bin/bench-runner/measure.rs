//! One measurement: start a server pinned to one core, point the load
//! generator (pinned to another) at it, read its JSON report, stop the
//! server.

use std::{
    collections::BTreeMap,
    io::Read,
    net::{TcpListener, TcpStream},
    path::PathBuf,
    process::{Child, Command, Stdio},
    thread,
    time::{Duration, Instant},
};

use serde_json::Value;

use crate::scenario::{GATEWAY_API_KEY, IdleClient, Load, Publisher, Scenario, Server};

/// How long a server may take to start listening.
const START_TIMEOUT: Duration = Duration::from_secs(10);

/// Time a load run may take beyond what it was asked to measure (opening and
/// closing connections).
const LOAD_GRACE: Duration = Duration::from_secs(120);

/// What every measurement shares.
#[derive(Debug)]
pub(crate) struct Settings {
    /// Where `tetherd`, `tether-load`, the peer servers and `tcp-load` are.
    pub(crate) bin_dir: PathBuf,
    pub(crate) duration: f64,
    pub(crate) hold: f64,
    pub(crate) server_core: usize,
    pub(crate) load_core: usize,
}

impl Settings {
    /// Settings whose programs sit next to this one.
    pub(crate) fn new(
        duration: f64,
        hold: f64,
        server_core: usize,
        load_core: usize,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|error| format!("cannot find this program: {error}"))?;
        let bin_dir = exe
            .parent()
            .ok_or("this program has no directory")?
            .to_path_buf();
        if server_core == load_core {
            return Err("--server-core and --load-core must differ".into());
        }
        Ok(Self {
            bin_dir,
            duration,
            hold,
            server_core,
            load_core,
        })
    }
}

/// The outcome of one run of one scenario against one server.
#[derive(Debug)]
pub(crate) struct Sample {
    pub(crate) round: usize,
    pub(crate) scenario: usize,
    pub(crate) server: usize,
    pub(crate) result: Result<Measured, String>,
}

/// A figure the tables show.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub(crate) enum Metric {
    MessagesPerSecond,
    /// Payload megabytes per second, each way.
    MegabytesPerSecond,
    /// Server CPU time (user + system) per echoed message, or per
    /// connection cycle in the handshake scenario, in microseconds.
    ServerCpuEach,
    /// The server's CPU time over wall time (1.0: one core busy). Well
    /// below 1 with the load generator also below 1, something else held
    /// the cores.
    ServerCpu,
    /// The load generator's CPU time over wall time.
    LoadCpu,
    /// 99th percentile send-to-echo (or publish-to-subscriber) latency, in
    /// microseconds.
    LatencyP99,
    /// Growth of the server's resident memory per idle connection, bytes.
    RssPerConnection,
    /// Connections opened per second while opening the idle ones.
    OpenRate,
    /// Connection cycles (connect, upgrade, close) per second.
    HandshakesPerSecond,
    /// Publications received by subscribers per second.
    DeliveriesPerSecond,
    /// Publications made per second (the API may answer slower than asked).
    PublicationsPerSecond,
    /// Median publish-to-subscriber latency, in microseconds.
    LatencyP50,
    /// Median, over publications, of the time from publishing one to its
    /// last subscriber having it, in microseconds.
    LastSubscriberP50,
    /// The same, 99th percentile.
    LastSubscriberP99,
}

/// What one run measured, and what looked wrong in it.
#[derive(Debug, Default)]
pub(crate) struct Measured {
    pub(crate) values: BTreeMap<Metric, f64>,
    pub(crate) warnings: Vec<String>,
}

impl Measured {
    /// Records `value` as `metric`, if it is a number.
    fn put(&mut self, metric: Metric, value: &Value) {
        if let Some(value) = value.as_f64() {
            self.values.insert(metric, value);
        }
    }

    /// A warning for each of `keys` whose count in `report` is not zero,
    /// such as `3 verify errors`.
    fn warn_counts(&mut self, report: &Value, keys: &[&str]) {
        for key in keys {
            let count = report[key].as_u64().unwrap_or(0);
            if count > 0 {
                self.warnings
                    .push(format!("{count} {}", key.replace('_', " ")));
            }
        }
    }

    /// A short progress line.
    pub(crate) fn one_line(&self) -> String {
        let mut parts: Vec<String> = self
            .values
            .iter()
            .map(|(metric, value)| format!("{metric:?} {value:.2}"))
            .collect();
        parts.extend(
            self.warnings
                .iter()
                .map(|warning| format!("WARNING {warning}")),
        );
        parts.join("  ")
    }
}

/// Runs `scenario` against `server` once.
pub(crate) fn measure(
    settings: &Settings,
    server: &Server,
    scenario: &Scenario,
) -> Result<Measured, String> {
    let addr = free_address()?;
    // Several runtime threads get the load generator's core too (the machine
    // has two): the load generator then shares a core with the server, so
    // server CPU per message, not msg/s, shows how the server scales.
    let cores: &[usize] = if server.threads > 1 {
        &[settings.server_core, settings.load_core]
    } else {
        &[settings.server_core]
    };
    let mut command = if server.on_path {
        taskset(cores, server.program)
    } else {
        pinned(settings, cores, server.program)
    };
    command
        .args(server.args)
        .args(["--listen", &addr])
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null());
    let child = command
        .spawn()
        .map_err(|error| format!("cannot start {}: {error}", server.program))?;
    let mut server_process = Running(child);
    wait_until_listening(&addr, &mut server_process.0)?;
    let pid = server_process.0.id().to_string();

    let mut load = load_command(settings, server.websocket, scenario.load, &addr);
    load.args(["--server-pid", &pid]);
    let limit = Duration::from_secs_f64(settings.duration.max(settings.hold)) + LOAD_GRACE;
    let report = run_to_json(load, "the load generator", limit)?;
    match scenario.load {
        Load::Echo { .. } => echo_figures(&report),
        Load::Idle { .. } => idle_figures(&report),
        Load::Handshake => handshake_figures(&report),
        Load::Broadcast { .. } => broadcast_figures(&report),
    }
}

/// The load generator's command line, pinned to the load core.
fn load_command(settings: &Settings, websocket: bool, load: Load, addr: &str) -> Command {
    let url = format!("ws://{addr}");
    let duration = settings.duration.to_string();
    let load_core = &[settings.load_core];
    let mut command = match load {
        Load::Idle {
            client: IdleClient::Node,
            ..
        } => taskset(load_core, "node"),
        _ if websocket => pinned(settings, load_core, "tether-load"),
        _ => pinned(settings, load_core, "tcp-load"),
    };
    match load {
        Load::Echo {
            conns,
            inflight,
            size,
        } => {
            if websocket {
                command.args(["echo", "--url", &url, "--threads", "1", "--json"]);
            } else {
                command.args(["--addr", addr]);
            }
            command
                .args(["--conns", &conns.to_string()])
                .args(["--inflight", &inflight.to_string()])
                .args(["--size", &size.to_string()])
                .args(["--duration", &duration]);
        }
        Load::Idle {
            conns,
            client: IdleClient::TetherLoad,
        } => {
            command
                .args(["idle", "--url", &url, "--json"])
                .args(["--conns", &conns.to_string()])
                .args(["--hold", &settings.hold.to_string()]);
        }
        Load::Idle {
            conns,
            client: IdleClient::Node,
        } => {
            command
                .args([
                    "--experimental-websocket",
                    concat!(env!("CARGO_MANIFEST_DIR"), "/peers/idle-client.cjs"),
                ])
                .args(["--url", &format!("{url}/")])
                .args(["--conns", &conns.to_string()])
                .args(["--hold", &settings.hold.to_string()]);
        }
        Load::Handshake => {
            command.args(["handshake", "--url", &url, "--json"]).args([
                "--rate",
                "0",
                "--duration",
                &duration,
            ]);
        }
        Load::Broadcast {
            subscribers,
            rate,
            publisher,
        } => {
            command
                .args(["broadcast", "--json"])
                .args(["--url", &format!("{url}/connection/websocket")])
                .args(["--api-key", GATEWAY_API_KEY])
                .args(["--subscribers", &subscribers.to_string()])
                .args(["--rate", &rate.to_string()])
                .args(["--duration", &duration]);
            match publisher {
                Publisher::Api(connections) => {
                    command.args(["--via", "api", "--publishers", &connections.to_string()])
                }
                Publisher::WebSocket => command.args(["--via", "websocket"]),
            };
        }
    }
    command
}

/// `taskset -c CORE,… BIN_DIR/PROGRAM`.
pub(crate) fn pinned(settings: &Settings, cores: &[usize], program: &str) -> Command {
    taskset(cores, settings.bin_dir.join(program))
}

/// `taskset -c CORE,… PROGRAM` (a path, or a name looked up on the `PATH`).
fn taskset(cores: &[usize], program: impl AsRef<std::ffi::OsStr>) -> Command {
    let cores: Vec<String> = cores.iter().map(usize::to_string).collect();
    let mut command = Command::new("taskset");
    command.args(["-c", &cores.join(",")]).arg(program);
    command
}

/// A loopback address with a port that was free a moment ago.
fn free_address() -> Result<String, String> {
    let listener =
        TcpListener::bind("127.0.0.1:0").map_err(|error| format!("no free port: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("no free port: {error}"))?;
    Ok(addr.to_string())
}

/// Waits until the server accepts connections, or fails if it exits.
fn wait_until_listening(addr: &str, child: &mut Child) -> Result<(), String> {
    let deadline = Instant::now() + START_TIMEOUT;
    loop {
        if TcpStream::connect(addr).is_ok() {
            return Ok(());
        }
        if let Ok(Some(status)) = child.try_wait() {
            return Err(format!("the server exited at start ({status})"));
        }
        if Instant::now() >= deadline {
            return Err(format!(
                "the server did not listen on {addr} within {START_TIMEOUT:?}"
            ));
        }
        thread::sleep(Duration::from_millis(20));
    }
}

/// Runs `command` (`what` names it in errors: "the load generator") and
/// parses the JSON object it prints.
pub(crate) fn run_to_json(
    mut command: Command,
    what: &str,
    limit: Duration,
) -> Result<Value, String> {
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .map_err(|error| format!("cannot start {what}: {error}"))?;
    let stdout = drain(child.stdout.take());
    let stderr = drain(child.stderr.take());
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(50)),
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("{what} took longer than {limit:?}"));
            }
            Err(error) => return Err(format!("cannot wait for {what}: {error}")),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    if !status.success() {
        return Err(format!("{what} failed ({status}): {}", stderr.trim()));
    }
    serde_json::from_str(stdout.trim())
        .map_err(|error| format!("unreadable report from {what} ({error}): {}", stdout.trim()))
}

/// Reads a pipe to its end on a thread of its own, so that a full pipe never
/// stalls the child.
fn drain(pipe: Option<impl Read + Send + 'static>) -> thread::JoinHandle<String> {
    thread::spawn(move || {
        let mut text = String::new();
        if let Some(mut pipe) = pipe {
            let _ = pipe.read_to_string(&mut text);
        }
        text
    })
}

fn echo_figures(report: &Value) -> Result<Measured, String> {
    let messages = report["messages"].as_f64().unwrap_or(0.0);
    if messages == 0.0 {
        return Err(format!("no message was echoed: {report}"));
    }
    let mut measured = Measured::default();
    measured.put(Metric::MessagesPerSecond, &report["messages_per_s"]);
    measured.put(Metric::MegabytesPerSecond, &report["mb_per_s"]);
    measured.put(Metric::LatencyP99, &report["latency_us"]["p99"]);
    cpu_figures(report, messages, &mut measured);
    measured.warn_counts(
        report,
        &["verify_errors", "connect_errors", "connection_errors"],
    );
    Ok(measured)
}

fn idle_figures(report: &Value) -> Result<Measured, String> {
    let mut measured = Measured::default();
    let rss = report["server"]["rss_per_conn"]
        .as_f64()
        .ok_or_else(|| format!("no server memory in the report: {report}"))?;
    measured.values.insert(Metric::RssPerConnection, rss);
    measured.put(Metric::OpenRate, &report["handshakes_per_s"]);
    measured.warn_counts(report, &["failed", "dropped", "closed_unclean"]);
    Ok(measured)
}

fn handshake_figures(report: &Value) -> Result<Measured, String> {
    let succeeded = report["succeeded"].as_f64().unwrap_or(0.0);
    if succeeded == 0.0 {
        return Err(format!("no handshake succeeded: {report}"));
    }
    let mut measured = Measured::default();
    measured.put(Metric::HandshakesPerSecond, &report["handshakes_per_s"]);
    measured.put(Metric::LatencyP99, &report["handshake_latency_us"]["p99"]);
    cpu_figures(report, succeeded, &mut measured);
    measured.warn_counts(report, &["failed"]);
    Ok(measured)
}

fn broadcast_figures(report: &Value) -> Result<Measured, String> {
    let deliveries = report["deliveries"].as_f64().unwrap_or(0.0);
    if deliveries == 0.0 {
        return Err(format!("no publication was delivered: {report}"));
    }
    let mut measured = Measured::default();
    measured.put(Metric::DeliveriesPerSecond, &report["deliveries_per_s"]);
    measured.put(Metric::PublicationsPerSecond, &report["publish_rate"]);
    measured.put(Metric::LatencyP50, &report["delivery_latency_us"]["p50"]);
    measured.put(Metric::LatencyP99, &report["delivery_latency_us"]["p99"]);
    let last = &report["last_subscriber_latency_us"];
    measured.put(Metric::LastSubscriberP50, &last["p50"]);
    measured.put(Metric::LastSubscriberP99, &last["p99"]);
    cpu_figures(report, deliveries, &mut measured);
    measured.warn_counts(
        report,
        &[
            "subscribe_failed",
            "lost",
            "duplicated",
            "unexpected",
            "dropped",
        ],
    );
    // With several publisher connections, neighbouring publications may
    // overtake each other before the gateway sees them: no fault of its.
    if report["publishers"].as_u64() == Some(1) {
        measured.warn_counts(report, &["reordered"]);
    }
    let asked = report["rate"].as_f64().unwrap_or(0.0);
    let made = report["publish_rate"].as_f64().unwrap_or(0.0);
    if made < asked * 0.95 {
        measured.warnings.push(format!(
            "published {made:.1}/s of {asked:.0}/s asked (the API answered slower)"
        ));
    }
    Ok(measured)
}

/// Server CPU per message (or cycle), CPU shares, and a warning when the
/// load generator may have set the pace.
fn cpu_figures(report: &Value, done: f64, measured: &mut Measured) {
    let cpu = &report["cpu"];
    if let Some(load) = cpu["load_cpu_fraction"].as_f64() {
        measured.values.insert(Metric::LoadCpu, load);
    }
    if let Some(server_cpu) = cpu["server_cpu_s"].as_f64() {
        measured
            .values
            .insert(Metric::ServerCpuEach, server_cpu * 1e6 / done);
        if let Some(wall) = cpu["wall_s"].as_f64().filter(|&wall| wall > 0.0) {
            measured.values.insert(Metric::ServerCpu, server_cpu / wall);
        }
    }
    if cpu["load_saturated"].as_bool() == Some(true) {
        measured.warnings.push("load generator saturated".into());
    }
}

/// A child process that is killed when this value is dropped.
struct Running(Child);

impl Drop for Running {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}
