//! tokio-websockets echo server. Data messages go back through
//! `StreamExt::forward`: the sink queues frames (flushing past its 8 KiB
//! threshold) and flushes once when no more messages are ready.

use std::{future::ready, process::ExitCode};

use futures_util::{StreamExt, TryStreamExt};
use tokio_websockets::ServerBuilder;

fn main() -> ExitCode {
    tether_benches::serve(|tcp| async move {
        let Ok((_request, ws)) = ServerBuilder::new().accept(tcp).await else {
            return;
        };
        let (sink, stream) = ws.split();
        let _ = stream
            .try_filter(|message| ready(message.is_binary() || message.is_text()))
            .forward(sink)
            .await;
    })
}
