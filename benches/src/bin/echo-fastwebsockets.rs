//! fastwebsockets echo server, as the crate is meant to be used: a hyper
//! HTTP/1 connection upgraded by `fastwebsockets::upgrade`, then a
//! `FragmentCollector` whose data frames are written straight back (the
//! crate writes each frame as it is given; it has no batching sink).

use std::process::ExitCode;

use bytes::Bytes;
use fastwebsockets::{FragmentCollector, OpCode, WebSocketError, upgrade};
use http_body_util::Empty;
use hyper::{Request, Response, body::Incoming, server::conn::http1, service::service_fn};
use hyper_util::rt::TokioIo;

fn main() -> ExitCode {
    tether_benches::serve(|tcp| async move {
        let _ = http1::Builder::new()
            .serve_connection(TokioIo::new(tcp), service_fn(upgrade_request))
            .with_upgrades()
            .await;
    })
}

/// Answers the upgrade with `101` and echoes on the upgraded connection in a
/// task of its own.
async fn upgrade_request(
    mut request: Request<Incoming>,
) -> Result<Response<Empty<Bytes>>, WebSocketError> {
    let (response, upgrade) = upgrade::upgrade(&mut request)?;
    tokio::spawn(async move {
        let _ = echo(upgrade).await;
    });
    Ok(response)
}

async fn echo(upgrade: upgrade::UpgradeFut) -> Result<(), WebSocketError> {
    let mut ws = FragmentCollector::new(upgrade.await?);
    loop {
        let frame = ws.read_frame().await?;
        match frame.opcode {
            OpCode::Close => return Ok(()),
            OpCode::Text | OpCode::Binary => ws.write_frame(frame).await?,
            _ => {}
        }
    }
}
