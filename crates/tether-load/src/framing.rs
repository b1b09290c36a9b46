//! The lean WebSocket client the fast modes (`echo`, `handshake`) drive
//! their sockets with: the upgrade, masked frames encoded straight into one
//! write buffer ([`Outbox`]), and the server's frames decoded in place from
//! the read buffer ([`ServerFrames`]), with no allocation and no copy per
//! message.
//!
//! `tether`'s `WebSocket` would do the same work through message queues and
//! owned payloads, which costs the load generator more CPU per message than
//! the server it measures spends. Frame headers are still parsed and
//! written by `tether_proto`, the upgrade is checked by its handshake, and
//! every rule a client must enforce on server frames (§5.1 unmasked, §5.2 no
//! reserved bits without an extension, §5.4 fragmentation order, §5.5
//! control frames) is enforced here; a violation is an error.
//!
//! What it does not do: extensions, subprotocols, assembling messages (data
//! arrives as the pieces the reads cut it into), or answering pings and
//! closes: the caller decides what each piece means.
//!
//! ```text
//!  frames ──► Outbox: header + masked payload, frame after frame ──► one write
//!  one read ──► ServerFrames: header checked, payload borrowed ──► Frame
//! ```

mod decoder;
mod outbox;

pub(crate) use self::{
    decoder::{Frame, ServerFrames},
    outbox::Outbox,
};

use std::io;

use tether_proto::handshake::{ClientHandshakeError, client::ClientRequest};
use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// Longest payload of a control frame (§5.5).
pub(crate) const MAX_CONTROL_PAYLOAD: usize = 125;

/// Longest control frame a server can send: header plus payload. A read
/// buffer must hold one whole.
pub(crate) const MAX_CONTROL_FRAME: usize = 2 + MAX_CONTROL_PAYLOAD;

/// Why an upgrade failed.
#[derive(Debug)]
pub(crate) enum UpgradeError {
    /// Writing the request or reading the response failed.
    Io(io::Error),
    /// The server closed the connection before its whole response.
    Closed,
    /// The response is not a valid `101` for this request.
    Refused(ClientHandshakeError),
}

/// The client handshake (RFC 6455 §4.1) with no extension and no
/// subprotocol: sends `request` (with a fresh key) and reads the response
/// into `buf`. Returns how many bytes of `buf` the response took; what
/// follows it is the server's first frames.
pub(crate) async fn upgrade(
    tcp: &mut TcpStream,
    request: &ClientRequest,
    buf: &mut Vec<u8>,
) -> Result<usize, UpgradeError> {
    let (head, pending) = request.encode();
    tcp.write_all(&head).await.map_err(UpgradeError::Io)?;
    loop {
        if tcp.read_buf(buf).await.map_err(UpgradeError::Io)? == 0 {
            return Err(UpgradeError::Closed);
        }
        if let Some((_response, consumed)) = pending.parse(buf).map_err(UpgradeError::Refused)? {
            return Ok(consumed);
        }
    }
}
