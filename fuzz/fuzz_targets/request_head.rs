//! Bytes from a would-be client into `handshake::server::parse_request`
//! with the default limits. Checks, besides "never panics":
//! - an accepted head reports a length within the input, and parsing just
//!   that head gives the same request;
//! - the 101 built from the request's own offers (its subprotocol and
//!   extensions) never panics and is a complete head;
//! - a refusal carries a 4xx status and a response that never panics.
#![no_main]

use libfuzzer_sys::fuzz_target;
use tether_proto::handshake::{HeadLimits, server};

fuzz_target!(|data: &[u8]| {
    let limits = HeadLimits::default();
    match server::parse_request(data, &limits) {
        Ok(None) => {}
        Ok(Some((request, consumed))) => {
            assert!(consumed <= data.len());
            let again = server::parse_request(&data[..consumed], &limits);
            assert_eq!(again, Ok(Some((request.clone(), consumed))));
            let _ = (
                request.path(),
                request.query(),
                request.host(),
                request.origin(),
            );
            let subprotocol = request.negotiate_subprotocol(request.subprotocols());
            let reply = request.accept_response(subprotocol, request.extensions(), &[]);
            assert!(reply.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
            assert!(reply.ends_with(b"\r\n\r\n"));
        }
        Err(refusal) => {
            assert!(matches!(refusal.http_status(), 400 | 403 | 405 | 426 | 431));
            assert!(refusal.response().starts_with(b"HTTP/1.1 4"));
        }
    }
});
