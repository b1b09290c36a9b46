//! Runs every case of an Autobahn|Testsuite fuzzing server against the
//! Tether client, echoing each message, then asks it to write its reports.
//! The client offers permessage-deflate with context takeover both ways, so
//! the server's choices (cases 12.* and 13.*) decide what is negotiated.
//!
//! ```sh
//! wstest -m fuzzingserver -s spec.json &
//! cargo run --release --example autobahn-client -- ws://127.0.0.1:9001
//! ```

use std::process::ExitCode;

use tether::{ClientConfig, Error, Message, TrySendError, connect_with, deflate::DeflateConfig};

const AGENT: &str = "tether";

#[tokio::main(flavor = "current_thread")]
async fn main() -> ExitCode {
    let base = std::env::args()
        .nth(1)
        .unwrap_or_else(|| "ws://127.0.0.1:9001".to_owned());
    match run(&base).await {
        Ok(count) => {
            eprintln!("ran {count} cases");
            ExitCode::SUCCESS
        }
        Err(error) => {
            eprintln!("autobahn-client: {error}");
            ExitCode::FAILURE
        }
    }
}

async fn run(base: &str) -> Result<u32, Error> {
    let mut offer = DeflateConfig::default();
    offer.server_no_context_takeover = false;
    offer.client_no_context_takeover = false;
    let mut config = ClientConfig::default();
    config.deflate.push(offer);
    let count = case_count(base, &config).await?;
    for case in 1..=count {
        let url = format!("{base}/runCase?case={case}&agent={AGENT}");
        if let Err(error) = echo(&url, &config).await {
            eprintln!("case {case}: {error}");
        }
    }
    let (mut ws, _) = connect_with(&format!("{base}/updateReports?agent={AGENT}"), &config).await?;
    while ws.recv().await.is_some() {}
    Ok(count)
}

async fn case_count(base: &str, config: &ClientConfig) -> Result<u32, Error> {
    let (mut ws, _) = connect_with(&format!("{base}/getCaseCount"), config).await?;
    let mut count = None;
    while let Some(message) = ws.recv().await {
        if let Message::Text(text) = message? {
            count = text.parse().ok();
        }
    }
    count.ok_or_else(|| Error::InvalidUrl(format!("{base}/getCaseCount sent no count")))
}

/// Echoes until the server closes; errors are the case's business (the
/// report says whether we failed the connection correctly).
async fn echo(url: &str, config: &ClientConfig) -> Result<(), Error> {
    let (mut ws, _) = connect_with(url, config).await?;
    let mut first_error = None;
    while let Some(received) = ws.recv().await {
        match received {
            Ok(message @ (Message::Text(_) | Message::Binary(_))) => {
                if let Err(TrySendError::Full(message)) = ws.try_send(message) {
                    if let Err(error) = ws.send(message).await {
                        first_error.get_or_insert(error);
                    }
                }
            }
            Ok(_) => {}
            Err(error) => {
                first_error.get_or_insert(error);
            }
        }
    }
    first_error.map_or(Ok(()), Err)
}
