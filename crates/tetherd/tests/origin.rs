//! The Origin policy of `tetherd echo`, as a browser's requests meet it.

mod common;

use std::{
    io::{Read, Write},
    net::TcpStream,
    time::Duration,
};

use common::Tetherd;

/// Sends an upgrade request with `origin` and returns the status code.
fn status_for(server: &Tetherd, host: &str, origin: Option<&str>) -> u16 {
    status_at(server, "/", host, origin)
}

/// Like [`status_for`], at `path`.
fn status_at(server: &Tetherd, path: &str, host: &str, origin: Option<&str>) -> u16 {
    let mut tcp = TcpStream::connect(server.addr).expect("connects");
    tcp.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    let origin = origin.map_or(String::new(), |origin| format!("Origin: {origin}\r\n"));
    write!(
        tcp,
        "GET {path} HTTP/1.1\r\nHost: {host}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
         Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n{origin}\r\n"
    )
    .unwrap();
    let mut head = [0; 12];
    tcp.read_exact(&mut head).expect("a status line");
    let line = String::from_utf8_lossy(&head);
    line[9..12]
        .parse()
        .unwrap_or_else(|_| panic!("bad status line {line:?}"))
}

#[test]
fn allow_list_admits_listed_origin_and_refuses_lookalikes() {
    let server = Tetherd::echo(&["--allow-origin", "http://good.example"]);
    let host = server.addr.to_string();
    assert_eq!(status_for(&server, &host, Some("http://good.example")), 101);
    assert_eq!(
        status_for(&server, &host, None),
        101,
        "non-browser clients send no Origin"
    );
    for foreign in [
        "https://evil.example",
        "http://good.example.evil.example",
        "http://evilgood.example",
        "null",
        "https://good.example",
        "http://good.example:8443",
    ] {
        assert_eq!(status_for(&server, &host, Some(foreign)), 403, "{foreign}");
        let line = server
            .wait_for_log("handshake refused", Duration::from_secs(10))
            .expect("the refusal is logged");
        assert!(line.contains(foreign) && line.contains("403"), "{line}");
    }
}

#[test]
fn same_origin_is_the_default() {
    let server = Tetherd::echo(&[]);
    let host = server.addr.to_string();
    assert_eq!(
        status_for(&server, &host, Some(&format!("http://{host}"))),
        101
    );
    assert_eq!(status_for(&server, &host, Some("http://127.0.0.2:1")), 403);
    assert_eq!(
        status_for(&server, &host, Some(&format!("https://{host}"))),
        403
    );
}

#[test]
fn require_origin_refuses_requests_without_one() {
    let server = Tetherd::echo(&["--require-origin"]);
    let host = server.addr.to_string();
    assert_eq!(status_for(&server, &host, None), 403);
    assert_eq!(
        status_for(&server, &host, Some(&format!("http://{host}"))),
        101
    );
}

#[test]
fn gateway_takes_the_same_origin_flags() {
    let config = "[auth]\napi_key = \"origin-test-api-key-0123\"\ntoken_hmac_secret = \"origin-test-secret-0123456789abcdef01\"\n";
    let server = Tetherd::gateway(
        config,
        &["--allow-origin", "http://good.example", "--require-origin"],
    );
    let host = server.addr.to_string();
    let path = "/connection/websocket";
    assert_eq!(
        status_at(&server, path, &host, Some("http://good.example")),
        101
    );
    assert_eq!(status_at(&server, path, &host, None), 403);
    assert_eq!(
        status_at(&server, path, &host, Some("http://evilgood.example")),
        403
    );
}
