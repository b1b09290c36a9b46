//! The gateway starts from a config file, serves health and the API, and
//! drains on SIGTERM.

mod common;

use std::{io::Read, io::Write, net::TcpStream, time::Duration};

use common::Tetherd;

const CONFIG: &str = r#"
[auth]
api_key = "test-api-key-0123456789"
token_hmac_secret = "test-secret-0123456789abcdef0123456789"
"#;

fn http(server: &Tetherd, request: &str) -> String {
    let mut tcp = TcpStream::connect(server.addr).unwrap();
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    tcp.write_all(request.as_bytes()).unwrap();
    let mut response = String::new();
    let _ = tcp.read_to_string(&mut response);
    response
}

fn post(server: &Tetherd, path: &str, key: &str, body: &str) -> String {
    http(
        server,
        &format!(
            "POST {path} HTTP/1.1\r\nHost: x\r\nX-API-Key: {key}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
            body.len()
        ),
    )
}

#[test]
fn health_api_and_drain() {
    let mut server = Tetherd::gateway(CONFIG, &[]);
    let health = http(
        &server,
        "GET /health HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(
        health.starts_with("HTTP/1.1 200") && health.contains("ready"),
        "{health}"
    );
    let published = post(
        &server,
        "/api/publish",
        "test-api-key-0123456789",
        r#"{"channel":"demo:x","data":{"a":1}}"#,
    );
    assert!(published.contains(r#""offset":1"#), "{published}");
    let refused = post(
        &server,
        "/api/publish",
        "wrong-key",
        r#"{"channel":"demo:x","data":{}}"#,
    );
    assert!(refused.starts_with("HTTP/1.1 401"), "{refused}");
    let unknown = post(
        &server,
        "/api/publish",
        "test-api-key-0123456789",
        r#"{"channel":"nope:x","data":{}}"#,
    );
    assert!(unknown.contains(r#""code":102"#), "{unknown}");
    let metrics = http(
        &server,
        "GET /metrics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n",
    );
    assert!(metrics.contains("tether_publications_total 1"), "{metrics}");
    let status = server
        .terminate(Duration::from_secs(30))
        .expect("exits after SIGTERM");
    assert!(status.success(), "{status}");
    assert!(
        server
            .wait_for_log("drained", Duration::from_secs(5))
            .is_some()
    );
}

#[test]
fn invalid_config_is_refused_naming_the_key() {
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_tetherd"))
        .args(["serve", "--listen", "127.0.0.1:0"])
        .env("TETHER_SECURITY_HANDSHAKE_TIMEOUT", "10x")
        .output()
        .unwrap();
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("security.handshake_timeout"), "{stderr}");
}
