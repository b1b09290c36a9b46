//! The server side: parse and validate the upgrade request (RFC 6455 §4.2.1),
//! then answer with a 101 or a refusal (§4.2.2).
//!
//! ```
//! use tether_proto::handshake::{HeadLimits, server};
//!
//! let buf = b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n\
//!             Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
//!             Sec-WebSocket-Version: 13\r\n\r\n\x81\x85";
//! let (request, consumed) = match server::parse_request(buf, &HeadLimits::default()) {
//!     Ok(Some(parsed)) => parsed,
//!     Ok(None) => unreachable!("read more bytes and call again"),
//!     Err(refusal) => panic!("write {:?}, then close", refusal.response()),
//! };
//! assert_eq!(&buf[consumed..], b"\x81\x85"); // first frame bytes: keep them
//! let reply = request.accept_response(None, &[], &[]);
//! assert!(reply.starts_with(b"HTTP/1.1 101 Switching Protocols\r\n"));
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::extensions::{self, ExtensionOffer};
use super::{
    HandshakeError, HeadFailure, HeadLimits, HeaderLines, VERSION, accept_key, excerpt, has_token,
    is_token, own_headers, parse_head, push_header, trim_ows, values,
};
use crate::deflate::{DeflateConfig, PerMessageDeflate};

/// A valid WebSocket upgrade request. Built only by [`parse_request`] or
/// [`validate_upgrade`], so every accessor reflects a request that passed
/// RFC 6455 §4.2.1.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    target: String,
    host: String,
    origin: Option<String>,
    key: String,
    subprotocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    headers: HeaderLines,
}

/// Parses an upgrade request head from the start of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete: read more bytes, append
/// them to `buf` and call again. On success, returns the request and the
/// length of its head; `buf[consumed..]` is the start of the WebSocket frames
/// (a client may send them before seeing the 101) and must go to the frame
/// decoder. On error, write [`HandshakeError::response`] and close.
///
/// The limits apply to partial input too: once `buf` holds more than
/// `max_head_bytes` without a complete head, the answer is 431.
pub fn parse_request(
    buf: &[u8],
    limits: &HeadLimits,
) -> Result<Option<(Request, usize)>, HandshakeError> {
    let mut slots = vec![httparse::EMPTY_HEADER; limits.max_headers];
    let mut req = httparse::Request::new(&mut slots);
    let consumed = match parse_head(buf, limits, |b| req.parse(b)) {
        Ok(Some(len)) => len,
        Ok(None) => return Ok(None),
        Err(HeadFailure::TooLarge) => return Err(HandshakeError::HeadTooLarge),
        Err(HeadFailure::TooManyHeaders) => return Err(HandshakeError::TooManyHeaders),
        Err(HeadFailure::Malformed(what)) => return Err(HandshakeError::Malformed(what)),
    };
    let (Some(method), Some(target), Some(minor)) = (req.method, req.path, req.version) else {
        // httparse fills all three before reporting a complete head.
        return Err(HandshakeError::Malformed("incomplete request line"));
    };
    let headers = own_headers(req.headers);
    validate(method, (1, minor), target, headers).map(|r| Some((r, consumed)))
}

/// Validates a request head parsed elsewhere (e.g. by hyper) with the same
/// rules as [`parse_request`].
///
/// `version` is the HTTP version as `(major, minor)`; `target` is the request
/// target as sent (`/path?query` or an absolute URI); `headers` yields every
/// header line as `(name, value)` in order.
pub fn validate_upgrade<'h>(
    method: &str,
    version: (u8, u8),
    target: &str,
    headers: impl IntoIterator<Item = (&'h str, &'h [u8])>,
) -> Result<Request, HandshakeError> {
    validate(method, version, target, headers.into_iter().collect())
}

/// RFC 6455 §4.2.1, one rule after another; the first broken rule is the
/// refusal.
fn validate(
    method: &str,
    version: (u8, u8),
    target: &str,
    headers: HeaderLines,
) -> Result<Request, HandshakeError> {
    check_request_line(method, version, target)?;
    let host = host(&headers)?;
    check_upgrade_tokens(&headers)?;
    check_version(&headers)?;
    let key = key(&headers)?;
    let subprotocols = subprotocols(&headers)?;
    let extensions = extension_offers(&headers)?;
    let origin = origin(&headers)?;
    Ok(Request {
        target: target.to_owned(),
        host,
        origin,
        key,
        subprotocols,
        extensions,
        headers,
    })
}

/// A `GET`, HTTP/1.1 or later, for an origin-form or absolute target.
fn check_request_line(method: &str, version: (u8, u8), target: &str) -> Result<(), HandshakeError> {
    if method != "GET" {
        return Err(HandshakeError::MethodNotGet(excerpt(method.as_bytes(), 32)));
    }
    if version < (1, 1) {
        return Err(HandshakeError::HttpVersion);
    }
    if origin_form(target).is_none() {
        return Err(HandshakeError::BadTarget);
    }
    Ok(())
}

/// Exactly one non-empty UTF-8 `Host`.
fn host(headers: &HeaderLines) -> Result<String, HandshakeError> {
    let mut hosts = values(headers, "Host");
    match (hosts.next(), hosts.next()) {
        (None, _) => Err(HandshakeError::MissingHost),
        (Some(_), Some(_)) => Err(HandshakeError::DuplicateHost),
        (Some(h), None) => match std::str::from_utf8(trim_ows(h)) {
            Ok("") => Err(HandshakeError::MissingHost),
            Ok(h) => Ok(h.to_owned()),
            Err(_) => Err(HandshakeError::Malformed("Host is not valid UTF-8")),
        },
    }
}

/// `Upgrade: websocket` and `Connection: upgrade`, among other tokens.
fn check_upgrade_tokens(headers: &HeaderLines) -> Result<(), HandshakeError> {
    if !has_token(headers, "Upgrade", "websocket") {
        return Err(HandshakeError::MissingUpgrade);
    }
    if !has_token(headers, "Connection", "upgrade") {
        return Err(HandshakeError::MissingConnectionUpgrade);
    }
    Ok(())
}

/// Exactly one `Sec-WebSocket-Version`, and it is 13.
fn check_version(headers: &HeaderLines) -> Result<(), HandshakeError> {
    let mut versions = values(headers, "Sec-WebSocket-Version");
    match (versions.next(), versions.next()) {
        (None, _) => Err(HandshakeError::MissingVersion),
        (Some(v), None) if trim_ows(v) == VERSION.as_bytes() => Ok(()),
        _ => {
            let versions: Vec<&[u8]> = values(headers, "Sec-WebSocket-Version").collect();
            Err(HandshakeError::UnsupportedVersion(excerpt(
                &versions.join(&b", "[..]),
                32,
            )))
        }
    }
}

/// Exactly one `Sec-WebSocket-Key`, the base64 of 16 bytes.
fn key(headers: &HeaderLines) -> Result<String, HandshakeError> {
    let mut keys = values(headers, "Sec-WebSocket-Key");
    match (keys.next(), keys.next()) {
        (None, _) => Err(HandshakeError::MissingKey),
        (Some(_), Some(_)) => Err(HandshakeError::DuplicateKey),
        (Some(k), None) => parse_key(trim_ows(k)),
    }
}

/// Every `Sec-WebSocket-Protocol` item, each a token; empty items skipped.
fn subprotocols(headers: &HeaderLines) -> Result<Vec<String>, HandshakeError> {
    let mut subprotocols = Vec::new();
    for value in values(headers, "Sec-WebSocket-Protocol") {
        for item in value.split(|&b| b == b',').map(trim_ows) {
            if item.is_empty() {
                continue;
            }
            match std::str::from_utf8(item) {
                Ok(p) if is_token(item) => subprotocols.push(p.to_owned()),
                _ => return Err(HandshakeError::BadSubprotocolHeader),
            }
        }
    }
    Ok(subprotocols)
}

/// Every offer of every `Sec-WebSocket-Extensions` line, in order.
fn extension_offers(headers: &HeaderLines) -> Result<Vec<ExtensionOffer>, HandshakeError> {
    let mut offers = Vec::new();
    for value in values(headers, "Sec-WebSocket-Extensions") {
        extensions::parse_header(value, &mut offers)
            .map_err(|_| HandshakeError::BadExtensionHeader)?;
    }
    Ok(offers)
}

/// At most one `Origin`, in UTF-8.
fn origin(headers: &HeaderLines) -> Result<Option<String>, HandshakeError> {
    let mut origins = values(headers, "Origin");
    match (origins.next(), origins.next()) {
        (None, _) => Ok(None),
        (Some(_), Some(_)) => Err(HandshakeError::Malformed("more than one Origin header")),
        (Some(o), None) => match std::str::from_utf8(trim_ows(o)) {
            Ok(o) => Ok(Some(o.to_owned())),
            Err(_) => Err(HandshakeError::Malformed("Origin is not valid UTF-8")),
        },
    }
}

/// The key as a string if it is the base64 of exactly 16 bytes.
fn parse_key(key: &[u8]) -> Result<String, HandshakeError> {
    // 16 bytes encode to 22 characters plus "==" padding.
    if key.len() != 24 {
        return Err(HandshakeError::InvalidKey);
    }
    // 24 base64 characters decode to at most 18 bytes: no allocation.
    let mut raw = [0; 18];
    match STANDARD.decode_slice(key, &mut raw) {
        Ok(16) => {
            // base64 output is ASCII, so this never fails.
            String::from_utf8(key.to_vec()).map_err(|_| HandshakeError::InvalidKey)
        }
        _ => Err(HandshakeError::InvalidKey),
    }
}

/// The origin-form part of a request target (`/path?query`, possibly empty
/// for `ws://host`), or `None` if the target is neither origin-form nor
/// absolute-form (RFC 7230 §5.3) or carries a fragment.
fn origin_form(target: &str) -> Option<&str> {
    if target.contains('#') {
        return None;
    }
    if target.starts_with('/') {
        return Some(target);
    }
    let (scheme, rest) = target.split_once("://")?;
    let mut chars = scheme.chars();
    let scheme_ok = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || matches!(c, '+' | '-' | '.'));
    if !scheme_ok {
        return None;
    }
    let path_start = rest.find(['/', '?']).unwrap_or(rest.len());
    if path_start == 0 {
        return None; // no authority
    }
    Some(&rest[path_start..])
}

impl Request {
    /// The request target as sent: `/path?query` or an absolute URI.
    pub fn target(&self) -> &str {
        &self.target
    }

    /// The path of the target, without the query; `/` if the absolute form
    /// had none.
    pub fn path(&self) -> &str {
        let rest = origin_form(&self.target).unwrap_or_default();
        match rest.split_once('?').map_or(rest, |(path, _)| path) {
            "" => "/",
            path => path,
        }
    }

    /// The query of the target, without the `?`.
    pub fn query(&self) -> Option<&str> {
        origin_form(&self.target)?.split_once('?').map(|(_, q)| q)
    }

    /// The `Host` header (authority, possibly with a port).
    pub fn host(&self) -> &str {
        &self.host
    }

    /// The `Origin` header, which browsers always send (RFC 6455 §10.2).
    pub fn origin(&self) -> Option<&str> {
        self.origin.as_deref()
    }

    /// The `Sec-WebSocket-Key` header, as sent.
    pub fn key(&self) -> &str {
        &self.key
    }

    /// The subprotocols the client offered, in its order.
    pub fn subprotocols(&self) -> &[String] {
        &self.subprotocols
    }

    /// The extensions the client offered, in its order, across all
    /// `Sec-WebSocket-Extensions` lines.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        values(&self.headers, name).next()
    }

    /// The value of cookie `name` from the `Cookie` header(s) (RFC 6265
    /// §5.4: `name=value` pairs separated by `; `), if present and UTF-8.
    pub fn cookie(&self, name: &str) -> Option<&str> {
        values(&self.headers, "cookie")
            .filter_map(|line| std::str::from_utf8(line).ok())
            .flat_map(|line| line.split(';'))
            .filter_map(|pair| pair.trim().split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.trim_matches('"'))
    }

    /// Every header line as `(name as sent, value)`, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }

    /// The first of `supported` (the server's preference order) that the
    /// client offered, compared exactly.
    pub fn negotiate_subprotocol<'a, S: AsRef<str>>(&self, supported: &'a [S]) -> Option<&'a str> {
        supported
            .iter()
            .map(AsRef::as_ref)
            .find(|s| self.subprotocols.iter().any(|o| o == s))
    }

    /// The first permessage-deflate offer (in the client's order) that
    /// `config` accepts: the element to echo through
    /// [`Request::accept_response`] and the parameters for
    /// [`Connection::set_deflate`](crate::Connection::set_deflate). Invalid
    /// offers are declined, not refused: the connection goes on without
    /// compression (RFC 7692 §5).
    pub fn negotiate_deflate(
        &self,
        config: &DeflateConfig,
    ) -> Option<(ExtensionOffer, PerMessageDeflate)> {
        config.accept(&self.extensions)
    }

    /// The complete `101 Switching Protocols` head accepting this request.
    ///
    /// `subprotocol` should come from [`Request::negotiate_subprotocol`] and
    /// `extensions` should echo only offers the client made (with the
    /// parameters the server settled on): a client fails the connection on
    /// anything it did not offer. `extra_headers` are appended as given,
    /// e.g. `Set-Cookie`.
    ///
    /// # Panics
    /// If a header name is not a token or a value holds CR, LF or NUL; values
    /// taken from this request never do.
    pub fn accept_response(
        &self,
        subprotocol: Option<&str>,
        extensions: &[ExtensionOffer],
        extra_headers: &[(&str, &str)],
    ) -> Vec<u8> {
        let mut out = Vec::with_capacity(160);
        out.extend_from_slice(b"HTTP/1.1 101 Switching Protocols\r\n");
        push_header(&mut out, "Upgrade", "websocket");
        push_header(&mut out, "Connection", "Upgrade");
        push_header(
            &mut out,
            "Sec-WebSocket-Accept",
            &accept_key(self.key.as_bytes()),
        );
        if let Some(p) = subprotocol {
            push_header(&mut out, "Sec-WebSocket-Protocol", p);
        }
        if !extensions.is_empty() {
            push_header(
                &mut out,
                "Sec-WebSocket-Extensions",
                &extensions::format_header(extensions),
            );
        }
        for (name, value) in extra_headers {
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "dGhlIHNhbXBsZSBub25jZQ==";

    fn base() -> Vec<(&'static str, &'static [u8])> {
        vec![
            ("Host", b"example.com"),
            ("Upgrade", b"websocket"),
            ("Connection", b"Upgrade"),
            ("Sec-WebSocket-Key", KEY.as_bytes()),
            ("Sec-WebSocket-Version", b"13"),
        ]
    }

    fn check(
        target: &str,
        headers: &[(&'static str, &'static [u8])],
    ) -> Result<Request, HandshakeError> {
        validate_upgrade("GET", (1, 1), target, headers.iter().copied())
    }

    fn without(name: &str) -> Vec<(&'static str, &'static [u8])> {
        base().into_iter().filter(|(n, _)| *n != name).collect()
    }

    fn with(extra: (&'static str, &'static [u8])) -> Vec<(&'static str, &'static [u8])> {
        let mut h = base();
        h.push(extra);
        h
    }

    fn replaced(name: &str, value: &'static [u8]) -> Vec<(&'static str, &'static [u8])> {
        base()
            .into_iter()
            .map(|(n, v)| if n == name { (n, value) } else { (n, v) })
            .collect()
    }

    #[test]
    fn minimal_request_is_valid() {
        let r = check("/chat", &base()).unwrap();
        assert_eq!(r.host(), "example.com");
        assert_eq!(r.key(), KEY);
        assert_eq!(r.path(), "/chat");
        assert_eq!(r.query(), None);
        assert_eq!(r.origin(), None);
        assert!(r.subprotocols().is_empty() && r.extensions().is_empty());
        assert_eq!(r.headers().count(), 5);
    }

    #[test]
    fn method_and_version_checked_first() {
        let h = base();
        let e = validate_upgrade("POST", (1, 1), "/", h.iter().copied()).unwrap_err();
        assert_eq!(e, HandshakeError::MethodNotGet("POST".into()));
        let e = validate_upgrade("GET", (1, 0), "/", h.iter().copied()).unwrap_err();
        assert_eq!(e, HandshakeError::HttpVersion);
        assert!(validate_upgrade("GET", (2, 0), "/", h.iter().copied()).is_ok());
    }

    #[test]
    fn targets() {
        for (target, path, query) in [
            ("/", "/", None),
            ("/a/b?x=1&y", "/a/b", Some("x=1&y")),
            ("/?", "/", Some("")),
            ("ws://example.com/chat?room=1", "/chat", Some("room=1")),
            ("wss://example.com:8443", "/", None),
            ("http://example.com?x", "/", Some("x")),
        ] {
            let r = check(target, &base()).unwrap();
            assert_eq!((r.path(), r.query()), (path, query), "{target}");
            assert_eq!(r.target(), target);
        }
        for bad in [
            "*",
            "example.com:80",
            "chat",
            "",
            "ws:///x",
            "/a#frag",
            "1ws://h/",
            "://h/",
        ] {
            assert_eq!(
                check(bad, &base()).unwrap_err(),
                HandshakeError::BadTarget,
                "{bad}"
            );
        }
    }

    #[test]
    fn host_rules() {
        assert_eq!(
            check("/", &without("Host")).unwrap_err(),
            HandshakeError::MissingHost
        );
        assert_eq!(
            check("/", &replaced("Host", b" ")).unwrap_err(),
            HandshakeError::MissingHost
        );
        assert_eq!(
            check("/", &with(("host", b"other"))).unwrap_err(),
            HandshakeError::DuplicateHost
        );
    }

    #[test]
    fn upgrade_and_connection_tokens() {
        assert_eq!(
            check("/", &without("Upgrade")).unwrap_err(),
            HandshakeError::MissingUpgrade
        );
        assert_eq!(
            check("/", &replaced("Upgrade", b"h2c")).unwrap_err(),
            HandshakeError::MissingUpgrade
        );
        assert_eq!(
            check("/", &replaced("Connection", b"keep-alive")).unwrap_err(),
            HandshakeError::MissingConnectionUpgrade
        );
        assert!(check("/", &replaced("Connection", b"keep-alive, Upgrade")).is_ok());
        assert!(check("/", &replaced("Upgrade", b"WebSocket, h2c")).is_ok());
        // Tokens may also be spread over several header lines.
        let mut h = replaced("Connection", b"keep-alive");
        h.push(("connection", b"upgrade"));
        assert!(check("/", &h).is_ok());
    }

    #[test]
    fn version_rules() {
        assert_eq!(
            check("/", &without("Sec-WebSocket-Version")).unwrap_err(),
            HandshakeError::MissingVersion
        );
        assert_eq!(
            check("/", &replaced("Sec-WebSocket-Version", b"8")).unwrap_err(),
            HandshakeError::UnsupportedVersion("8".into())
        );
        assert_eq!(
            check("/", &with(("Sec-WebSocket-Version", b"8"))).unwrap_err(),
            HandshakeError::UnsupportedVersion("13, 8".into())
        );
        assert!(check("/", &replaced("Sec-WebSocket-Version", b" 13 ")).is_ok());
    }

    #[test]
    fn key_rules() {
        assert_eq!(
            check("/", &without("Sec-WebSocket-Key")).unwrap_err(),
            HandshakeError::MissingKey
        );
        assert_eq!(
            check("/", &with(("sec-websocket-key", KEY.as_bytes()))).unwrap_err(),
            HandshakeError::DuplicateKey
        );
        assert!(
            check(
                "/",
                &replaced("Sec-WebSocket-Key", b"AAAAAAAAAAAAAAAAAAAAAA==")
            )
            .is_ok()
        );
        for bad in [
            &b"AAAAAAAAAAAAAAAAAAAA"[..], // 15 bytes
            b"AAAAAAAAAAAAAAAAAAAAAAA=",  // 17 bytes
            b"AAAAAAAAAAAAAAAAAAAAAA",    // 16 bytes, unpadded
            b"AAAAAAAAAAAAAAAAAAAAA!==",  // not base64
            b"AAAAAAAAAAAAAAAAAAAAAB==",  // non-canonical trailing bits
            b"",
        ] {
            let result = check("/", &replaced("Sec-WebSocket-Key", bad));
            assert_eq!(result.unwrap_err(), HandshakeError::InvalidKey, "{bad:?}");
        }
    }

    #[test]
    fn subprotocols_and_preference() {
        let mut h = with(("Sec-WebSocket-Protocol", b"chat, superchat"));
        h.push(("sec-websocket-protocol", b" v2.json ,"));
        let r = check("/", &h).unwrap();
        assert_eq!(r.subprotocols(), ["chat", "superchat", "v2.json"]);
        assert_eq!(
            r.negotiate_subprotocol(&["superchat", "chat"]),
            Some("superchat")
        );
        assert_eq!(
            r.negotiate_subprotocol(&["v2.json".to_owned()]),
            Some("v2.json")
        );
        assert_eq!(r.negotiate_subprotocol(&["Chat"]), None);
        assert_eq!(r.negotiate_subprotocol::<&str>(&[]), None);
        assert_eq!(
            check("/", &with(("Sec-WebSocket-Protocol", b"a b"))).unwrap_err(),
            HandshakeError::BadSubprotocolHeader
        );
    }

    #[test]
    fn extensions_across_lines() {
        let mut h = with((
            "Sec-WebSocket-Extensions",
            b"permessage-deflate; client_max_window_bits",
        ));
        h.push(("Sec-WebSocket-Extensions", b"x-webkit-deflate-frame"));
        let r = check("/", &h).unwrap();
        let names: Vec<_> = r.extensions().iter().map(|e| e.name.as_str()).collect();
        assert_eq!(names, ["permessage-deflate", "x-webkit-deflate-frame"]);
        assert_eq!(
            check("/", &with(("Sec-WebSocket-Extensions", b"a;;"))).unwrap_err(),
            HandshakeError::BadExtensionHeader
        );
    }

    #[test]
    fn origin_rules() {
        let r = check("/", &with(("Origin", b"https://example.com"))).unwrap();
        assert_eq!(r.origin(), Some("https://example.com"));
        let mut h = with(("Origin", b"https://a"));
        h.push(("origin", b"https://b"));
        assert!(matches!(check("/", &h), Err(HandshakeError::Malformed(_))));
        assert!(matches!(
            check("/", &with(("Origin", b"\xff"))),
            Err(HandshakeError::Malformed(_))
        ));
    }

    #[test]
    fn accept_response_bytes() {
        let r = check("/chat", &with(("Sec-WebSocket-Protocol", b"chat"))).unwrap();
        let offers =
            [ExtensionOffer::new("permessage-deflate").param("server_no_context_takeover", None)];
        let out = r.accept_response(Some("chat"), &offers, &[("Set-Cookie", "a=b")]);
        assert_eq!(
            String::from_utf8(out).unwrap(),
            "HTTP/1.1 101 Switching Protocols\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n\
             Sec-WebSocket-Protocol: chat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; server_no_context_takeover\r\n\
             Set-Cookie: a=b\r\n\
             \r\n"
        );
    }

    #[test]
    fn parse_request_reports_consumed_and_status() {
        let head = format!(
            "GET /x HTTP/1.1\r\nHost: h\r\nUpgrade: websocket\r\nConnection: upgrade\r\n\
             Sec-WebSocket-Key: {KEY}\r\nSec-WebSocket-Version: 13\r\n\r\n"
        );
        let mut buf = head.clone().into_bytes();
        buf.extend_from_slice(b"\x81\x80abcd");
        let (r, consumed) = parse_request(&buf, &HeadLimits::default())
            .unwrap()
            .unwrap();
        assert_eq!(consumed, head.len());
        assert_eq!(r.path(), "/x");
        let e = parse_request(b"GET / HTTP/1.0\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert_eq!(e, HandshakeError::HttpVersion);
        let e = parse_request(b"GET / HTTP/2.0\r\n\r\n", &HeadLimits::default()).unwrap_err();
        assert!(matches!(e, HandshakeError::Malformed(_)));
        let e = parse_request(b"\x16\x03\x01\x02\x00", &HeadLimits::default()).unwrap_err();
        assert!(
            matches!(e, HandshakeError::Malformed(_)),
            "a TLS hello: {e:?}"
        );
    }
}
