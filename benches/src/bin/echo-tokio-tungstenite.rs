//! tokio-tungstenite echo server. Data messages go back through
//! `StreamExt::forward`, which sends every message that is ready and flushes
//! once when no more are, the crate's idiomatic way to batch writes.

use std::{future::ready, process::ExitCode};

use futures_util::{StreamExt, TryStreamExt};

fn main() -> ExitCode {
    tether_benches::serve(|tcp| async move {
        let Ok(ws) = tokio_tungstenite::accept_async(tcp).await else {
            return;
        };
        let (sink, stream) = ws.split();
        let _ = stream
            .try_filter(|message| ready(message.is_binary() || message.is_text()))
            .forward(sink)
            .await;
    })
}
