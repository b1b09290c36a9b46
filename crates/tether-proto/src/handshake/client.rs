//! The client side: build the upgrade request (RFC 6455 §4.1), then check the
//! server's answer.
//!
//! ```
//! use tether_proto::handshake::client::ClientRequest;
//!
//! let (request, pending) = ClientRequest::new("example.com:8080", "/chat")
//!     .subprotocol("chat")
//!     .header("Origin", "https://example.com")
//!     .encode();
//! // Write `request`; then, as bytes arrive:
//! match pending.parse(b"HTTP/1.1 403 Forbidden\r\n\r\n") {
//!     Ok(Some((_response, _consumed))) => { /* bytes after `consumed` are frames */ }
//!     Ok(None) => { /* read more */ }
//!     Err(e) => println!("{e}"),
//! }
//! # let _ = request;
//! ```

use base64::Engine;
use base64::engine::general_purpose::STANDARD;

use super::extensions::{self, ExtensionOffer};
use super::{
    ClientHandshakeError, HeadFailure, HeadLimits, HeaderLines, VERSION, accept_key, excerpt,
    has_token, own_headers, parse_head, push_header, trim_ows, values,
};
use crate::deflate::{DeflateConfig, PerMessageDeflate};

/// An upgrade request to send, built with chained setters.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientRequest {
    host: String,
    path: String,
    subprotocols: Vec<String>,
    extensions: Vec<ExtensionOffer>,
    deflate: Vec<DeflateConfig>,
    headers: Vec<(String, String)>,
    limits: HeadLimits,
}

impl ClientRequest {
    /// A request for `path` (origin-form, with any query: `/chat?room=1`; an
    /// empty path means `/`) on `host`, written as the `Host` header should
    /// read: with the port unless it is the scheme's default.
    pub fn new(host: impl Into<String>, path: impl Into<String>) -> Self {
        Self {
            host: host.into(),
            path: path.into(),
            subprotocols: Vec::new(),
            extensions: Vec::new(),
            deflate: Vec::new(),
            headers: Vec::new(),
            limits: HeadLimits::default(),
        }
    }

    /// Offers a subprotocol; call again to offer more, in preference order.
    pub fn subprotocol(mut self, name: impl Into<String>) -> Self {
        self.subprotocols.push(name.into());
        self
    }

    /// Offers an extension; call again to offer more, in preference order.
    pub fn extension(mut self, offer: ExtensionOffer) -> Self {
        self.extensions.push(offer);
        self
    }

    /// Offers permessage-deflate with `config`; call again to offer other
    /// parameter sets, in preference order. The response is checked against
    /// these offers and [`Response::deflate`] gives the outcome.
    pub fn deflate(mut self, config: DeflateConfig) -> Self {
        self.extensions.push(config.offer());
        self.deflate.push(config);
        self
    }

    /// Adds a header such as `Origin`, `Cookie` or `Authorization`. It must
    /// not repeat one the handshake writes itself (`Host`, `Upgrade`,
    /// `Connection`, `Sec-WebSocket-*`).
    pub fn header(mut self, name: impl Into<String>, value: impl Into<String>) -> Self {
        self.headers.push((name.into(), value.into()));
        self
    }

    /// Bounds on the server's response head (default [`HeadLimits::default`]).
    pub fn limits(mut self, limits: HeadLimits) -> Self {
        self.limits = limits;
        self
    }

    /// The request bytes, with a fresh random `Sec-WebSocket-Key`, and the
    /// state needed to check the response.
    ///
    /// # Panics
    /// If the path does not start with `/` or holds whitespace, control
    /// characters or `#`, or a header name is not a token, or a value (host,
    /// header, subprotocol) holds CR, LF or NUL.
    pub fn encode(&self) -> (Vec<u8>, PendingResponse) {
        // rand's thread RNG is a CSPRNG (ChaCha, seeded from the OS).
        self.encode_with_key(rand::random())
    }

    fn encode_with_key(&self, key: [u8; 16]) -> (Vec<u8>, PendingResponse) {
        let path = if self.path.is_empty() {
            "/"
        } else {
            &self.path
        };
        assert!(
            path.starts_with('/')
                && !path
                    .chars()
                    .any(|c| c.is_whitespace() || c.is_control() || c == '#'),
            "invalid WebSocket request path {path:?}"
        );
        let key = STANDARD.encode(key);

        let mut out = Vec::with_capacity(256);
        out.extend_from_slice(b"GET ");
        out.extend_from_slice(path.as_bytes());
        out.extend_from_slice(b" HTTP/1.1\r\n");
        push_header(&mut out, "Host", &self.host);
        push_header(&mut out, "Upgrade", "websocket");
        push_header(&mut out, "Connection", "Upgrade");
        push_header(&mut out, "Sec-WebSocket-Key", &key);
        push_header(&mut out, "Sec-WebSocket-Version", VERSION);
        if !self.subprotocols.is_empty() {
            push_header(
                &mut out,
                "Sec-WebSocket-Protocol",
                &self.subprotocols.join(", "),
            );
        }
        if !self.extensions.is_empty() {
            push_header(
                &mut out,
                "Sec-WebSocket-Extensions",
                &extensions::format_header(&self.extensions),
            );
        }
        for (name, value) in &self.headers {
            push_header(&mut out, name, value);
        }
        out.extend_from_slice(b"\r\n");

        let pending = PendingResponse {
            accept: accept_key(key.as_bytes()),
            subprotocols: self.subprotocols.clone(),
            extensions: self.extensions.iter().map(|e| e.name.clone()).collect(),
            deflate: self.deflate.clone(),
            limits: self.limits,
        };
        (out, pending)
    }
}

/// What a sent request expects back: the accept key and what was offered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PendingResponse {
    accept: String,
    subprotocols: Vec<String>,
    extensions: Vec<String>,
    deflate: Vec<DeflateConfig>,
    limits: HeadLimits,
}

impl PendingResponse {
    /// Parses and checks the response head at the start of `buf`.
    ///
    /// Returns `Ok(None)` while the head is incomplete: read more bytes,
    /// append them to `buf` and call again. On success, returns the response
    /// and the length of its head; `buf[consumed..]` is the start of the
    /// server's WebSocket frames and must go to the frame decoder.
    pub fn parse(&self, buf: &[u8]) -> Result<Option<(Response, usize)>, ClientHandshakeError> {
        let mut slots = vec![httparse::EMPTY_HEADER; self.limits.max_headers];
        let mut res = httparse::Response::new(&mut slots);
        let consumed = match parse_head(buf, &self.limits, |b| res.parse(b)) {
            Ok(Some(len)) => len,
            Ok(None) => return Ok(None),
            Err(HeadFailure::TooLarge) => return Err(ClientHandshakeError::HeadTooLarge),
            Err(HeadFailure::TooManyHeaders) => return Err(ClientHandshakeError::TooManyHeaders),
            Err(HeadFailure::Malformed(what)) => return Err(ClientHandshakeError::Malformed(what)),
        };
        let (Some(status), Some(minor)) = (res.code, res.version) else {
            // httparse fills both before reporting a complete head.
            return Err(ClientHandshakeError::Malformed("incomplete status line"));
        };
        if status != 101 {
            return Err(ClientHandshakeError::Status {
                status,
                reason: res.reason.unwrap_or_default().to_owned(),
            });
        }
        if minor < 1 {
            return Err(ClientHandshakeError::HttpVersion);
        }
        let headers = own_headers(res.headers);
        self.check(headers).map(|r| Some((r, consumed)))
    }

    /// RFC 6455 §4.2.2 from the client's side, one rule after another.
    fn check(&self, headers: HeaderLines) -> Result<Response, ClientHandshakeError> {
        if !has_token(&headers, "Upgrade", "websocket") {
            return Err(ClientHandshakeError::MissingUpgrade);
        }
        if !has_token(&headers, "Connection", "upgrade") {
            return Err(ClientHandshakeError::MissingConnectionUpgrade);
        }
        self.check_accept(&headers)?;
        let subprotocol = self.subprotocol(&headers)?;
        let accepted = self.accepted_extensions(&headers)?;
        let deflate = if self.deflate.is_empty() {
            None
        } else {
            DeflateConfig::check_response(&self.deflate, &accepted)
                .map_err(|e| ClientHandshakeError::BadExtensionParams(e.to_string()))?
        };
        Ok(Response {
            subprotocol,
            extensions: accepted,
            deflate,
            headers,
        })
    }

    /// Exactly one `Sec-WebSocket-Accept`, matching our key.
    fn check_accept(&self, headers: &HeaderLines) -> Result<(), ClientHandshakeError> {
        let mut accepts = values(headers, "Sec-WebSocket-Accept");
        match (accepts.next(), accepts.next()) {
            (Some(a), None) if trim_ows(a) == self.accept.as_bytes() => Ok(()),
            _ => Err(ClientHandshakeError::BadAccept),
        }
    }

    /// The subprotocol the server chose: none, or one of ours.
    fn subprotocol(&self, headers: &HeaderLines) -> Result<Option<String>, ClientHandshakeError> {
        let protocols: Vec<&[u8]> = values(headers, "Sec-WebSocket-Protocol").collect();
        match protocols.as_slice() {
            [] => Ok(None),
            [p] if self
                .subprotocols
                .iter()
                .any(|o| o.as_bytes() == trim_ows(p)) =>
            {
                Ok(Some(String::from_utf8_lossy(trim_ows(p)).into_owned()))
            }
            ps => Err(ClientHandshakeError::UnexpectedSubprotocol(excerpt(
                &ps.join(&b", "[..]),
                64,
            ))),
        }
    }

    /// The extensions the server accepted, each one we offered.
    fn accepted_extensions(
        &self,
        headers: &HeaderLines,
    ) -> Result<Vec<ExtensionOffer>, ClientHandshakeError> {
        let mut accepted = Vec::new();
        for value in values(headers, "Sec-WebSocket-Extensions") {
            extensions::parse_header(value, &mut accepted)
                .map_err(|_| ClientHandshakeError::BadExtensionHeader)?;
        }
        if let Some(e) = accepted
            .iter()
            .find(|e| !self.extensions.iter().any(|name| e.is(name)))
        {
            return Err(ClientHandshakeError::UnexpectedExtension(e.name.clone()));
        }
        Ok(accepted)
    }
}

/// An accepted `101 Switching Protocols` response.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    subprotocol: Option<String>,
    extensions: Vec<ExtensionOffer>,
    deflate: Option<PerMessageDeflate>,
    headers: HeaderLines,
}

impl Response {
    /// The subprotocol the server selected, one of those we offered.
    pub fn subprotocol(&self) -> Option<&str> {
        self.subprotocol.as_deref()
    }

    /// The extensions the server accepted, with its parameters; each is one
    /// we offered.
    pub fn extensions(&self) -> &[ExtensionOffer] {
        &self.extensions
    }

    /// The permessage-deflate the server accepted, if it was offered with
    /// [`ClientRequest::deflate`]: pass it to
    /// [`Connection::set_deflate`](crate::Connection::set_deflate).
    pub fn deflate(&self) -> Option<&PerMessageDeflate> {
        self.deflate.as_ref()
    }

    /// The first value of header `name` (ASCII case-insensitive).
    pub fn header(&self, name: &str) -> Option<&[u8]> {
        values(&self.headers, name).next()
    }

    /// Every header line as `(name as sent, value)`, in order.
    pub fn headers(&self) -> impl Iterator<Item = (&str, &[u8])> {
        self.headers.iter()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // The RFC 6455 §1.3 sample nonce.
    const NONCE: [u8; 16] = *b"the sample nonce";

    fn ok_head(extra: &str) -> String {
        format!(
            "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n\
             Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n{extra}\r\n"
        )
    }

    #[test]
    fn request_bytes() {
        let (bytes, _) = ClientRequest::new("example.com:8080", "/chat?x=1")
            .subprotocol("chat")
            .subprotocol("superchat")
            .extension(
                ExtensionOffer::new("permessage-deflate").param("client_max_window_bits", None),
            )
            .header("Origin", "http://example.com")
            .encode_with_key(NONCE);
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "GET /chat?x=1 HTTP/1.1\r\n\
             Host: example.com:8080\r\n\
             Upgrade: websocket\r\n\
             Connection: Upgrade\r\n\
             Sec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n\
             Sec-WebSocket-Version: 13\r\n\
             Sec-WebSocket-Protocol: chat, superchat\r\n\
             Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n\
             Origin: http://example.com\r\n\
             \r\n"
        );
    }

    #[test]
    fn empty_path_is_root() {
        let (bytes, _) = ClientRequest::new("h", "").encode_with_key(NONCE);
        assert!(bytes.starts_with(b"GET / HTTP/1.1\r\n"));
    }

    #[test]
    #[should_panic(expected = "invalid WebSocket request path")]
    fn path_with_space_panics() {
        let _ = ClientRequest::new("h", "/a b").encode();
    }

    #[test]
    fn keys_are_fresh() {
        let req = ClientRequest::new("h", "/");
        assert_ne!(req.encode().1, req.encode().1);
    }

    #[test]
    fn accepts_matching_response() {
        let (_, pending) = ClientRequest::new("h", "/").encode_with_key(NONCE);
        let head = ok_head("");
        let mut buf = head.clone().into_bytes();
        buf.extend_from_slice(b"\x81\x02hi");
        let (res, consumed) = pending.parse(&buf).unwrap().unwrap();
        assert_eq!(consumed, head.len());
        assert_eq!(res.subprotocol(), None);
        assert!(res.extensions().is_empty());
        assert_eq!(res.header("upgrade"), Some(&b"websocket"[..]));
    }

    #[test]
    fn token_lists_in_response() {
        let (_, pending) = ClientRequest::new("h", "/").encode_with_key(NONCE);
        let head = "HTTP/1.1 101 Switching Protocols\r\nUpgrade: WebSocket\r\n\
                    Connection: keep-alive, UPGRADE\r\n\
                    Sec-WebSocket-Accept:  s3pPLMBiTxaQ9kYGzzhZRbK+xOo= \r\n\r\n";
        assert!(pending.parse(head.as_bytes()).unwrap().is_some());
        let head = head.replace("UPGRADE", "close");
        assert_eq!(
            pending.parse(head.as_bytes()).unwrap_err(),
            ClientHandshakeError::MissingConnectionUpgrade
        );
        let head = ok_head("").replace("Upgrade: websocket", "Upgrade: h2c");
        assert_eq!(
            pending.parse(head.as_bytes()).unwrap_err(),
            ClientHandshakeError::MissingUpgrade
        );
    }

    #[test]
    fn duplicate_accept_is_bad() {
        let (_, pending) = ClientRequest::new("h", "/").encode_with_key(NONCE);
        let head = ok_head("Sec-WebSocket-Accept: s3pPLMBiTxaQ9kYGzzhZRbK+xOo=\r\n");
        assert_eq!(
            pending.parse(head.as_bytes()).unwrap_err(),
            ClientHandshakeError::BadAccept
        );
    }

    #[test]
    fn http_10_101_is_refused() {
        let (_, pending) = ClientRequest::new("h", "/").encode_with_key(NONCE);
        let head = ok_head("").replace("HTTP/1.1", "HTTP/1.0");
        assert_eq!(
            pending.parse(head.as_bytes()).unwrap_err(),
            ClientHandshakeError::HttpVersion
        );
    }

    #[test]
    fn two_subprotocols_selected_is_unexpected() {
        let (_, pending) = ClientRequest::new("h", "/")
            .subprotocol("a")
            .subprotocol("b")
            .encode_with_key(NONCE);
        let head = ok_head("Sec-WebSocket-Protocol: a, b\r\n");
        assert_eq!(
            pending.parse(head.as_bytes()).unwrap_err(),
            ClientHandshakeError::UnexpectedSubprotocol("a, b".into())
        );
        let head = ok_head("Sec-WebSocket-Protocol: b\r\n");
        let (res, _) = pending.parse(head.as_bytes()).unwrap().unwrap();
        assert_eq!(res.subprotocol(), Some("b"));
    }

    #[test]
    fn response_limits() {
        let (_, pending) = ClientRequest::new("h", "/")
            .limits(HeadLimits {
                max_head_bytes: 64,
                max_headers: 3,
            })
            .encode_with_key(NONCE);
        let mut partial = b"HTTP/1.1 101 S\r\nX: ".to_vec();
        partial.resize(64, b'a');
        assert_eq!(pending.parse(&partial).unwrap(), None);
        partial.push(b'a');
        assert_eq!(
            pending.parse(&partial).unwrap_err(),
            ClientHandshakeError::HeadTooLarge
        );
        assert_eq!(
            pending
                .parse(b"HTTP/1.1 101 S\r\na: 1\r\nb: 2\r\nc: 3\r\nd: 4\r\n\r\n")
                .unwrap_err(),
            ClientHandshakeError::TooManyHeaders
        );
    }
}
