//! `tetherd config check FILE` and `tetherd config example`.

use std::{path::PathBuf, process::ExitCode};

use super::{Config, EXAMPLE, Flags};

/// Checks a config file or prints an example.
#[derive(Debug, clap::Subcommand)]
pub(crate) enum ConfigCommand {
    /// Check FILE over the built-in defaults (environment variables and
    /// flags are not applied): print `ok`, or each problem with its key and
    /// exit with 1.
    Check {
        /// The TOML file to check.
        file: PathBuf,
    },
    /// Print a fully commented config file with every key at its default.
    Example,
}

/// Runs a `tetherd config` command.
pub(crate) fn run(command: ConfigCommand) -> ExitCode {
    match command {
        ConfigCommand::Check { file } => {
            let flags = Flags {
                config: Some(file),
                ..Flags::default()
            };
            match Config::load_from(&flags, []) {
                Ok(_) => {
                    println!("ok");
                    ExitCode::SUCCESS
                }
                Err(errors) => {
                    for error in errors.0 {
                        eprintln!("{error}");
                    }
                    ExitCode::FAILURE
                }
            }
        }
        ConfigCommand::Example => {
            print!("{EXAMPLE}");
            ExitCode::SUCCESS
        }
    }
}
