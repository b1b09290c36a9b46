//! `tetherd`: the Tether WebSocket gateway, as a binary (`src/main.rs`)
//! over this library.
//!
//! It serves channels with history and recovery over Centrifugo's client
//! protocol (JSON), the HTTP server API, health, metrics and the demo
//! pages, on one port; `tetherd echo` is a plain echo endpoint for
//! conformance, interop and load tests; `tetherd config` checks or prints
//! the configuration. It is not a library for other programs: its only
//! public items are [`main`] and, with the `fuzzing` feature, the fuzz
//! targets' entry points.
//!
//! A request travels through the modules in this order:
//!
//! ```text
//!  gateway   accept, connection limits, TLS, HTTP/1.1 with the head limits
//!    │
//!  http      routes: /connection/websocket, /api/*, /health, /metrics, pages
//!    │  └──▶ api      the server API (publish, subscribe, disconnect, …)
//!  session   one client: commands (wire), subscriptions, deadlines
//!    │
//!  node      the process: config, sessions, metrics, lifecycle; channels:
//!    │       namespaces and Node::publish, for the API and sessions alike
//!  broker    memory or Redis: fan-out between nodes, history, presence
//!    │
//!  hub       channel → local subscribers ──▶ each one's handle (outbox)
//!    ▼
//!  session ──▶ socket
//! ```
//!
//! Beside them: `client_addr` (the client behind a trusted proxy),
//! `handle` (what the node holds of a session), `auth`
//! (tokens), `config`, `wire` (the client protocol's codec),
//! `proxy` (hooks to the application's backend), `compression`,
//! `metrics`, `logging`, `tls`, `echo`, `runtime`.
//! `docs/architecture.md` follows one publication through the functions.

use std::process::ExitCode;

use clap::{Parser, Subcommand};

mod api;
mod auth;
mod broker;
mod client_addr;
mod compression;
mod config;
mod echo;
#[cfg(feature = "fuzzing")]
pub mod fuzzing;
mod gateway;
mod handle;
mod http;
mod hub;
mod logging;
mod metrics;
mod node;
mod pages;
mod proxy;
mod runtime;
mod session;
mod tls;
mod wire;

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
    command: Option<CliCommand>,
    /// `tetherd [FLAGS]` is `tetherd serve [FLAGS]`.
    #[command(flatten)]
    serve: config::Flags,
    /// Log format (default: the config's `log_format`, else text).
    #[arg(long, global = true, value_enum)]
    log_format: Option<logging::Format>,
}

#[derive(Debug, Subcommand)]
enum CliCommand {
    /// Run the gateway (the default).
    Serve(config::Flags),
    /// Echo every text and binary message back, on every path.
    Echo(echo::Args),
    /// Check a config file, or print a commented example.
    #[command(subcommand)]
    Config(config::ConfigCommand),
}

/// Runs the `tetherd` command line.
pub fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match cli.command {
        Some(CliCommand::Echo(args)) => {
            logging::init(cli.log_format.unwrap_or(logging::Format::Text));
            raise_open_file_limit();
            echo::run(args)
        }
        Some(CliCommand::Config(command)) => return config::run(command),
        Some(CliCommand::Serve(flags)) => return serve(&flags, cli.log_format),
        None => return serve(&cli.serve, cli.log_format),
    };
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}

/// Loads the configuration (refusing it with every problem named), fills
/// development secrets, and runs the gateway.
fn serve(flags: &config::Flags, log_format: Option<logging::Format>) -> ExitCode {
    let mut config = match config::Config::load(flags) {
        Ok(config) => config,
        Err(errors) => {
            eprintln!("tetherd: invalid configuration:\n{errors}");
            return ExitCode::FAILURE;
        }
    };
    logging::init(log_format.unwrap_or(config.log_format.into()));
    raise_open_file_limit();
    for (key, value) in config.generate_missing_secrets() {
        tracing::warn!("{key} was not set; generated for this run (development only): {value}");
        if key == "auth.token_hmac_secret" {
            let token = auth::TokenBuilder::connection("demo").sign_hs256(&value);
            tracing::info!("a connection token for user \"demo\": {token}");
        }
    }
    match gateway::run(config) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            tracing::error!("{error}");
            ExitCode::FAILURE
        }
    }
}
