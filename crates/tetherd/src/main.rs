//! `tetherd`: the Tether WebSocket gateway.
//!
//! For now it serves `tetherd echo`: an echo endpoint on every path, the
//! target of the Autobahn|Testsuite and of the interop and load tests.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod echo;
mod logging;

/// The Tether WebSocket gateway.
#[derive(Debug, Parser)]
#[command(version, about)]
struct Cli {
    #[command(subcommand)]
    command: Command,
    /// Log format.
    #[arg(long, global = true, value_enum, default_value_t = logging::Format::Text)]
    log_format: logging::Format,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Echo every text and binary message back, on every path.
    Echo(echo::Args),
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    logging::init(cli.log_format);
    let result = match cli.command {
        Command::Echo(args) => echo::run(args),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
