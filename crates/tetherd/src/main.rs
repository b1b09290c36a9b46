//! `tetherd`: the Tether WebSocket gateway.
//!
//! For now it serves `tetherd echo`: an echo endpoint on every path, the
//! target of the Autobahn|Testsuite and of the interop and load tests.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod echo;
mod logging;
mod tls;

/// Every connection is a file descriptor: lift the soft limit to the hard
/// one, so a default soft limit of 1,024 does not cap the server.
fn raise_open_file_limit() {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit/setrlimit only read or write the struct we pass;
    // exercised by every test that starts tetherd.
    #[expect(unsafe_code, reason = "libc has no safe wrapper for rlimits")]
    let raised = unsafe {
        libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) == 0 && {
            let wanted = libc::rlimit {
                rlim_cur: limit.rlim_max,
                rlim_max: limit.rlim_max,
            };
            libc::setrlimit(libc::RLIMIT_NOFILE, &wanted) == 0
        }
    };
    if raised {
        tracing::debug!(open_files = limit.rlim_max, "open-file limit raised");
    } else {
        tracing::warn!(
            "could not raise the open-file limit: {}",
            std::io::Error::last_os_error()
        );
    }
}

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
    raise_open_file_limit();
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
