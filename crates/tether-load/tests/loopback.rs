//! Runs the `tether-load` binary against an echo server started in-process.

use std::{net::SocketAddr, process::Output, sync::Arc};

use serde_json::Value;
use tether::{Message, ServerConfig, TrySendError};
use tokio::{net::TcpListener, process::Command};

/// Starts an echo server on a free loopback port.
async fn echo_server() -> SocketAddr {
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
                while let Some(received) = ws.recv().await {
                    if let Ok(message @ (Message::Text(_) | Message::Binary(_))) = received {
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
