//! What the peer echo servers share: the `--listen ADDR` flag, one
//! single-threaded runtime (so that `taskset` can pin the whole server to one
//! core) and an accept loop that outlives transient accept errors; and what
//! the measuring programs share: the statistic [`Spread`]. What they read
//! from the operating system (CPU time, `/proc`, the open-file limit) comes
//! from `tether_load_os`, as it does for the load generator.
//!
//! The servers are built only to be measured next to `tetherd echo`; they are
//! not part of Tether and are never shipped.

use std::{future::Future, net::SocketAddr, process::ExitCode, time::Duration};

use clap::Parser;
use tokio::net::{TcpListener, TcpStream};

mod stats;

pub use stats::Spread;

/// Pause after a failed `accept` (such as running out of file descriptors),
/// so that the loop does not spin while the condition lasts.
const ACCEPT_RETRY: Duration = Duration::from_millis(10);

/// Command line of every peer echo server.
#[derive(Debug, Parser)]
#[command(about = "An echo server for the side-by-side benchmarks")]
struct Args {
    /// Address to listen on.
    #[arg(long)]
    listen: SocketAddr,
}

/// The exit code of a measuring program whose work returned `result`; an
/// error is printed on stderr after the program's name.
pub fn exit_code(program: &str, result: Result<(), String>) -> ExitCode {
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("{program}: {error}");
            ExitCode::FAILURE
        }
    }
}

/// Runs `connection` on every TCP connection accepted on `--listen ADDR`, on
/// a single-threaded runtime, until the process is killed.
pub fn serve<F, Fut>(connection: F) -> ExitCode
where
    F: Fn(TcpStream) -> Fut,
    Fut: Future<Output = ()> + Send + 'static,
{
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("cannot start the runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let listener = match TcpListener::bind(args.listen).await {
            Ok(listener) => listener,
            Err(error) => {
                eprintln!("cannot listen on {}: {error}", args.listen);
                return ExitCode::FAILURE;
            }
        };
        loop {
            match listener.accept().await {
                Ok((stream, _peer)) => {
                    // Every server under test answers small messages without
                    // waiting for Nagle's algorithm, as `tetherd` does.
                    let _ = stream.set_nodelay(true);
                    tokio::spawn(connection(stream));
                }
                Err(error) => {
                    eprintln!("accept failed: {error}");
                    tokio::time::sleep(ACCEPT_RETRY).await;
                }
            }
        }
    })
}
