//! Runs `broadcast`, `handshake` and `overhead` briefly against a real
//! `tetherd` (the gateway or its echo server) and checks that the counts
//! add up. No timing is asserted.
//!
//! The binary is built with `cargo build -p tetherd` (same profile as this
//! test, once per test run) unless `TETHERD` names one.

use std::{
    io::{BufRead, BufReader},
    net::SocketAddr,
    path::PathBuf,
    process::{Child, Command, Stdio},
    sync::{OnceLock, mpsc},
    time::Duration,
};

use serde_json::Value;

const API_KEY: &str = "tether-load-test-key-0123456789";

/// The `tetherd` binary: `$TETHERD`, or built by cargo for this test's profile.
fn tetherd_binary() -> &'static PathBuf {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| {
        if let Some(path) = std::env::var_os("TETHERD") {
            return PathBuf::from(path);
        }
        let cargo = std::env::var_os("CARGO").unwrap_or_else(|| env!("CARGO").into());
        let mut command = Command::new(cargo);
        command.current_dir(env!("CARGO_MANIFEST_DIR")).args([
            "build",
            "--package",
            "tetherd",
            "--bin",
            "tetherd",
            "--message-format=json-render-diagnostics",
        ]);
        if !cfg!(debug_assertions) {
            command.arg("--release");
        }
        let output = command.output().expect("run cargo");
        assert!(
            output.status.success(),
            "cargo build -p tetherd failed:\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        // cargo reports where it put the binary (CARGO_TARGET_DIR, profile).
        String::from_utf8_lossy(&output.stdout)
            .lines()
            .filter_map(|line| serde_json::from_str::<Value>(line).ok())
            .filter(|message| {
                message["reason"] == "compiler-artifact" && message["target"]["name"] == "tetherd"
            })
            .find_map(|message| message["executable"].as_str().map(PathBuf::from))
            .expect("cargo reported the tetherd executable")
    })
}

/// A running `tetherd` on a loopback port it picked itself; killed on drop.
struct Tetherd {
    child: Child,
    addr: SocketAddr,
}

impl Tetherd {
    /// `tetherd echo`.
    fn echo() -> Self {
        Self::start(&["echo", "--listen", "127.0.0.1:0"])
    }

    /// The gateway, with anonymous access to the `bench` namespace.
    fn gateway() -> Self {
        let path =
            std::env::temp_dir().join(format!("tether-load-test-{}.toml", std::process::id()));
        let config = format!(
            "[auth]\napi_key = \"{API_KEY}\"\n\
             [[namespace]]\nname = \"bench\"\nallow_subscribe_for_client = true\nallow_subscribe_for_anonymous = true\n"
        );
        std::fs::write(&path, config).expect("config written");
        let path = path.to_str().expect("a UTF-8 temp path").to_owned();
        Self::start(&["serve", "--config", &path, "--listen", "127.0.0.1:0"])
    }

    fn start(args: &[&str]) -> Self {
        let mut child = Command::new(tetherd_binary())
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::piped())
            .spawn()
            .expect("start tetherd");
        let stderr = child.stderr.take().expect("piped stderr");
        let (tx, rx) = mpsc::channel();
        // Find the listening address in the log, then keep draining the pipe
        // so the server never blocks on logging.
        std::thread::spawn(move || {
            let mut tx = Some(tx);
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                let listen = line
                    .split("listen=")
                    .nth(1)
                    .and_then(|rest| rest.split_whitespace().next())
                    .and_then(|addr| addr.parse::<SocketAddr>().ok());
                if let Some(listen) = listen {
                    if let Some(tx) = tx.take() {
                        let _ = tx.send(listen);
                    }
                }
            }
        });
        let addr = match rx.recv_timeout(Duration::from_secs(60)) {
            Ok(addr) => addr,
            Err(_) => {
                let _ = child.kill();
                panic!("tetherd did not report its address: {:?}", child.wait());
            }
        };
        Self { child, addr }
    }
}

impl Drop for Tetherd {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// Runs tether-load with `args` and returns its JSON report.
fn json_report(args: &[&str]) -> Value {
    let output = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(args)
        .arg("--json")
        .output()
        .expect("run tether-load");
    assert!(
        output.status.success(),
        "tether-load {args:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    serde_json::from_slice(&output.stdout).expect("one JSON object")
}

#[test]
fn broadcast_delivers_every_publication_to_every_subscriber() {
    let server = Tetherd::gateway();
    let url = format!("ws://{}/connection/websocket", server.addr);
    let pid = server.child.id().to_string();
    let report = json_report(&[
        "broadcast",
        "--url",
        &url,
        "--api-key",
        API_KEY,
        "--subscribers",
        "50",
        "--channels",
        "2",
        "--rate",
        "200",
        "--duration",
        "0.1",
        "--per-process",
        "25",
        "--per-source",
        "10",
        "--settle",
        "0",
        "--server-pid",
        &pid,
    ]);
    assert_eq!(report["processes"], 2, "{report}");
    assert_eq!(report["source_addresses"], 6, "{report}");
    assert_eq!(report["subscribed"], 50, "{report}");
    assert_eq!(report["published"], 20, "{report}");
    assert_eq!(report["expected_deliveries"], 1000, "{report}");
    assert_eq!(report["deliveries"], 1000, "{report}");
    for counter in ["lost", "duplicated", "reordered", "unexpected", "dropped"] {
        assert_eq!(report[counter], 0, "{counter}: {report}");
    }
    assert_eq!(report["closed_clean"], 50, "{report}");
    assert!(
        report["server"]["rss_subscribed"].as_u64().unwrap() > 0,
        "{report}"
    );
    assert!(report["delivery_latency_us"]["max"].as_f64().unwrap() > 0.0);
}

#[test]
fn broadcast_stops_at_a_refused_api_key() {
    let server = Tetherd::gateway();
    let output = Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(["broadcast", "--url"])
        .arg(format!("ws://{}/connection/websocket", server.addr))
        .args(["--api-key", "not-the-key", "--subscribers", "3"])
        .args(["--rate", "100", "--duration", "0.05", "--settle", "0"])
        .output()
        .expect("run tether-load");
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        stderr.contains("publication 0 of 5: the API answered 401"),
        "{stderr}"
    );
}

#[test]
fn handshake_cycles_add_up() {
    let server = Tetherd::echo();
    let url = format!("ws://{}/", server.addr);
    let report = json_report(&[
        "handshake",
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "0.2",
        "--sources",
        "3",
        "--message",
    ]);
    assert_eq!(report["started"], 20, "{report}");
    assert_eq!(report["succeeded"], 20, "{report}");
    assert_eq!(report["failed"], 0, "{report}");
    assert_eq!(report["source_addresses"], 3, "{report}");
}

#[test]
fn handshake_counts_failures_by_kind() {
    // A port nothing listens on: every connect is refused.
    let closed = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("ws://{}/", closed.local_addr().unwrap());
    drop(closed);
    let report = json_report(&[
        "handshake",
        "--url",
        &url,
        "--rate",
        "100",
        "--duration",
        "0.05",
    ]);
    assert_eq!(report["succeeded"], 0, "{report}");
    assert_eq!(report["failed"], report["started"], "{report}");
    let failures = report["failures"].as_object().unwrap();
    assert!(
        failures.keys().all(|kind| kind.starts_with("connect: ")),
        "{report}"
    );
}

#[test]
fn overhead_counts_both_deliveries() {
    let server = Tetherd::echo();
    let url = format!("ws://{}/", server.addr);
    let report = json_report(&[
        "overhead",
        "--url",
        &url,
        "--rate",
        "50",
        "--duration",
        "0.2",
        "--size",
        "100",
    ]);
    assert_eq!(report["messages"], 10, "{report}");
    for side in ["polling", "websocket"] {
        let side = &report[side];
        assert_eq!(side["delivered"], 10, "{report}");
        assert_eq!(side["payload_bytes"], 1000, "{report}");
        assert!(side["down_bytes"].as_u64().unwrap() > 1000, "{report}");
    }
    let websocket = &report["websocket"];
    // Ten masked frames of 100 bytes asked for the echoes: 106 bytes each.
    assert_eq!(websocket["echo_request_bytes"], 1060, "{report}");
    // Each echo is a 102-byte frame; the rest is the handshake and close.
    let framing = websocket["down_bytes"].as_u64().unwrap() - 1020;
    assert!(framing < 400, "{report}");
    assert!(
        report["polling"]["up_bytes"].as_u64().unwrap()
            > 10 * websocket["up_bytes"].as_u64().unwrap() / 2,
        "{report}"
    );
}
