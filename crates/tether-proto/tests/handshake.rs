//! The HTTP upgrade handshake (RFC 6455 §4) through the public API only.

use proptest::prelude::*;
use tether_proto::handshake::client::ClientRequest;
use tether_proto::handshake::extensions::ExtensionOffer;
use tether_proto::handshake::server::{self, Request};
use tether_proto::handshake::{ClientHandshakeError, HandshakeError, HeadLimits, accept_key};

const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";
const ACCEPT: &str = "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=";

/// The RFC 6455 §1.2 sample request, plus `extra` header lines.
fn request(extra: &str) -> String {
    format!(
        "GET /chat HTTP/1.1\r\nHost: server.example.com\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: {KEY}\r\n\
         Origin: http://example.com\r\nSec-WebSocket-Version: 13\r\n{extra}\r\n"
    )
}

fn parse(head: &str) -> Result<Option<(Request, usize)>, HandshakeError> {
    server::parse_request(head.as_bytes(), &HeadLimits::default())
}

fn refuse(head: &str) -> HandshakeError {
    parse(head).expect_err(head)
}

/// The refusal's head (everything before the blank line) and body.
fn split_response(bytes: &[u8]) -> (String, String) {
    let text = String::from_utf8(bytes.to_vec()).unwrap();
    let (head, body) = text.split_once("\r\n\r\n").unwrap();
    (head.to_owned(), body.to_owned())
}

#[test]
fn rfc6455_section_1_3_accept_key() {
    assert_eq!(accept_key(KEY.as_bytes()), ACCEPT);
}

#[test]
fn rfc6455_sample_request_is_accepted() {
    let head = request("Sec-WebSocket-Protocol: chat, superchat\r\n");
    let (req, consumed) = parse(&head).unwrap().unwrap();
    assert_eq!(consumed, head.len());
    assert_eq!(req.path(), "/chat");
    assert_eq!(req.host(), "server.example.com");
    assert_eq!(req.origin(), Some("http://example.com"));
    assert_eq!(req.subprotocols(), ["chat", "superchat"]);
    assert_eq!(req.header("sec-websocket-version"), Some(&b"13"[..]));
    let reply = req.accept_response(req.negotiate_subprotocol(&["chat"]), &[], &[]);
    assert_eq!(
        String::from_utf8(reply).unwrap(),
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: {ACCEPT}\r\nSec-WebSocket-Protocol: chat\r\n\r\n"
        )
    );
}

#[test]
fn every_refusal_has_its_exact_headers() {
    let plain = "Connection: close\r\nContent-Type: text/plain; charset=utf-8";
    let cases: Vec<(String, &str, &str)> = vec![
        (
            request("").replace("GET", "POST"),
            "405 Method Not Allowed",
            "\r\nAllow: GET",
        ),
        (
            request("").replace("Sec-WebSocket-Version: 13", "Sec-WebSocket-Version: 8"),
            "426 Upgrade Required",
            "\r\nSec-WebSocket-Version: 13",
        ),
        (
            request("").replace("Sec-WebSocket-Version: 13\r\n", ""),
            "426 Upgrade Required",
            "\r\nSec-WebSocket-Version: 13",
        ),
        (
            request("").replace("HTTP/1.1", "HTTP/1.0"),
            "400 Bad Request",
            "",
        ),
        (
            request("").replace(&format!("Sec-WebSocket-Key: {KEY}\r\n"), ""),
            "400 Bad Request",
            "",
        ),
        (
            format!("GET / HTTP/1.1\r\n{}\r\n", "X: y\r\n".repeat(101)),
            "431 Request Header Fields Too Large",
            "",
        ),
    ];
    for (head, status, extra) in cases {
        let e = refuse(&head);
        assert_eq!(e.http_status().to_string(), status[..3], "{e:?}");
        let (got_head, body) = split_response(&e.response());
        assert_eq!(
            got_head,
            format!(
                "HTTP/1.1 {status}\r\n{plain}\r\nContent-Length: {}{extra}",
                body.len()
            )
        );
        assert!(
            body.ends_with('\n') && body.matches('\n').count() == 1,
            "{body:?}"
        );
        assert_eq!(body.trim_end(), e.to_string());
    }
}

#[test]
fn http_10_reason() {
    let e = refuse(&request("").replace("HTTP/1.1", "HTTP/1.0"));
    assert_eq!(e, HandshakeError::HttpVersion);
    assert_eq!(e.to_string(), "HTTP/1.1 or later required");
}

#[test]
fn application_refusals() {
    let (head, body) =
        split_response(&HandshakeError::Forbidden("origin not allowed".into()).response());
    assert!(head.starts_with("HTTP/1.1 403 Forbidden\r\nConnection: close\r\n"));
    assert_eq!(body, "forbidden: origin not allowed\n");
    let e = HandshakeError::Refused {
        status: 503,
        reason: "draining".into(),
    };
    let (head, body) = split_response(&e.response());
    assert!(head.starts_with("HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\n"));
    assert_eq!(body, "draining\n");
}

#[test]
fn connection_and_upgrade_token_lists() {
    let head = request("")
        .replace("Connection: Upgrade", "Connection: keep-alive, Upgrade")
        .replace("Upgrade: websocket", "Upgrade: websocket, h2c");
    assert!(parse(&head).unwrap().is_some());
    let head = request("")
        .replace("Connection: Upgrade", "connection: KEEP-ALIVE,UPGRADE")
        .replace("Upgrade: websocket", "upgrade: h2c, WebSocket");
    assert!(parse(&head).unwrap().is_some());
    let head = request("").replace("Connection: Upgrade", "Connection: keep-alive");
    assert_eq!(refuse(&head), HandshakeError::MissingConnectionUpgrade);
    let head = request("").replace("Upgrade: websocket", "Upgrade: h2c");
    assert_eq!(refuse(&head), HandshakeError::MissingUpgrade);
}

#[test]
fn key_rules() {
    assert_eq!(
        refuse(&request(&format!("Sec-WebSocket-Key: {KEY}\r\n"))),
        HandshakeError::DuplicateKey
    );
    // base64 of 15 and of 17 bytes.
    for key in ["MTIzNDU2Nzg5MDEyMzQ1", "MTIzNDU2Nzg5MDEyMzQ1Njc="] {
        let head = request("").replace(KEY, key);
        assert_eq!(refuse(&head), HandshakeError::InvalidKey, "{key}");
    }
}

#[test]
fn missing_host_and_bad_target() {
    let head = request("").replace("Host: server.example.com\r\n", "");
    assert_eq!(refuse(&head), HandshakeError::MissingHost);
    let head = request("").replace("GET /chat", "GET *");
    assert_eq!(refuse(&head), HandshakeError::BadTarget);
    let head = request("").replace("GET /chat", "GET ws://server.example.com/chat?a=b");
    let (req, _) = parse(&head).unwrap().unwrap();
    assert_eq!((req.path(), req.query()), ("/chat", Some("a=b")));
}

#[test]
fn pipelined_frames_are_not_consumed() {
    let head = request("");
    let mut buf = head.clone().into_bytes();
    // A masked text frame "Hello" (RFC 6455 §5.7) sent before the 101.
    let frame = b"\x81\x85\x37\xfa\x21\x3d\x7f\x9f\x4d\x51\x58";
    buf.extend_from_slice(frame);
    let (_, consumed) = server::parse_request(&buf, &HeadLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(consumed, head.len());
    assert_eq!(&buf[consumed..], frame);
}

#[test]
fn head_split_at_every_byte_gives_same_result() {
    let head = request("Sec-WebSocket-Extensions: permessage-deflate\r\n");
    let full = parse(&head).unwrap().unwrap();
    let bytes = head.as_bytes();
    for i in 0..bytes.len() {
        assert_eq!(
            server::parse_request(&bytes[..i], &HeadLimits::default()),
            Ok(None),
            "prefix of {i} bytes"
        );
    }
    assert_eq!(parse(&head).unwrap().unwrap(), full);
}

#[test]
fn refusal_only_once_head_is_complete() {
    let head = request("").replace("GET", "POST");
    let bytes = head.as_bytes();
    for i in 0..bytes.len() {
        assert_eq!(
            server::parse_request(&bytes[..i], &HeadLimits::default()),
            Ok(None)
        );
    }
    assert!(matches!(refuse(&head), HandshakeError::MethodNotGet(m) if m == "POST"));
}

#[test]
fn head_size_limit() {
    let limits = HeadLimits::default();
    assert_eq!(limits.max_head_bytes, 16 * 1024);
    // A head exactly at the limit is fine.
    let base = request("X-Pad: \r\n");
    let pad = limits.max_head_bytes - base.len();
    let exact = request(&format!("X-Pad: {}\r\n", "a".repeat(pad)));
    assert_eq!(exact.len(), limits.max_head_bytes);
    assert!(parse(&exact).unwrap().is_some());
    // 16 KiB + 1 without a terminator is refused before the head ends.
    let mut endless = b"GET / HTTP/1.1\r\nX-Pad: ".to_vec();
    endless.resize(limits.max_head_bytes, b'a');
    assert_eq!(server::parse_request(&endless, &limits), Ok(None));
    endless.push(b'a');
    assert_eq!(
        server::parse_request(&endless, &limits),
        Err(HandshakeError::HeadTooLarge)
    );
    let e = HandshakeError::HeadTooLarge;
    assert_eq!(e.http_status(), 431);
    // One byte more than the limit on a complete head is refused too.
    let over = request(&format!("X-Pad: {}\r\n", "a".repeat(pad + 1)));
    assert_eq!(refuse(&over), HandshakeError::HeadTooLarge);
}

#[test]
fn header_count_limit() {
    // request("") has 6 header lines.
    let at_limit = request(&"X: y\r\n".repeat(94));
    assert!(parse(&at_limit).unwrap().is_some());
    let over = request(&"X: y\r\n".repeat(95));
    assert_eq!(refuse(&over), HandshakeError::TooManyHeaders);
    assert_eq!(refuse(&over).http_status(), 431);
    // Smaller limits apply as configured.
    let mut limits = HeadLimits::default();
    limits.max_headers = 6;
    assert!(server::parse_request(request("").as_bytes(), &limits).is_ok());
    limits.max_headers = 5;
    assert_eq!(
        server::parse_request(request("").as_bytes(), &limits),
        Err(HandshakeError::TooManyHeaders)
    );
}

#[test]
fn subprotocol_preference_is_the_servers() {
    let (req, _) = parse(&request("Sec-WebSocket-Protocol: a, b, c\r\n"))
        .unwrap()
        .unwrap();
    assert_eq!(req.negotiate_subprotocol(&["c", "b"]), Some("c"));
    assert_eq!(req.negotiate_subprotocol(&["x", "b", "a"]), Some("b"));
    assert_eq!(req.negotiate_subprotocol(&["x"]), None);
}

#[test]
fn extension_offers_are_typed() {
    let head = request(
        "Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits, x-webkit-deflate-frame\r\n\
         Sec-WebSocket-Extensions: permessage-deflate; server_max_window_bits=\"10\"; client_no_context_takeover\r\n",
    );
    let (req, _) = parse(&head).unwrap().unwrap();
    assert_eq!(
        req.extensions(),
        [
            ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None),
            ExtensionOffer::new("x-webkit-deflate-frame"),
            ExtensionOffer::new("permessage-deflate")
                .param("server_max_window_bits", Some("10"))
                .param("client_no_context_takeover", None),
        ]
    );
    let offer = &req.extensions()[2];
    assert_eq!(offer.params[0].name, "server_max_window_bits");
    assert_eq!(offer.params[0].value.as_deref(), Some("10"));
    for bad in [
        "permessage-deflate;",
        "a; b=\"c d\"",
        "a b",
        "a; b=\"unterminated",
    ] {
        let head = request(&format!("Sec-WebSocket-Extensions: {bad}\r\n"));
        assert_eq!(refuse(&head), HandshakeError::BadExtensionHeader, "{bad}");
        assert_eq!(refuse(&head).http_status(), 400);
    }
}

#[test]
fn client_and_server_round_trip() {
    let deflate = ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None);
    let (req_bytes, pending) = ClientRequest::new("example.com:9000", "/feed?since=3")
        .subprotocol("v2.chat")
        .subprotocol("v1.chat")
        .extension(deflate)
        .header("Origin", "https://example.com")
        .header("Cookie", "session=abc")
        .header("Authorization", "Bearer t0k3n")
        .encode();

    let (req, consumed) = server::parse_request(&req_bytes, &HeadLimits::default())
        .unwrap()
        .unwrap();
    assert_eq!(consumed, req_bytes.len());
    assert_eq!(req.host(), "example.com:9000");
    assert_eq!((req.path(), req.query()), ("/feed", Some("since=3")));
    assert_eq!(req.origin(), Some("https://example.com"));
    assert_eq!(req.header("cookie"), Some(&b"session=abc"[..]));
    assert_eq!(req.header("authorization"), Some(&b"Bearer t0k3n"[..]));
    assert_eq!(req.extensions()[0].name, "permessage-deflate");

    let protocol = req.negotiate_subprotocol(&["v1.chat", "v2.chat"]);
    assert_eq!(protocol, Some("v1.chat"));
    let accepted =
        [ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", Some("15"))];
    let mut reply = req.accept_response(protocol, &accepted, &[("X-Node", "a")]);
    let head_len = reply.len();
    reply.extend_from_slice(b"\x81\x02hi"); // the server's first frame

    for i in 0..head_len {
        assert_eq!(pending.parse(&reply[..i]), Ok(None), "prefix of {i} bytes");
    }
    let (res, consumed) = pending.parse(&reply).unwrap().unwrap();
    assert_eq!(consumed, head_len);
    assert_eq!(res.subprotocol(), Some("v1.chat"));
    assert_eq!(res.extensions(), accepted);
    assert_eq!(res.header("x-node"), Some(&b"a"[..]));
}

#[test]
fn client_keys_are_random_and_valid() {
    let req = ClientRequest::new("h", "/");
    let (a, _) = req.encode();
    let (b, _) = req.encode();
    let key = |bytes: &[u8]| {
        server::parse_request(bytes, &HeadLimits::default())
            .unwrap()
            .unwrap()
            .0
            .key()
            .to_owned()
    };
    assert_ne!(key(&a), key(&b));
}

/// A server answer for `request_bytes` built with `edit` applied to its head.
fn answer(request_bytes: &[u8], edit: impl FnOnce(String) -> String) -> Vec<u8> {
    let (req, _) = server::parse_request(request_bytes, &HeadLimits::default())
        .unwrap()
        .unwrap();
    let head = String::from_utf8(req.accept_response(None, &[], &[])).unwrap();
    edit(head).into_bytes()
}

#[test]
fn client_rejects_bad_accept() {
    let (bytes, pending) = ClientRequest::new("h", "/").encode();
    let res = answer(&bytes, |head| {
        let start = head.find("Accept: ").unwrap() + "Accept: ".len();
        let mut head = head;
        head.replace_range(start..start + ACCEPT.len(), ACCEPT);
        head
    });
    assert_eq!(pending.parse(&res), Err(ClientHandshakeError::BadAccept));
    let res = answer(&bytes, |head| {
        head.lines()
            .filter(|l| !l.starts_with("Sec-WebSocket-Accept"))
            .map(|l| format!("{l}\r\n"))
            .collect()
    });
    assert_eq!(pending.parse(&res), Err(ClientHandshakeError::BadAccept));
}

#[test]
fn client_rejects_unexpected_subprotocol() {
    let (bytes, pending) = ClientRequest::new("h", "/").subprotocol("chat").encode();
    let res = answer(&bytes, |h| {
        h.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: superchat\r\n\r\n")
    });
    assert_eq!(
        pending.parse(&res),
        Err(ClientHandshakeError::UnexpectedSubprotocol(
            "superchat".into()
        ))
    );
    // Offering none and getting one is as wrong.
    let (bytes, pending) = ClientRequest::new("h", "/").encode();
    let res = answer(&bytes, |h| {
        h.replace("\r\n\r\n", "\r\nSec-WebSocket-Protocol: chat\r\n\r\n")
    });
    assert!(matches!(
        pending.parse(&res),
        Err(ClientHandshakeError::UnexpectedSubprotocol(_))
    ));
}

#[test]
fn client_rejects_unexpected_extension() {
    let (bytes, pending) = ClientRequest::new("h", "/")
        .extension(ExtensionOffer::new("permessage-deflate"))
        .encode();
    let res = answer(&bytes, |h| {
        h.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: x-webkit-deflate-frame\r\n\r\n",
        )
    });
    assert_eq!(
        pending.parse(&res),
        Err(ClientHandshakeError::UnexpectedExtension(
            "x-webkit-deflate-frame".into()
        ))
    );
    let res = answer(&bytes, |h| {
        h.replace(
            "\r\n\r\n",
            "\r\nSec-WebSocket-Extensions: permessage-deflate;\r\n\r\n",
        )
    });
    assert_eq!(
        pending.parse(&res),
        Err(ClientHandshakeError::BadExtensionHeader)
    );
}

#[test]
fn client_reports_non_101_status() {
    let (_, pending) = ClientRequest::new("h", "/").encode();
    let refusal = HandshakeError::Forbidden("origin".into()).response();
    assert_eq!(
        pending.parse(&refusal),
        Err(ClientHandshakeError::Status {
            status: 403,
            reason: "Forbidden".into(),
        })
    );
    assert_eq!(
        pending.parse(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"),
        Err(ClientHandshakeError::Status {
            status: 200,
            reason: "OK".into(),
        })
    );
}

#[test]
fn client_response_head_limit() {
    let (_, pending) = ClientRequest::new("h", "/").encode();
    let mut endless = b"HTTP/1.1 101 Switching Protocols\r\nX: ".to_vec();
    endless.resize(16 * 1024 + 1, b'a');
    assert_eq!(
        pending.parse(&endless),
        Err(ClientHandshakeError::HeadTooLarge)
    );
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in proptest::collection::vec(any::<u8>(), 0..512)) {
        let _ = server::parse_request(&bytes, &HeadLimits::default());
        let (_, pending) = ClientRequest::new("h", "/").encode();
        let _ = pending.parse(&bytes);
    }

    #[test]
    fn mutated_request_never_panics(pos in 0usize..400, byte in any::<u8>(), cut in 0usize..400) {
        let mut bytes = request("Sec-WebSocket-Extensions: a; b=\"c\"\r\nSec-WebSocket-Protocol: p\r\n").into_bytes();
        let pos = pos % bytes.len();
        bytes[pos] = byte;
        bytes.truncate(cut.max(pos));
        let _ = server::parse_request(&bytes, &HeadLimits::default());
    }

    #[test]
    fn any_split_point_of_request_and_frames(split in 0usize..300) {
        let head = request("");
        let mut buf = head.clone().into_bytes();
        buf.extend_from_slice(b"\x81\x80abcd");
        let split = split.min(buf.len());
        match server::parse_request(&buf[..split], &HeadLimits::default()).unwrap() {
            None => prop_assert!(split < head.len()),
            Some((_, consumed)) => prop_assert_eq!(consumed, head.len()),
        }
    }
}
