//! The HTTP/1.1 upgrade (RFC 6455 §4): request and response heads.
//!
//! Both sides parse incrementally from a caller-owned buffer and report how
//! many bytes the HTTP head took. Whatever follows the head is already
//! WebSocket frames (a client may pipeline them) and belongs to the frame
//! decoder.
//!
//! ```text
//!   client: ClientRequest::encode ──► request bytes ──────────► server::parse_request
//!           PendingResponse::parse ◄── 101 (or 4xx) bytes ◄─── Request::accept_response
//!                                                              HandshakeError::response
//! ```

pub mod client;
mod error;
pub mod extensions;
pub mod server;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use sha1::{Digest, Sha1};

pub use error::{ClientHandshakeError, HandshakeError};

/// The GUID of RFC 6455 §1.3, appended to the key before hashing.
const ACCEPT_GUID: &[u8] = b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11";

/// The only protocol version this crate speaks (RFC 6455 §4.1).
const VERSION: &str = "13";

/// The `Sec-WebSocket-Accept` value for a `Sec-WebSocket-Key` (RFC 6455 §1.3):
/// base64(SHA-1(key + GUID)). `key` is the header value as sent (still base64).
///
/// ```
/// use tether_proto::handshake::accept_key;
/// assert_eq!(accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="), "s3pPLMBiTxaQ9kYGzzhZRbK+xOo=");
/// ```
pub fn accept_key(key: &[u8]) -> String {
    let mut sha = Sha1::new();
    sha.update(key);
    sha.update(ACCEPT_GUID);
    STANDARD.encode(sha.finalize())
}

/// Bounds on an HTTP head a peer sends us, checked before the head is
/// complete so a peer cannot make us buffer without limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub struct HeadLimits {
    /// Largest head, request line to the blank line included (default 16 KiB).
    pub max_head_bytes: usize,
    /// Most header lines (default 100).
    pub max_headers: usize,
}

impl Default for HeadLimits {
    fn default() -> Self {
        Self {
            max_head_bytes: 16 << 10,
            max_headers: 100,
        }
    }
}

/// What went wrong while parsing a head with httparse, before any WebSocket
/// rule is checked.
enum HeadFailure {
    TooLarge,
    TooManyHeaders,
    Malformed(&'static str),
}

/// Runs an httparse `parse` over at most `limits.max_head_bytes` of `buf`.
///
/// Returns `Ok(None)` while the head is incomplete and may still fit.
fn parse_head<'b>(
    buf: &'b [u8],
    limits: &HeadLimits,
    parse: impl FnOnce(&'b [u8]) -> httparse::Result<usize>,
) -> Result<Option<usize>, HeadFailure> {
    let window = &buf[..buf.len().min(limits.max_head_bytes)];
    match parse(window) {
        Ok(httparse::Status::Complete(len)) => Ok(Some(len)),
        Ok(httparse::Status::Partial) if buf.len() > limits.max_head_bytes => {
            Err(HeadFailure::TooLarge)
        }
        Ok(httparse::Status::Partial) => Ok(None),
        Err(httparse::Error::TooManyHeaders) => Err(HeadFailure::TooManyHeaders),
        Err(e) => Err(HeadFailure::Malformed(httparse_reason(e))),
    }
}

fn httparse_reason(e: httparse::Error) -> &'static str {
    match e {
        httparse::Error::HeaderName => "invalid header name",
        httparse::Error::HeaderValue => "invalid header value",
        httparse::Error::NewLine => "invalid line ending",
        httparse::Error::Status => "invalid status line",
        httparse::Error::Token => "invalid request line",
        httparse::Error::TooManyHeaders => "too many headers",
        httparse::Error::Version => "invalid HTTP version",
    }
}

/// The header lines of a head, names as sent, in order. Every name shares one
/// string and every value one buffer, so keeping a head costs three
/// allocations rather than two per line.
#[derive(Clone, Default, PartialEq, Eq)]
struct HeaderLines {
    names: String,
    values: Vec<u8>,
    /// Where each line's name ends in `names` and its value in `values`.
    ends: Vec<(usize, usize)>,
}

impl HeaderLines {
    /// Room for `lines` lines whose names and values take `name_bytes` and
    /// `value_bytes`.
    fn with_capacity(lines: usize, name_bytes: usize, value_bytes: usize) -> Self {
        Self {
            names: String::with_capacity(name_bytes),
            values: Vec::with_capacity(value_bytes),
            ends: Vec::with_capacity(lines),
        }
    }

    fn push(&mut self, name: &str, value: &[u8]) {
        self.names.push_str(name);
        self.values.extend_from_slice(value);
        self.ends.push((self.names.len(), self.values.len()));
    }

    /// Every line as `(name, value)`, in order.
    fn iter(&self) -> impl Iterator<Item = (&str, &[u8])> {
        let mut starts = (0, 0);
        self.ends.iter().map(move |&(name_end, value_end)| {
            let line = (
                &self.names[starts.0..name_end],
                &self.values[starts.1..value_end],
            );
            starts = (name_end, value_end);
            line
        })
    }
}

impl<'h> FromIterator<(&'h str, &'h [u8])> for HeaderLines {
    fn from_iter<I: IntoIterator<Item = (&'h str, &'h [u8])>>(lines: I) -> Self {
        let mut headers = Self::default();
        for (name, value) in lines {
            headers.push(name, value);
        }
        headers
    }
}

impl std::fmt::Debug for HeaderLines {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_list()
            .entries(
                self.iter()
                    .map(|(name, value)| (name, String::from_utf8_lossy(value))),
            )
            .finish()
    }
}

/// Copies httparse's borrowed headers out of the read buffer.
fn own_headers(headers: &[httparse::Header<'_>]) -> HeaderLines {
    let name_bytes = headers.iter().map(|h| h.name.len()).sum();
    let value_bytes = headers.iter().map(|h| h.value.len()).sum();
    let mut lines = HeaderLines::with_capacity(headers.len(), name_bytes, value_bytes);
    for header in headers {
        lines.push(header.name, header.value);
    }
    lines
}

/// All values of header `name` (ASCII case-insensitive), in order.
fn values<'a>(headers: &'a HeaderLines, name: &str) -> impl Iterator<Item = &'a [u8]> {
    headers
        .iter()
        .filter(move |(n, _)| n.eq_ignore_ascii_case(name))
        .map(|(_, v)| v)
}

/// Whether any comma-separated element of any `name` header equals `token`
/// (ASCII case-insensitive), e.g. `Connection: keep-alive, Upgrade`.
fn has_token(headers: &HeaderLines, name: &str, token: &str) -> bool {
    values(headers, name).any(|v| {
        v.split(|&b| b == b',')
            .any(|item| trim_ows(item).eq_ignore_ascii_case(token.as_bytes()))
    })
}

/// Strips HTTP optional whitespace (SP, HTAB) from both ends.
fn trim_ows(mut s: &[u8]) -> &[u8] {
    while let [b' ' | b'\t', rest @ ..] = s {
        s = rest;
    }
    while let [rest @ .., b' ' | b'\t'] = s {
        s = rest;
    }
    s
}

/// RFC 7230 §3.2.6 `tchar`.
fn is_tchar(b: u8) -> bool {
    b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b)
}

/// A non-empty RFC 7230 token.
fn is_token(s: &[u8]) -> bool {
    !s.is_empty() && s.iter().all(|&b| is_tchar(b))
}

/// Lossy UTF-8 of a peer value, cut to `max` characters, for error messages.
fn excerpt(bytes: &[u8], max: usize) -> String {
    let s = String::from_utf8_lossy(bytes);
    let mut out: String = s.chars().take(max).collect();
    if s.chars().nth(max).is_some() {
        out.push('…');
    }
    out
}

/// Appends `name: value\r\n`.
///
/// # Panics
/// If `name` is not a token or `value` holds CR, LF or NUL: the caller would
/// otherwise inject headers into the head.
fn push_header(out: &mut Vec<u8>, name: &str, value: &str) {
    assert!(
        is_token(name.as_bytes()),
        "invalid HTTP header name {name:?}"
    );
    assert!(
        !value.bytes().any(|b| matches!(b, b'\r' | b'\n' | 0)),
        "HTTP header {name} has CR, LF or NUL in its value"
    );
    out.extend_from_slice(name.as_bytes());
    out.extend_from_slice(b": ");
    out.extend_from_slice(value.as_bytes());
    out.extend_from_slice(b"\r\n");
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rfc6455_section_1_3_accept_key() {
        assert_eq!(
            accept_key(b"dGhlIHNhbXBsZSBub25jZQ=="),
            "s3pPLMBiTxaQ9kYGzzhZRbK+xOo="
        );
    }

    #[test]
    fn token_lists_are_case_insensitive() {
        let headers: HeaderLines = [
            ("connection", &b"keep-alive, Upgrade"[..]),
            ("UPGRADE", b"h2c ,\tWebSocket "),
        ]
        .into_iter()
        .collect();
        assert!(has_token(&headers, "Connection", "upgrade"));
        assert!(has_token(&headers, "Upgrade", "websocket"));
        assert!(!has_token(&headers, "Upgrade", "h2"));
        assert!(!has_token(&headers, "Origin", "upgrade"));
    }

    #[test]
    fn token_must_be_whole_element() {
        let headers: HeaderLines = [("Connection", &b"upgraded, notupgrade"[..])]
            .into_iter()
            .collect();
        assert!(!has_token(&headers, "Connection", "upgrade"));
    }

    #[test]
    fn header_lines_keep_every_line_in_order() {
        let lines = [
            ("Host", &b"example.com"[..]),
            ("X-Empty", b""),
            ("host", b"other"),
        ];
        let headers: HeaderLines = lines.into_iter().collect();
        assert_eq!(headers.iter().collect::<Vec<_>>(), lines);
        assert_eq!(
            values(&headers, "HOST").collect::<Vec<_>>(),
            [&b"example.com"[..], b"other"]
        );
        assert_eq!(values(&headers, "x-empty").collect::<Vec<_>>(), [b""]);
        assert_eq!(values(&headers, "Origin").count(), 0);
    }

    #[test]
    fn trim_ows_strips_spaces_and_tabs_only() {
        assert_eq!(trim_ows(b" \t a b \t"), b"a b");
        assert_eq!(trim_ows(b"   "), b"");
        assert_eq!(trim_ows(b"\r"), b"\r");
    }

    #[test]
    fn excerpt_cuts_long_values() {
        assert_eq!(excerpt(b"abc", 5), "abc");
        assert_eq!(excerpt(b"abcdef", 3), "abc…");
        assert_eq!(excerpt(b"a\xffb", 5), "a\u{fffd}b");
    }

    #[test]
    #[should_panic(expected = "CR, LF or NUL")]
    fn push_header_refuses_injection() {
        push_header(&mut Vec::new(), "X-Test", "a\r\nSet-Cookie: x");
    }

    #[test]
    fn head_limits_defaults_and_fields() {
        let mut l = HeadLimits::default();
        assert_eq!((l.max_head_bytes, l.max_headers), (16384, 100));
        l.max_head_bytes = 10;
        l.max_headers = 2;
        assert_eq!((l.max_head_bytes, l.max_headers), (10, 2));
    }
}
