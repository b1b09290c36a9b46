//! Worker processes: this executable run again with a hidden subcommand and
//! a shard of the connections, for when one process's open-file limit (or
//! one core) is not enough.
//!
//! The protocol is lines of JSON on the worker's stdout, and on its stdin
//! lines from the parent and then its end (which also comes if the parent
//! dies). A worker prints one line once its connections are ready, waits
//! for the parent, then prints one more line and exits; the broadcast
//! worker takes a line, reports, and waits for the end of stdin before its
//! last line.
//!
//! ```text
//!  parent ── spawn ──► worker: open connections ── line 1 ──► parent
//!         ── write input, close stdin ──► worker: finish ── line 2 ──► parent
//!
//!  broadcast: ── "N" ──► worker: receive ── line 2 ──► parent reads CPU
//!             ── close stdin ──► worker: close ── line 3 ──► parent
//! ```

use std::{
    ffi::OsString,
    io::{self, BufRead, BufReader, Read, Write as _},
    process::{Child, ChildStdin, ChildStdout, Command, Stdio},
    time::Duration,
};

use serde_json::Value;
use tether_load_os as os;
use tokio::runtime::Runtime;

use crate::{report::ErrorCounts, sources, target::Target};

/// Connections per process by default, leaving room under a 20,000
/// open-file limit.
pub(crate) const DEFAULT_PER_PROCESS: usize = 15_000;

/// The connections one process opens: `conns` of them from source addresses
/// `first_source`, `first_source + 1`, …, `per_source` per address. As flags,
/// what every worker subcommand takes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::Args)]
pub(crate) struct Shard {
    #[arg(long)]
    pub(crate) conns: usize,
    #[arg(long)]
    pub(crate) first_source: usize,
    #[arg(long)]
    pub(crate) per_source: usize,
    /// Connection attempts in flight at once in this process.
    #[arg(long)]
    pub(crate) concurrency: usize,
}

impl Shard {
    /// Source addresses this shard uses.
    pub(crate) fn sources(&self) -> usize {
        self.conns.div_ceil(self.per_source)
    }

    /// The flags that hand a worker this shard of connections to `url`.
    pub(crate) fn flags(&self, url: &Target) -> [String; 5] {
        [
            format!("--url={url}"),
            format!("--conns={}", self.conns),
            format!("--first-source={}", self.first_source),
            format!("--per-source={}", self.per_source),
            format!("--concurrency={}", self.concurrency),
        ]
    }
}

/// Splits `conns` connections evenly over as few processes as `per_process`
/// allows, each with its own source addresses, sharing `concurrency`.
pub(crate) fn plan_shards(
    conns: usize,
    per_process: usize,
    per_source: usize,
    concurrency: usize,
) -> Vec<Shard> {
    let per_source = per_source.max(1);
    let count = conns.div_ceil(per_process.max(1));
    let concurrency = concurrency.div_ceil(count.max(1)).max(1);
    let mut first_source = 0;
    (0..count)
        .map(|i| {
            let shard = Shard {
                conns: conns / count + usize::from(i < conns % count),
                first_source,
                per_source,
                concurrency,
            };
            first_source += shard.sources();
            shard
        })
        .collect()
}

/// Source addresses all `shards` use together.
pub(crate) fn sources_used(shards: &[Shard]) -> usize {
    shards
        .last()
        .map_or(0, |shard| shard.first_source + shard.sources())
}

/// How `idle` and `broadcast` spread their connections over source
/// addresses and worker processes.
#[derive(Debug, clap::Args)]
pub(crate) struct FleetArgs {
    /// Connections per source address (127.0.0.1, 127.0.0.2, …).
    #[arg(long, default_value_t = sources::DEFAULT_PER_SOURCE)]
    pub(crate) per_source: usize,
    /// Connections per process; more are opened by worker processes.
    #[arg(long, default_value_t = DEFAULT_PER_PROCESS)]
    pub(crate) per_process: usize,
    /// Connection attempts in flight at once, over all processes.
    #[arg(long, default_value_t = sources::DEFAULT_CONCURRENCY)]
    pub(crate) concurrency: usize,
}

impl FleetArgs {
    /// Splits `conns` connections to `target` (`what` they are, in errors)
    /// into shards, one per process; fails if `target` has too few source
    /// addresses for them.
    pub(crate) fn plan(
        &self,
        target: &Target,
        what: &str,
        conns: usize,
    ) -> Result<Vec<Shard>, String> {
        let shards = plan_shards(conns, self.per_process, self.per_source, self.concurrency);
        sources::check_source_count(target, sources_used(&shards), conns, what, self.per_source)?;
        Ok(shards)
    }
}

/// The tokio runtime connections run on: one thread per core.
pub(crate) fn runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start the runtime: {error}"))
}

/// Adds a JSON object of counts (`{"error": 3, …}`) to `counts`.
pub(crate) fn merge_counts(counts: &mut ErrorCounts, value: &Value) {
    for (error, count) in value.as_object().into_iter().flatten() {
        *counts.entry(error.clone()).or_default() += count.as_u64().unwrap_or(0);
    }
}

/// In a worker: prints one JSON line for the parent.
pub(crate) fn tell_parent(line: &Value) {
    let mut stdout = io::stdout().lock();
    let _ = writeln!(stdout, "{line}");
    let _ = stdout.flush();
}

/// In a worker: the parent's next line, `None` once stdin has ended.
pub(crate) fn line_from_parent() -> Option<String> {
    let mut line = String::new();
    match io::stdin().lock().read_line(&mut line) {
        Ok(0) | Err(_) => None,
        Ok(_) => Some(line),
    }
}

/// In a worker: waits until the parent closes our stdin (or dies) and
/// returns what it wrote first.
pub(crate) fn wait_for_parent() -> String {
    let mut input = String::new();
    let _ = io::stdin().lock().read_to_string(&mut input);
    input
}

/// A worker process and its pipes; dropping it closes its stdin, which
/// tells it to finish and exit.
pub(crate) struct Worker {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: BufReader<ChildStdout>,
}

impl Worker {
    /// Starts this executable with `args`.
    pub(crate) fn spawn(
        args: impl IntoIterator<Item = impl Into<OsString>>,
    ) -> Result<Self, String> {
        let exe = std::env::current_exe()
            .map_err(|error| format!("cannot find this executable: {error}"))?;
        let mut child = Command::new(exe)
            .args(args.into_iter().map(Into::into))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .map_err(|error| format!("cannot start a worker process: {error}"))?;
        // Invariant: both were requested as pipes just above.
        let stdin = child.stdin.take().expect("piped stdin");
        let stdout = BufReader::new(child.stdout.take().expect("piped stdout"));
        Ok(Self {
            child,
            stdin: Some(stdin),
            stdout,
        })
    }

    /// The process id, to sample its CPU time.
    pub(crate) fn pid(&self) -> u32 {
        self.child.id()
    }

    /// CPU time the worker has used so far (zero once it is gone).
    pub(crate) fn cpu_time(&self) -> Duration {
        os::cpu_time_of(self.pid()).unwrap_or_default()
    }

    /// Writes one line to the worker's stdin, leaving it open.
    pub(crate) fn tell(&mut self, line: &str) {
        if let Some(stdin) = &mut self.stdin {
            // A worker that is gone shows up when its line is read.
            let _ = writeln!(stdin, "{line}").and_then(|()| stdin.flush());
        }
    }

    /// Writes `input` to the worker's stdin and closes it: the worker
    /// finishes.
    pub(crate) fn finish(&mut self, input: &str) {
        if let Some(mut stdin) = self.stdin.take() {
            // A worker that is gone shows up when its line is read.
            let _ = stdin.write_all(input.as_bytes());
        }
    }

    /// The worker's next JSON line.
    pub(crate) fn line(&mut self, number: usize) -> Result<Value, String> {
        let mut line = String::new();
        match self.stdout.read_line(&mut line) {
            Ok(0) => {
                let status = self
                    .child
                    .wait()
                    .map(|status| status.to_string())
                    .unwrap_or_default();
                Err(format!("worker {number} exited early ({status})"))
            }
            Ok(_) => serde_json::from_str(&line)
                .map_err(|error| format!("worker {number} printed {line:?}: {error}")),
            Err(error) => Err(format!("cannot read from worker {number}: {error}")),
        }
    }

    /// Waits for the worker to exit.
    pub(crate) fn wait(mut self) {
        self.stdin = None;
        let _ = self.child.wait();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_process_while_it_fits() {
        let shards = plan_shards(15_000, 15_000, 10_000, 128);
        assert_eq!(
            shards,
            [Shard {
                conns: 15_000,
                first_source: 0,
                per_source: 10_000,
                concurrency: 128
            }]
        );
        assert_eq!(sources_used(&shards), 2);
    }

    #[test]
    fn shards_get_their_own_sources() {
        let shards = plan_shards(40_001, 15_000, 5000, 128);
        let conns: Vec<_> = shards.iter().map(|shard| shard.conns).collect();
        assert_eq!(conns, [13_334, 13_334, 13_333]);
        let firsts: Vec<_> = shards.iter().map(|shard| shard.first_source).collect();
        assert_eq!(firsts, [0, 3, 6]);
        assert_eq!(sources_used(&shards), 9);
        assert_eq!(
            shards.iter().map(|shard| shard.concurrency).sum::<usize>(),
            129
        );
    }
}
