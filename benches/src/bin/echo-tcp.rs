//! Plain TCP echo: every byte read is written back unchanged. No WebSocket
//! framing, masking or UTF-8 checks: the ceiling the WebSocket servers are
//! measured against. `tcp-load` is its client.

use std::process::ExitCode;

use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Bytes read at once: large enough that a 1 MiB message takes a few
/// system calls, not sixteen.
const READ_BUFFER: usize = 256 * 1024;

fn main() -> ExitCode {
    tether_benches::serve(|mut tcp| async move {
        let mut buffer = vec![0; READ_BUFFER];
        loop {
            match tcp.read(&mut buffer).await {
                Ok(0) | Err(_) => return,
                Ok(read) => {
                    if tcp.write_all(&buffer[..read]).await.is_err() {
                        return;
                    }
                }
            }
        }
    })
}
