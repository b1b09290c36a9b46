//! Results: a human table on stdout, or one JSON object with `--json`.

use std::{collections::BTreeMap, fmt::Write as _, time::Duration};

use hdrhistogram::Histogram;
use serde_json::{Value, json};

/// Latency histogram in nanoseconds, three significant digits, up to 10 min.
pub(crate) fn latency_histogram() -> Histogram<u64> {
    // Invariant: the bounds are constant and valid (low ≥ 1, high ≥ 2 × low).
    Histogram::new_with_bounds(1, 600_000_000_000, 3).expect("valid histogram bounds")
}

/// A histogram as `[[value, count], …]`, for a worker to hand to its parent.
pub(crate) fn histogram_to_json(histogram: &Histogram<u64>) -> Value {
    let pairs = histogram
        .iter_recorded()
        .map(|bucket| json!([bucket.value_iterated_to(), bucket.count_at_value()]))
        .collect();
    Value::Array(pairs)
}

/// Adds the `[[value, count], …]` of [`histogram_to_json`] to `histogram`.
pub(crate) fn merge_histogram_json(histogram: &mut Histogram<u64>, value: &Value) {
    for pair in value.as_array().into_iter().flatten() {
        if let (Some(value), Some(count)) = (pair[0].as_u64(), pair[1].as_u64()) {
            histogram.saturating_record_n(value, count);
        }
    }
}

/// Error messages and how often each occurred.
pub(crate) type ErrorCounts = BTreeMap<String, u64>;

/// CPU used during the measured interval.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Cpu {
    pub(crate) wall: Duration,
    /// This process's user + system time.
    pub(crate) own: Duration,
    /// Worker threads this process ran, capped at the machine's cores.
    pub(crate) cores: usize,
    /// The server's user + system time, given `--server-pid`.
    pub(crate) server: Option<Duration>,
}

impl Cpu {
    /// Fraction of its cores this process kept busy.
    pub(crate) fn own_load(&self) -> f64 {
        self.own.as_secs_f64() / self.wall.as_secs_f64().max(1e-9) / self.cores.max(1) as f64
    }

    /// Whether this process, not the server, may have set the pace.
    pub(crate) fn saturated(&self) -> bool {
        self.own_load() >= 0.9
    }

    pub(crate) fn to_json(self) -> Value {
        json!({
            "wall_s": self.wall.as_secs_f64(),
            "load_cpu_s": self.own.as_secs_f64(),
            "load_cores": self.cores,
            "load_cpu_fraction": self.own_load(),
            "load_saturated": self.saturated(),
            "server_cpu_s": self.server.map(|cpu| cpu.as_secs_f64()),
            "server_cores_used": self.server.map(|cpu| cpu.as_secs_f64() / self.wall.as_secs_f64().max(1e-9)),
        })
    }

    pub(crate) fn write_table(&self, out: &mut String) {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let _ = write!(
            out,
            "  cpu           tether-load {:.2} s in {:.2} s wall ({:.0}% of {} core{})",
            self.own.as_secs_f64(),
            wall,
            self.own_load() * 100.0,
            self.cores,
            if self.cores == 1 { "" } else { "s" },
        );
        if let Some(server) = self.server {
            let _ = write!(
                out,
                ", server {:.2} s ({:.2} cores)",
                server.as_secs_f64(),
                server.as_secs_f64() / wall
            );
        }
        out.push('\n');
        if self.saturated() {
            out.push_str(
                "  WARNING       tether-load used >= 90% of its cores: it may be the bottleneck, not the server\n",
            );
        }
    }
}

/// What `tether-load echo` measured.
#[derive(Debug)]
pub(crate) struct EchoReport {
    pub(crate) target: String,
    pub(crate) conns: usize,
    pub(crate) opened: usize,
    pub(crate) size: usize,
    pub(crate) inflight: usize,
    pub(crate) text: bool,
    /// Echoes received and verified within the measured interval.
    pub(crate) messages: u64,
    /// Payload bytes of those echoes.
    pub(crate) bytes: u64,
    /// Send to echo, in nanoseconds.
    pub(crate) latency: Histogram<u64>,
    /// Echoes that did not match what was sent.
    pub(crate) verify_errors: u64,
    /// Connections that failed to open, and why.
    pub(crate) connect_errors: ErrorCounts,
    /// Errors and unexpected closes on open connections.
    pub(crate) connection_errors: ErrorCounts,
    pub(crate) first_verify_error: Option<String>,
    pub(crate) cpu: Cpu,
}

impl EchoReport {
    pub(crate) fn to_json(&self) -> Value {
        let wall = self.cpu.wall.as_secs_f64().max(1e-9);
        json!({
            "mode": "echo",
            "url": self.target,
            "conns": self.conns,
            "opened": self.opened,
            "size": self.size,
            "inflight": self.inflight,
            "text": self.text,
            "messages": self.messages,
            "bytes": self.bytes,
            "messages_per_s": self.messages as f64 / wall,
            "mb_per_s": self.bytes as f64 / wall / 1e6,
            "latency_us": percentiles_us(&self.latency),
            "verify_errors": self.verify_errors,
            "first_verify_error": self.first_verify_error,
            "connect_errors": total(&self.connect_errors),
            "connection_errors": total(&self.connection_errors),
            "errors": errors_json(&self.connect_errors, &self.connection_errors),
            "cpu": self.cpu.to_json(),
        })
    }

    pub(crate) fn table(&self) -> String {
        let wall = self.cpu.wall.as_secs_f64().max(1e-9);
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tether-load echo  {}  {} conns x {} in flight, {} B {}, {:.2} s",
            self.target,
            self.opened,
            self.inflight,
            self.size,
            if self.text { "text" } else { "binary" },
            wall
        );
        let _ = writeln!(
            out,
            "  messages      {:>12}   {:>12.0} msg/s",
            self.messages,
            self.messages as f64 / wall
        );
        let _ = writeln!(
            out,
            "  payload       {:>9.2} MB   {:>12.2} MB/s each way",
            self.bytes as f64 / 1e6,
            self.bytes as f64 / wall / 1e6
        );
        write_latency(&mut out, "latency", &self.latency);
        let _ = writeln!(
            out,
            "  errors        verify {}, connect {}, connection {}",
            self.verify_errors,
            total(&self.connect_errors),
            total(&self.connection_errors)
        );
        if let Some(first) = &self.first_verify_error {
            let _ = writeln!(out, "                first mismatch: {first}");
        }
        write_error_lines(&mut out, &self.connect_errors, &self.connection_errors);
        self.cpu.write_table(&mut out);
        out
    }
}

/// The server's resident memory around the idle connections.
#[derive(Debug, Clone, Copy)]
pub(crate) struct ServerMemory {
    pub(crate) pid: u32,
    pub(crate) before: u64,
    /// After every connection is open and a short settle.
    pub(crate) open: u64,
    /// After every connection is closed and a short settle.
    pub(crate) closed: Option<u64>,
}

impl ServerMemory {
    /// Growth per open connection, in bytes (negative if it shrank).
    pub(crate) fn per_connection(&self, opened: usize) -> Option<f64> {
        (opened > 0).then(|| (self.open as f64 - self.before as f64) / opened as f64)
    }
}

/// What `tether-load idle` measured.
#[derive(Debug)]
pub(crate) struct IdleReport {
    pub(crate) target: String,
    pub(crate) conns: usize,
    pub(crate) processes: usize,
    pub(crate) sources: usize,
    pub(crate) opened: usize,
    pub(crate) connect_errors: ErrorCounts,
    /// From the first attempt until the last connection was open.
    pub(crate) open_wall: Duration,
    /// TCP connect plus upgrade, in nanoseconds.
    pub(crate) handshake: Histogram<u64>,
    pub(crate) hold: Duration,
    pub(crate) pongs: u64,
    /// Connections the server closed, or that failed, while held.
    pub(crate) dropped: ErrorCounts,
    /// Connections whose close handshake completed.
    pub(crate) closed_clean: u64,
    pub(crate) closed_unclean: ErrorCounts,
    pub(crate) memory: Option<ServerMemory>,
}

impl IdleReport {
    fn handshake_rate(&self) -> f64 {
        self.opened as f64 / self.open_wall.as_secs_f64().max(1e-9)
    }

    pub(crate) fn to_json(&self) -> Value {
        let memory = self.memory.map(|memory| {
            json!({
                "pid": memory.pid,
                "rss_before": memory.before,
                "rss_open": memory.open,
                "rss_closed": memory.closed,
                "rss_per_conn": memory.per_connection(self.opened),
            })
        });
        json!({
            "mode": "idle",
            "url": self.target,
            "conns": self.conns,
            "processes": self.processes,
            "source_addresses": self.sources,
            "opened": self.opened,
            "failed": total(&self.connect_errors),
            "connect_errors": self.connect_errors,
            "open_s": self.open_wall.as_secs_f64(),
            "handshakes_per_s": self.handshake_rate(),
            "handshake_latency_us": percentiles_us(&self.handshake),
            "hold_s": self.hold.as_secs_f64(),
            "pongs": self.pongs,
            "dropped": total(&self.dropped),
            "dropped_errors": self.dropped,
            "closed_clean": self.closed_clean,
            "closed_unclean": total(&self.closed_unclean),
            "close_errors": self.closed_unclean,
            "server": memory,
        })
    }

    pub(crate) fn table(&self) -> String {
        let mut out = String::new();
        let _ = writeln!(
            out,
            "tether-load idle  {}  {} conns from {} source address{} in {} process{}",
            self.target,
            self.conns,
            self.sources,
            if self.sources == 1 { "" } else { "es" },
            self.processes,
            if self.processes == 1 { "" } else { "es" },
        );
        let _ = writeln!(
            out,
            "  opened        {:>12}   failed {}",
            self.opened,
            total(&self.connect_errors)
        );
        let _ = writeln!(
            out,
            "  handshakes    {:>12.0}/s  in {:.2} s",
            self.handshake_rate(),
            self.open_wall.as_secs_f64()
        );
        write_latency(&mut out, "hs latency", &self.handshake);
        if let Some(memory) = self.memory {
            let _ = write!(
                out,
                "  server RSS    {} before, {} open",
                mib(memory.before),
                mib(memory.open)
            );
            if let Some(closed) = memory.closed {
                let _ = write!(out, ", {} after close", mib(closed));
            }
            out.push('\n');
            if let Some(per) = memory.per_connection(self.opened) {
                let _ = writeln!(
                    out,
                    "  RSS per conn  {per:>12.0} B   ({:.2} KiB)",
                    per / 1024.0
                );
            }
        }
        let _ = writeln!(
            out,
            "  held          {:>10.2} s   pongs {}, dropped {}",
            self.hold.as_secs_f64(),
            self.pongs,
            total(&self.dropped)
        );
        let _ = writeln!(
            out,
            "  closed        {:>12}   clean, {} unclean",
            self.closed_clean,
            total(&self.closed_unclean)
        );
        write_error_lines(&mut out, &self.connect_errors, &self.dropped);
        for (error, count) in &self.closed_unclean {
            let _ = writeln!(out, "                {count} x close: {error}");
        }
        out
    }
}

pub(crate) fn total(errors: &ErrorCounts) -> u64 {
    errors.values().sum()
}

fn errors_json(connect: &ErrorCounts, connection: &ErrorCounts) -> Value {
    json!({ "connect": connect, "connection": connection })
}

fn write_error_lines(out: &mut String, connect: &ErrorCounts, connection: &ErrorCounts) {
    for (error, count) in connect {
        let _ = writeln!(out, "                {count} x connect: {error}");
    }
    for (error, count) in connection {
        let _ = writeln!(out, "                {count} x connection: {error}");
    }
}

/// One line per error of `kind`, with its count.
pub(crate) fn write_errors(out: &mut String, kind: &str, errors: &ErrorCounts) {
    for (error, count) in errors {
        let _ = writeln!(out, "                {count} x {kind}: {error}");
    }
}

pub(crate) fn percentiles_us(histogram: &Histogram<u64>) -> Value {
    if histogram.is_empty() {
        return Value::Null;
    }
    let us = |ns: u64| ns as f64 / 1000.0;
    json!({
        "p50": us(histogram.value_at_quantile(0.50)),
        "p99": us(histogram.value_at_quantile(0.99)),
        "p999": us(histogram.value_at_quantile(0.999)),
        "max": us(histogram.max()),
        "mean": histogram.mean() / 1000.0,
    })
}

pub(crate) fn write_latency(out: &mut String, label: &str, histogram: &Histogram<u64>) {
    if histogram.is_empty() {
        let _ = writeln!(out, "  {label:<13} -");
        return;
    }
    let _ = writeln!(
        out,
        "  {label:<13} p50 {}  p99 {}  p99.9 {}  max {}",
        nanos(histogram.value_at_quantile(0.50)),
        nanos(histogram.value_at_quantile(0.99)),
        nanos(histogram.value_at_quantile(0.999)),
        nanos(histogram.max()),
    );
}

/// A duration in nanoseconds, in the unit that suits it.
fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.0} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

pub(crate) fn mib(bytes: u64) -> String {
    format!("{:.1} MiB", bytes as f64 / (1024.0 * 1024.0))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn histogram_round_trips_through_json() {
        let mut histogram = latency_histogram();
        for value in [1_000, 2_000, 2_000, 5_000_000] {
            histogram.record(value).unwrap();
        }
        let mut merged = latency_histogram();
        merge_histogram_json(&mut merged, &histogram_to_json(&histogram));
        merge_histogram_json(&mut merged, &histogram_to_json(&histogram));
        assert_eq!(merged.len(), 8);
        assert_eq!(
            merged.value_at_quantile(0.5),
            histogram.value_at_quantile(0.5)
        );
        assert!(histogram.equivalent(merged.max(), 5_000_000));
    }

    #[test]
    fn formats_durations() {
        assert_eq!(nanos(999), "999 ns");
        assert_eq!(nanos(312_400), "312 us");
        assert_eq!(nanos(1_204_000), "1.20 ms");
        assert_eq!(nanos(2_500_000_000), "2.50 s");
    }
}
