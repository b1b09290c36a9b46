//! Runs the `tether-load` binary against an echo server started in-process.

use std::{net::SocketAddr, process::Output, sync::Arc};

use serde_json::Value;
use tether::{CloseCode, Message, ServerConfig, TrySendError};
use tokio::{net::TcpListener, process::Command};

/// How the test echo server departs from a plain echo, on every connection.
#[derive(Debug, Clone, Copy)]
enum Quirk {
    None,
    /// Flips one bit of the echo of message `n` (counting from 0).
    Corrupt(usize),
    /// Closes (1001) after echoing `n` messages.
    CloseAfter(usize),
}

/// Starts an echo server on a free loopback port.
async fn echo_server() -> SocketAddr {
    serve_echoes(Quirk::None).await
}

/// Starts an echo server with `quirk` on a free loopback port.
async fn serve_echoes(quirk: Quirk) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let config = Arc::new(ServerConfig::default());
    tokio::spawn(async move {
        while let Ok((stream, _)) = listener.accept().await {
            let config = config.clone();
            tokio::spawn(async move {
                let Ok((mut ws, _)) = tether::accept(stream, &config).await else {
                    return;
                };
                let mut echoed = 0;
                while let Some(received) = ws.recv().await {
                    if let Ok(mut message @ (Message::Text(_) | Message::Binary(_))) = received {
                        match quirk {
                            Quirk::Corrupt(n) if n == echoed => {
                                let mut payload = message.as_bytes().to_vec();
                                payload[0] ^= 1;
                                message = Message::Binary(payload.into());
                            }
                            Quirk::CloseAfter(n) if n == echoed => {
                                let _ = ws.close(CloseCode::GOING_AWAY, "bye").await;
                                continue;
                            }
                            _ => {}
                        }
                        echoed += 1;
                        if let Err(TrySendError::Full(message)) = ws.try_send(message) {
                            let _ = ws.send(message).await;
                        }
                    }
                }
            });
        }
    });
    addr
}

async fn tether_load(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_tether-load"))
        .args(args)
        .output()
        .await
        .unwrap()
}

async fn json_report(args: &[&str]) -> Value {
    let output = tether_load(args).await;
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(
        output.status.success(),
        "tether-load {args:?} failed: {stderr}"
    );
    serde_json::from_slice(&output.stdout).unwrap()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_verifies_every_message() {
    let url = format!("ws://{}/echo", echo_server().await);
    for text in [false, true] {
        let mut args = vec!["echo", "--url", &url, "--conns", "2", "--inflight", "4"];
        args.extend([
            "--size",
            "100",
            "--duration",
            "1",
            "--threads",
            "1",
            "--json",
        ]);
        if text {
            args.push("--text");
        }
        let report = json_report(&args).await;
        assert_eq!(report["opened"], 2, "{report}");
        assert_eq!(report["verify_errors"], 0, "{report}");
        assert_eq!(report["connection_errors"], 0, "{report}");
        assert!(report["messages"].as_u64().unwrap() > 0, "{report}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_reports_a_corrupted_echo() {
    let url = format!("ws://{}/", serve_echoes(Quirk::Corrupt(5)).await);
    let args = [
        "echo",
        "--url",
        &url,
        "--conns",
        "3",
        "--inflight",
        "2",
        "--size",
        "32",
        "--duration",
        "0.5",
        "--json",
    ];
    let report = json_report(&args).await;
    assert_eq!(report["verify_errors"], 3, "{report}");
    assert_eq!(report["connection_errors"], 0, "{report}");
    let first = report["first_verify_error"].as_str().unwrap();
    assert!(
        first.contains("message 5: wrong payload (32 bytes"),
        "{first}"
    );
    assert!(report["messages"].as_u64().unwrap() > 10, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn echo_reports_a_server_that_closes_early() {
    let url = format!("ws://{}/", serve_echoes(Quirk::CloseAfter(20)).await);
    let args = [
        "echo",
        "--url",
        &url,
        "--conns",
        "2",
        "--inflight",
        "4",
        "--duration",
        "1",
        "--json",
    ];
    let report = json_report(&args).await;
    assert_eq!(report["verify_errors"], 0, "{report}");
    assert_eq!(
        report["errors"]["connection"],
        serde_json::json!({"server closed the connection early (1001)": 2}),
        "{report}"
    );
    // The echoes before the close were counted (each with its latency).
    assert!(report["messages"].as_u64().unwrap() >= 2 * 20, "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_spreads_over_worker_processes() {
    let url = format!("ws://{}", echo_server().await);
    let args = [
        "idle",
        "--url",
        &url,
        "--conns",
        "30",
        "--per-process",
        "10",
        "--per-source",
        "5",
        "--hold",
        "0.2",
        "--settle",
        "0",
        "--server-pid",
        &std::process::id().to_string(),
        "--json",
    ];
    let report = json_report(&args).await;
    assert_eq!(report["processes"], 3, "{report}");
    assert_eq!(report["source_addresses"], 6, "{report}");
    assert_eq!(report["opened"], 30, "{report}");
    assert_eq!(report["closed_clean"], 30, "{report}");
    assert!(
        report["server"]["rss_open"].as_u64().unwrap() > 0,
        "{report}"
    );
}

#[tokio::test]
async fn refuses_targets_off_loopback() {
    let output = tether_load(&["echo", "--url", "ws://192.0.2.1:80/", "--duration", "1"]).await;
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("loopback"));
}
