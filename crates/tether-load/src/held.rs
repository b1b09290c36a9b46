//! Connections held open through `tether`'s client (idle's and the
//! broadcast subscribers'): what a received item means when it is not a
//! message, and how they close.
//!
//! What it does not do: open connections ([`crate::sources::Dialer`] does)
//! or read messages (the modes do).

use std::time::Duration;

use tether::{CloseCode, Error, Message, WebSocket};
use tokio::{net::TcpStream, time::timeout};

/// How long closing may take.
pub(crate) const CLOSE_TIMEOUT: Duration = Duration::from_secs(15);

/// The message `WebSocket::recv` returned, or why the connection ended:
/// the server closed it (with its code), it failed, or it ended without a
/// close frame.
pub(crate) fn message(received: Option<Result<Message, Error>>) -> Result<Message, String> {
    match received {
        Some(Ok(Message::Close(frame))) => {
            let code = frame.map_or(1005, |frame| frame.code.0);
            Err(format!("server closed the connection ({code})"))
        }
        Some(Ok(message)) => Ok(message),
        Some(Err(error)) => Err(error.to_string()),
        None => Err("connection ended without a close frame".to_owned()),
    }
}

/// Closes cleanly: our close frame, the server's answer, the end of the
/// stream, within [`CLOSE_TIMEOUT`]. Pongs that arrive meanwhile are added
/// to `pongs`.
pub(crate) async fn close(ws: &mut WebSocket<TcpStream>, pongs: &mut u64) -> Result<(), String> {
    let closing = async {
        ws.close(CloseCode::NORMAL, "done")
            .await
            .map_err(|error| error.to_string())?;
        let mut answered = false;
        while let Some(received) = ws.recv().await {
            match received {
                Ok(Message::Close(_)) => answered = true,
                Ok(Message::Pong(_)) => *pongs += 1,
                Ok(_) => {}
                Err(error) => return Err(error.to_string()),
            }
        }
        if answered {
            Ok(())
        } else {
            Err("no close frame from the server".to_owned())
        }
    };
    timeout(CLOSE_TIMEOUT, closing)
        .await
        .unwrap_or_else(|_| Err("close timed out".to_owned()))
}

/// After the server closed or the connection failed: lets the stream
/// finish the close handshake and shut down, within [`CLOSE_TIMEOUT`].
pub(crate) async fn wind_down(ws: &mut WebSocket<TcpStream>) {
    let _ = timeout(CLOSE_TIMEOUT, async { while ws.recv().await.is_some() {} }).await;
}
