//! One error type for the tokio layer, sorted by whose fault it is.

use std::{fmt, io};

use tether_proto::{
    ProtocolError, UsageError,
    handshake::{ClientHandshakeError, HandshakeError},
};

/// Everything that can go wrong on a WebSocket.
#[derive(Debug)]
#[non_exhaustive]
pub enum Error {
    /// The transport failed (reset, broken pipe, TLS failure).
    Io(io::Error),
    /// The peer broke RFC 6455 or exceeded a limit; the connection was
    /// closed with [`ProtocolError::close_code`].
    Protocol(ProtocolError),
    /// A client's upgrade request was refused with an HTTP error.
    Handshake(HandshakeError),
    /// The server's answer to our upgrade request was not an acceptable 101.
    ClientHandshake(ClientHandshakeError),
    /// The handshake did not finish before its deadline.
    HandshakeTimeout,
    /// The caller misused the connection (for example, sent after closing).
    Usage(UsageError),
    /// A `ws://` or `wss://` URL could not be used.
    InvalidUrl(String),
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Self::Io(err) => write!(f, "I/O error: {err}"),
            Self::Protocol(err) => write!(f, "protocol error: {err}"),
            Self::Handshake(err) => write!(f, "handshake refused: {err}"),
            Self::ClientHandshake(err) => write!(f, "handshake failed: {err}"),
            Self::HandshakeTimeout => f.write_str("handshake timed out"),
            Self::Usage(err) => write!(f, "{err}"),
            Self::InvalidUrl(why) => write!(f, "invalid WebSocket URL: {why}"),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Self::Io(err) => Some(err),
            Self::Protocol(err) => Some(err),
            Self::Handshake(err) => Some(err),
            Self::ClientHandshake(err) => Some(err),
            Self::Usage(err) => Some(err),
            Self::HandshakeTimeout | Self::InvalidUrl(_) => None,
        }
    }
}

impl From<io::Error> for Error {
    fn from(err: io::Error) -> Self {
        Self::Io(err)
    }
}

impl From<ProtocolError> for Error {
    fn from(err: ProtocolError) -> Self {
        Self::Protocol(err)
    }
}

impl From<UsageError> for Error {
    fn from(err: UsageError) -> Self {
        Self::Usage(err)
    }
}

impl From<HandshakeError> for Error {
    fn from(err: HandshakeError) -> Self {
        Self::Handshake(err)
    }
}

impl From<ClientHandshakeError> for Error {
    fn from(err: ClientHandshakeError) -> Self {
        Self::ClientHandshake(err)
    }
}
