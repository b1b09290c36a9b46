//! Why a handshake failed: the server's refusals and the client's rejections.

use std::fmt;

use super::{VERSION, push_header};

/// A refused upgrade request. Each variant names the rule (RFC 6455 §4.2.1
/// unless noted); [`HandshakeError::http_status`] gives the status to answer
/// with and [`HandshakeError::response`] the complete response bytes.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum HandshakeError {
    /// The method is not `GET` (405). Holds the method as sent.
    MethodNotGet(String),
    /// The request is HTTP/1.0; HTTP/1.1 or later is required (400).
    HttpVersion,
    /// The request target is neither origin-form (`/path?query`) nor
    /// absolute-form (`ws://host/path`) (400).
    BadTarget,
    /// No `Host` header, or an empty one (400).
    MissingHost,
    /// More than one `Host` header (RFC 7230 §5.4, 400).
    DuplicateHost,
    /// `Upgrade` lacks the token `websocket` (400).
    MissingUpgrade,
    /// `Connection` lacks the token `upgrade` (400).
    MissingConnectionUpgrade,
    /// No `Sec-WebSocket-Key` header (400).
    MissingKey,
    /// More than one `Sec-WebSocket-Key` header (400).
    DuplicateKey,
    /// `Sec-WebSocket-Key` is not the base64 of exactly 16 bytes (400).
    InvalidKey,
    /// No `Sec-WebSocket-Version` header (426, §4.2.2).
    MissingVersion,
    /// `Sec-WebSocket-Version` is not `13` (426). Holds the value as sent,
    /// shortened.
    UnsupportedVersion(String),
    /// The head grew past `HeadLimits::max_head_bytes` (431).
    HeadTooLarge,
    /// The head has more than `HeadLimits::max_headers` header lines (431).
    TooManyHeaders,
    /// The bytes are not an HTTP/1.x request head, or a header the handshake
    /// reads is not valid text (400). Holds what was wrong.
    Malformed(&'static str),
    /// `Sec-WebSocket-Extensions` does not follow the §9.1 grammar (400).
    BadExtensionHeader,
    /// `Sec-WebSocket-Protocol` is not a comma-separated list of tokens (400).
    BadSubprotocolHeader,
    /// The application's policy refused the request, e.g. its `Origin` (403).
    /// Holds the reason sent in the body.
    Forbidden(String),
    /// The application refused the request with a status of its choice, e.g.
    /// 401 from an auth hook or 503 while draining.
    Refused {
        /// The HTTP status; anything outside 400–599 is sent as 500.
        status: u16,
        /// The reason sent in the body.
        reason: String,
    },
}

impl HandshakeError {
    /// The HTTP status of the refusal: 400, 403, 405, 426, 431, or the
    /// status of [`HandshakeError::Refused`].
    pub fn http_status(&self) -> u16 {
        match self {
            Self::MethodNotGet(_) => 405,
            Self::MissingVersion | Self::UnsupportedVersion(_) => 426,
            Self::HeadTooLarge | Self::TooManyHeaders => 431,
            Self::Forbidden(_) => 403,
            Self::Refused { status, .. } if (400..=599).contains(status) => *status,
            Self::Refused { .. } => 500,
            _ => 400,
        }
    }

    /// The complete HTTP/1.1 refusal to write before closing the connection:
    /// status line, `Connection: close`, a plain-text one-line reason as the
    /// body, plus `Allow: GET` for 405 and `Sec-WebSocket-Version: 13` for 426.
    pub fn response(&self) -> Vec<u8> {
        let status = self.http_status();
        let mut body: String = self
            .to_string()
            .chars()
            .map(|c| if c.is_control() { ' ' } else { c })
            .collect();
        body.push('\n');

        let mut out = Vec::with_capacity(160 + body.len());
        out.extend_from_slice(
            format!("HTTP/1.1 {status} {}\r\n", reason_phrase(status)).as_bytes(),
        );
        push_header(&mut out, "Connection", "close");
        push_header(&mut out, "Content-Type", "text/plain; charset=utf-8");
        push_header(&mut out, "Content-Length", &body.len().to_string());
        match status {
            405 => push_header(&mut out, "Allow", "GET"),
            426 => push_header(&mut out, "Sec-WebSocket-Version", VERSION),
            _ => {}
        }
        out.extend_from_slice(b"\r\n");
        out.extend_from_slice(body.as_bytes());
        out
    }
}

impl fmt::Display for HandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::MethodNotGet(method) => {
                write!(
                    f,
                    "method {method} not allowed: a WebSocket upgrade is a GET"
                )
            }
            Self::HttpVersion => f.write_str("HTTP/1.1 or later required"),
            Self::BadTarget => f.write_str("request target must be a path or an absolute URI"),
            Self::MissingHost => f.write_str("missing Host header"),
            Self::DuplicateHost => f.write_str("more than one Host header"),
            Self::MissingUpgrade => f.write_str("Upgrade header must contain \"websocket\""),
            Self::MissingConnectionUpgrade => {
                f.write_str("Connection header must contain \"upgrade\"")
            }
            Self::MissingKey => f.write_str("missing Sec-WebSocket-Key header"),
            Self::DuplicateKey => f.write_str("more than one Sec-WebSocket-Key header"),
            Self::InvalidKey => {
                f.write_str("Sec-WebSocket-Key must be the base64 encoding of 16 bytes")
            }
            Self::MissingVersion => f.write_str("missing Sec-WebSocket-Version header (use 13)"),
            Self::UnsupportedVersion(v) => {
                write!(f, "unsupported Sec-WebSocket-Version {v:?} (use 13)")
            }
            Self::HeadTooLarge => f.write_str("request head too large"),
            Self::TooManyHeaders => f.write_str("too many request headers"),
            Self::Malformed(what) => write!(f, "malformed request: {what}"),
            Self::BadExtensionHeader => f.write_str("malformed Sec-WebSocket-Extensions header"),
            Self::BadSubprotocolHeader => f.write_str("malformed Sec-WebSocket-Protocol header"),
            Self::Forbidden(reason) => write!(f, "forbidden: {reason}"),
            Self::Refused { reason, .. } => f.write_str(reason),
        }
    }
}

impl std::error::Error for HandshakeError {}

/// The server's answer to our upgrade request was not an acceptable 101
/// (RFC 6455 §4.1). Each variant names the rule that failed.
#[derive(Debug, Clone, PartialEq, Eq)]
#[non_exhaustive]
pub enum ClientHandshakeError {
    /// The server answered with a status other than 101.
    Status {
        /// The status code, e.g. 403.
        status: u16,
        /// The reason phrase as sent (may be empty).
        reason: String,
    },
    /// The 101 came in an HTTP/1.0 response.
    HttpVersion,
    /// `Upgrade` lacks the token `websocket`.
    MissingUpgrade,
    /// `Connection` lacks the token `upgrade`.
    MissingConnectionUpgrade,
    /// `Sec-WebSocket-Accept` is missing, repeated, or does not match our key.
    BadAccept,
    /// The server selected a subprotocol we did not offer. Holds its value.
    UnexpectedSubprotocol(String),
    /// The server accepted an extension we did not offer. Holds its name.
    UnexpectedExtension(String),
    /// `Sec-WebSocket-Extensions` does not follow the §9.1 grammar.
    BadExtensionHeader,
    /// An accepted extension's parameters are invalid or answer none of our
    /// offers (RFC 7692 §5). Holds what was wrong.
    BadExtensionParams(String),
    /// The response head grew past `HeadLimits::max_head_bytes`.
    HeadTooLarge,
    /// The response head has more than `HeadLimits::max_headers` header lines.
    TooManyHeaders,
    /// The bytes are not an HTTP/1.x response head, or a header the handshake
    /// reads is not valid text. Holds what was wrong.
    Malformed(&'static str),
}

impl fmt::Display for ClientHandshakeError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Status { status, reason } => {
                write!(f, "server refused the upgrade: {status} {reason}")
            }
            Self::HttpVersion => f.write_str("101 response is not HTTP/1.1"),
            Self::MissingUpgrade => f.write_str("Upgrade header must contain \"websocket\""),
            Self::MissingConnectionUpgrade => {
                f.write_str("Connection header must contain \"upgrade\"")
            }
            Self::BadAccept => f.write_str("Sec-WebSocket-Accept is missing or does not match"),
            Self::UnexpectedSubprotocol(p) => {
                write!(
                    f,
                    "server selected subprotocol {p:?}, which we did not offer"
                )
            }
            Self::UnexpectedExtension(e) => {
                write!(f, "server accepted extension {e:?}, which we did not offer")
            }
            Self::BadExtensionHeader => f.write_str("malformed Sec-WebSocket-Extensions header"),
            Self::BadExtensionParams(why) => write!(f, "invalid extension response: {why}"),
            Self::HeadTooLarge => f.write_str("response head too large"),
            Self::TooManyHeaders => f.write_str("too many response headers"),
            Self::Malformed(what) => write!(f, "malformed response: {what}"),
        }
    }
}

impl std::error::Error for ClientHandshakeError {}

/// The reason phrase for the statuses a refusal can carry.
fn reason_phrase(status: u16) -> &'static str {
    match status {
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        405 => "Method Not Allowed",
        408 => "Request Timeout",
        409 => "Conflict",
        410 => "Gone",
        426 => "Upgrade Required",
        429 => "Too Many Requests",
        431 => "Request Header Fields Too Large",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        504 => "Gateway Timeout",
        501..=599 => "Server Error",
        _ => "Client Error",
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn text(e: &HandshakeError) -> String {
        String::from_utf8(e.response()).unwrap()
    }

    #[test]
    fn statuses() {
        let cases = [
            (HandshakeError::MethodNotGet("POST".into()), 405),
            (HandshakeError::HttpVersion, 400),
            (HandshakeError::MissingKey, 400),
            (HandshakeError::MissingVersion, 426),
            (HandshakeError::UnsupportedVersion("8".into()), 426),
            (HandshakeError::HeadTooLarge, 431),
            (HandshakeError::TooManyHeaders, 431),
            (HandshakeError::Forbidden("origin".into()), 403),
            (
                HandshakeError::Refused {
                    status: 503,
                    reason: "draining".into(),
                },
                503,
            ),
            (
                HandshakeError::Refused {
                    status: 101,
                    reason: "nope".into(),
                },
                500,
            ),
        ];
        for (e, status) in cases {
            assert_eq!(e.http_status(), status, "{e:?}");
            assert!(
                text(&e).starts_with(&format!("HTTP/1.1 {status} ")),
                "{e:?}"
            );
        }
    }

    #[test]
    fn refusal_405_is_exact() {
        let e = HandshakeError::MethodNotGet("POST".into());
        let body = "method POST not allowed: a WebSocket upgrade is a GET\n";
        assert_eq!(
            text(&e),
            format!(
                "HTTP/1.1 405 Method Not Allowed\r\nConnection: close\r\n\
                 Content-Type: text/plain; charset=utf-8\r\nContent-Length: {}\r\n\
                 Allow: GET\r\n\r\n{body}",
                body.len()
            )
        );
    }

    #[test]
    fn refusal_426_names_version_13() {
        let t = text(&HandshakeError::UnsupportedVersion("8".into()));
        assert!(t.starts_with("HTTP/1.1 426 Upgrade Required\r\n"));
        assert!(t.contains("\r\nSec-WebSocket-Version: 13\r\n"));
        assert!(!t.contains("Allow:"));
    }

    #[test]
    fn content_length_matches_body_and_body_is_one_line() {
        let e = HandshakeError::Forbidden("bad\r\norigin ü".into());
        let t = text(&e);
        let (_, body) = t.split_once("\r\n\r\n").unwrap();
        assert!(t.contains(&format!("\r\nContent-Length: {}\r\n", body.len())));
        assert!(t.contains("\r\nContent-Type: text/plain; charset=utf-8\r\n"));
        assert_eq!(body, "forbidden: bad  origin ü\n");
    }

    #[test]
    fn client_errors_display() {
        let e = ClientHandshakeError::Status {
            status: 403,
            reason: "Forbidden".into(),
        };
        assert_eq!(e.to_string(), "server refused the upgrade: 403 Forbidden");
    }
}
