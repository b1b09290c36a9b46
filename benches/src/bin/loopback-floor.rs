//! `loopback-floor`: the kernel's own cost of a fan-out on this machine.
//!
//! A gateway delivers one publication to N subscribers with N socket writes,
//! one per subscriber, whatever it does in user space. This program makes
//! just those writes: N connected loopback TCP pairs in one process,
//! `TCP_NODELAY` on the accepted side as a server sets it, then per round one
//! write of a small message to every accepted socket back to back, timed with
//! the process's CPU time (and wall time). On loopback the sender's write also
//! runs the receiver's TCP receive path, so this is the floor for a broadcast
//! benchmarked on loopback: no server can deliver for less CPU per subscriber.
//! The client sides are read between rounds, outside the timed loop.

use std::{
    io::{Read, Write},
    net::{Ipv4Addr, TcpListener, TcpStream},
    process::ExitCode,
    time::{Duration, Instant},
};

use clap::Parser;
use serde_json::json;
use tether_benches::Spread;
use tether_load_os as os;

/// File descriptors besides the pairs': stdio, the listener, and what the
/// runtime and allocator may hold.
const SPARE_FDS: u64 = 16;

/// Largest message: the whole round's data must fit in the sockets' buffers,
/// since nothing reads while the writes run.
const MAX_SIZE: usize = 16 * 1024;

/// Options of `loopback-floor`.
#[derive(Debug, Parser)]
#[command(about = "CPU time of one small loopback TCP write to each of N sockets")]
struct Args {
    /// Connected loopback pairs (two file descriptors each).
    #[arg(long, default_value_t = 9_000)]
    conns: usize,
    /// Rounds of one write per connection.
    #[arg(long, default_value_t = 5)]
    rounds: usize,
    /// Bytes per write (30: a small WebSocket text frame).
    #[arg(long, default_value_t = 30)]
    size: usize,
    /// Print one JSON object instead of a line per round.
    #[arg(long)]
    json: bool,
}

/// One round: the write loop's CPU and wall time, per write.
#[derive(Debug, Clone, Copy)]
struct Round {
    cpu_us: f64,
    wall_us: f64,
}

fn main() -> ExitCode {
    tether_benches::exit_code("loopback-floor", run(&Args::parse()))
}

fn run(args: &Args) -> Result<(), String> {
    if args.conns == 0 || args.rounds == 0 || !(1..=MAX_SIZE).contains(&args.size) {
        return Err(format!(
            "--conns and --rounds must be at least 1, --size 1 to {MAX_SIZE}"
        ));
    }
    check_open_files(args.conns)?;
    let pairs = connect_pairs(args.conns)?;
    let message = vec![b'x'; args.size];
    let mut received = vec![0; args.size];
    let mut rounds = Vec::with_capacity(args.rounds);
    for round in 1..=args.rounds {
        let (cpu_start, wall_start) = (cpu_time()?, Instant::now());
        for (server, _) in &pairs {
            (&*server)
                .write_all(&message)
                .map_err(|error| format!("write failed: {error}"))?;
        }
        let (cpu, wall) = (cpu_time()? - cpu_start, wall_start.elapsed());
        for (_, client) in &pairs {
            (&*client)
                .read_exact(&mut received)
                .map_err(|error| format!("read failed: {error}"))?;
        }
        let writes = pairs.len() as f64;
        let measured = Round {
            cpu_us: cpu.as_secs_f64() * 1e6 / writes,
            wall_us: wall.as_secs_f64() * 1e6 / writes,
        };
        if !args.json {
            println!(
                "round {round}: {:.2} µs CPU per write (wall {:.2} µs), {:.0} writes/s",
                measured.cpu_us,
                measured.wall_us,
                1e6 / measured.cpu_us
            );
        }
        rounds.push(measured);
    }
    // `--rounds` is at least 1.
    let spread_of = |values: Vec<f64>| Spread::of(values).expect("at least one round");
    let cpu = spread_of(rounds.iter().map(|round| round.cpu_us).collect());
    let wall = spread_of(rounds.iter().map(|round| round.wall_us).collect());
    if args.json {
        let spread =
            |spread: Spread| json!({"median": spread.median, "min": spread.min, "max": spread.max});
        println!(
            "{}",
            json!({
                "conns": args.conns,
                "size": args.size,
                "rounds": args.rounds,
                "cpu_us_per_write": spread(cpu),
                "wall_us_per_write": spread(wall),
                "writes_per_s": 1e6 / cpu.median,
            })
        );
    } else {
        println!(
            "{} B to each of {} sockets: median {:.2} µs CPU per write ({:.2}–{:.2}), wall {:.2} µs, \
             {:.0} writes/s",
            args.size,
            args.conns,
            cpu.median,
            cpu.min,
            cpu.max,
            wall.median,
            1e6 / cpu.median
        );
    }
    Ok(())
}

fn cpu_time() -> Result<Duration, String> {
    os::own_cpu_time().map_err(|error| format!("getrusage failed: {error}"))
}

/// Fails unless the open-file limit allows two descriptors per pair.
fn check_open_files(conns: usize) -> Result<(), String> {
    let limit = os::fd_limit().map_err(|_| "cannot read the open-file limit".to_owned())?;
    let needed = 2 * conns as u64 + SPARE_FDS;
    if limit.soft < needed {
        return Err(format!(
            "{conns} connections need {needed} open files, but `ulimit -n` is {}: \
             raise it (hard limit {}) or lower --conns",
            limit.soft, limit.hard
        ));
    }
    Ok(())
}

/// `conns` connected loopback pairs: (accepted side, client side).
fn connect_pairs(conns: usize) -> Result<Vec<(TcpStream, TcpStream)>, String> {
    let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
        .map_err(|error| format!("cannot listen on 127.0.0.1: {error}"))?;
    let addr = listener
        .local_addr()
        .map_err(|error| format!("cannot listen on 127.0.0.1: {error}"))?;
    let mut pairs = Vec::with_capacity(conns);
    for opened in 0..conns {
        let failed = |error| format!("connection {} of {conns}: {error}", opened + 1);
        let client = TcpStream::connect(addr).map_err(failed)?;
        let (server, _) = listener.accept().map_err(failed)?;
        server.set_nodelay(true).map_err(failed)?;
        pairs.push((server, client));
    }
    Ok(pairs)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_carry_a_write_to_the_client_side() {
        let pairs = connect_pairs(3).unwrap();
        for (index, (server, client)) in pairs.iter().enumerate() {
            (&*server).write_all(&[index as u8; 4]).unwrap();
            let mut received = [0; 4];
            (&*client).read_exact(&mut received).unwrap();
            assert_eq!(received, [index as u8; 4]);
        }
    }

    #[test]
    fn too_many_connections_for_the_open_file_limit_fail_clearly() {
        let error = check_open_files(usize::MAX / 4).unwrap_err();
        assert!(error.contains("ulimit -n"), "{error}");
    }
}
