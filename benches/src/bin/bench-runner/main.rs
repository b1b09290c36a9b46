//! `bench-runner`: runs `tetherd echo` and the peer echo servers, and the
//! `tetherd` gateway and uWebSockets.js, side by side under the same load
//! generator and writes `benches/RESULTS.md`.
//! `benches/run.sh` builds everything in release mode and starts it.
//!
//! ```text
//!  taskset -c S  loopback-floor --json   (once: the kernel's cost of a write)
//!  round 1..=R ─► scenario (echo 16 B, 1 KiB, 64 KiB, 1 MiB; handshake; idle
//!                            by two clients; fan-out at 1, 4 and 50 publications/s)
//!    ─► server, in an order that rotates each round:
//!         taskset -c S  <server> --listen 127.0.0.1:PORT
//!         taskset -c L  tether-load … --json --server-pid PID   (tcp-load for plain TCP)
//!         (tetherd-2t, two runtime threads: taskset -c S,L)
//!  ─► medians, min–max, tetherd ÷ peer, 1 thread against 2 ─► RESULTS.md
//! ```

use std::{path::PathBuf, process::ExitCode};

use clap::Parser;

mod floor;
mod machine;
mod measure;
mod report;
mod scenario;

use crate::{
    measure::{Sample, Settings},
    scenario::{SERVERS, Scenario},
};

/// Side-by-side echo benchmarks of tetherd and its peers.
#[derive(Debug, Parser)]
#[command(about)]
struct Args {
    /// Rounds; each runs every scenario against every server.
    #[arg(long, default_value_t = 3)]
    rounds: usize,
    /// Seconds each echo run measures.
    #[arg(long, default_value_t = 10.0)]
    duration: f64,
    /// Connections the idle scenario opens.
    #[arg(long, default_value_t = 15_000)]
    idle_conns: usize,
    /// Subscribers in the fan-out scenarios.
    #[arg(long, default_value_t = 15_000)]
    fanout_subscribers: usize,
    /// Seconds the idle scenario holds its connections open.
    #[arg(long, default_value_t = 3.0)]
    hold: f64,
    /// Core the server is pinned to.
    #[arg(long, default_value_t = 0)]
    server_core: usize,
    /// Core the load generator is pinned to.
    #[arg(long, default_value_t = 1)]
    load_core: usize,
    /// Run only these scenarios (comma-separated): echo-16, echo-1k,
    /// echo-64k, echo-1m, handshake, idle, idle-node, fanout-1, fanout-4, fanout-50,
    /// fanout-50-api4, fanout-50-ws.
    #[arg(long, value_delimiter = ',')]
    scenarios: Vec<String>,
    /// Run only these servers (comma-separated): tetherd, tetherd-2t
    /// (two runtime threads on both cores; echo-16 and echo-1k only),
    /// tokio-tungstenite, fastwebsockets, tokio-websockets, tcp, uws.js
    /// (uWebSockets.js from npm, installed by run.sh into benches/peers);
    /// for the fan-out scenarios tetherd-gateway, tetherd-gateway-2t and
    /// uws.js-gateway.
    #[arg(long, value_delimiter = ',')]
    servers: Vec<String>,
    /// A line for RESULTS.md about the conditions, such as other load on
    /// the machine.
    #[arg(long)]
    note: Option<String>,
    /// Where to write the results table.
    #[arg(long, default_value = concat!(env!("CARGO_MANIFEST_DIR"), "/RESULTS.md"))]
    out: PathBuf,
}

fn main() -> ExitCode {
    tether_benches::exit_code("bench-runner", run(&Args::parse()))
}

/// The command line for the results page, without the note's text (which
/// the page shows on its own).
fn shown_arguments(mut arguments: impl Iterator<Item = String>) -> String {
    let mut shown = Vec::new();
    while let Some(argument) = arguments.next() {
        if argument == "--note" {
            arguments.next();
            shown.push("--note …".to_string());
        } else if argument.starts_with("--note=") {
            shown.push("--note …".to_string());
        } else {
            shown.push(argument);
        }
    }
    shown.join(" ")
}

fn run(args: &Args) -> Result<(), String> {
    let scenarios: Vec<Scenario> = scenario::all(args.idle_conns, args.fanout_subscribers)
        .into_iter()
        .filter(|scenario| {
            args.scenarios.is_empty() || args.scenarios.iter().any(|name| name == scenario.name)
        })
        .collect();
    let servers: Vec<usize> = (0..SERVERS.len())
        .filter(|&index| {
            args.servers.is_empty() || args.servers.iter().any(|name| name == SERVERS[index].name)
        })
        .collect();
    if scenarios.is_empty() || servers.is_empty() || args.rounds == 0 {
        return Err("nothing to run: check --scenarios, --servers and --rounds".into());
    }
    let settings = Settings::new(args.duration, args.hold, args.server_core, args.load_core)?;
    let machine_before = machine::Machine::describe();
    eprint!("loopback TCP write floor (loopback-floor) ");
    let floor = floor::measure(&settings);
    match &floor {
        Ok(floor) => eprintln!("{:.2} µs per write", floor.median_us),
        Err(error) => eprintln!("FAILED: {error}"),
    }
    let mut samples = Vec::new();
    for round in 0..args.rounds {
        for (scenario_index, scenario) in scenarios.iter().enumerate() {
            // Rotate the order each round, so that no server always runs
            // right after the same neighbour.
            for turn in 0..servers.len() {
                let server = servers[(turn + round) % servers.len()];
                if !scenario.applies_to(&SERVERS[server]) {
                    continue;
                }
                eprint!(
                    "round {}/{}  {:<9} {:<18} ",
                    round + 1,
                    args.rounds,
                    scenario.name,
                    SERVERS[server].name
                );
                let result = measure::measure(&settings, &SERVERS[server], scenario);
                match &result {
                    Ok(measured) => eprintln!("{}", measured.one_line()),
                    Err(error) => eprintln!("FAILED: {error}"),
                }
                samples.push(Sample {
                    round,
                    scenario: scenario_index,
                    server,
                    result,
                });
            }
        }
    }
    let command = shown_arguments(std::env::args().skip(1));
    let markdown = report::render(&report::Inputs {
        command: &command,
        note: args.note.as_deref(),
        rounds: args.rounds,
        duration: args.duration,
        hold: args.hold,
        settings: &settings,
        machine: &machine_before,
        floor: &floor,
        load_after: &machine::load_average(),
        scenarios: &scenarios,
        servers: &servers,
        samples: &samples,
    });
    std::fs::write(&args.out, markdown)
        .map_err(|error| format!("cannot write {}: {error}", args.out.display()))?;
    eprintln!("wrote {}", args.out.display());
    Ok(())
}
