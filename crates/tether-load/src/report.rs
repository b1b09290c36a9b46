//! Results: a human table on stdout ([`HumanTable`], drawn by
//! `comfy-table`), or one JSON object with `--json`; and the pieces every
//! mode's report shares (latency histograms, error counts, CPU time).

use std::{collections::BTreeMap, time::Duration};

use comfy_table::{CellAlignment, ContentArrangement, Table, presets};
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

/// What a mode measured, for people and for programs.
pub(crate) trait Report {
    /// One JSON object: what `--json` prints.
    fn to_json(&self) -> Value;

    /// The human table: what is printed without `--json`.
    fn table(&self) -> String;

    /// Prints the report on stdout: the JSON object if `json`, else the
    /// table.
    fn print(&self, json: bool) {
        if json {
            println!("{}", self.to_json());
        } else {
            print!("{}", self.table());
        }
    }
}

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

    /// Its rows of a report table: `cpu`, and a warning if saturated.
    pub(crate) fn add_rows(&self, table: &mut HumanTable) {
        let wall = self.wall.as_secs_f64().max(1e-9);
        let mut cpu = format!(
            "tether-load {:.2} s in {:.2} s wall ({:.0}% of {} core{})",
            self.own.as_secs_f64(),
            wall,
            self.own_load() * 100.0,
            self.cores,
            plural(self.cores, "s"),
        );
        if let Some(server) = self.server {
            cpu += &format!(
                ", server {:.2} s ({:.2} cores)",
                server.as_secs_f64(),
                server.as_secs_f64() / wall
            );
        }
        table.row("cpu", cpu);
        if self.saturated() {
            table.row(
                "WARNING",
                "tether-load used >= 90% of its cores: it may be the bottleneck, not the server",
            );
        }
    }
}

/// A report as people read it: a title line, then a table without borders
/// whose first column labels each row (or, given a header, a grid of
/// figures whose other columns are right-aligned).
pub(crate) struct HumanTable {
    title: String,
    table: Table,
}

impl HumanTable {
    /// A table of labelled rows under `title`.
    pub(crate) fn new(title: impl Into<String>) -> Self {
        let mut table = Table::new();
        table
            .load_preset(presets::NOTHING)
            .set_content_arrangement(ContentArrangement::Disabled);
        Self {
            title: title.into(),
            table,
        }
    }

    /// A grid under `title`: `header` names its columns, the first of which
    /// labels the rows; the others hold figures, right-aligned.
    pub(crate) fn grid(title: impl Into<String>, header: &[&str]) -> Self {
        let mut grid = Self::new(title);
        grid.table.set_header(header.to_vec());
        for column in grid.table.column_iter_mut().skip(1) {
            column.set_cell_alignment(CellAlignment::Right);
        }
        grid
    }

    /// A row: its label, then what it shows.
    pub(crate) fn row(&mut self, label: &str, value: impl Into<String>) {
        self.table.add_row(vec![label.to_owned(), value.into()]);
    }

    /// A row of cells, the first its label.
    pub(crate) fn cells(&mut self, cells: Vec<String>) {
        self.table.add_row(cells);
    }

    /// A row of latency percentiles, or a dash if nothing was measured.
    pub(crate) fn latency(&mut self, label: &str, histogram: &Histogram<u64>) {
        if histogram.is_empty() {
            self.row(label, "-");
            return;
        }
        let percentiles = format!(
            "p50 {}  p99 {}  p99.9 {}  max {}",
            nanos(histogram.value_at_quantile(0.50)),
            nanos(histogram.value_at_quantile(0.99)),
            nanos(histogram.value_at_quantile(0.999)),
            nanos(histogram.max()),
        );
        self.row(label, percentiles);
    }

    /// One unlabelled row per error of `kind`, with its count.
    pub(crate) fn errors(&mut self, kind: &str, errors: &ErrorCounts) {
        for (error, count) in errors {
            self.row("", format!("{count} x {kind}: {error}"));
        }
    }

    /// The title, the table under it (indented by two spaces), and `notes`
    /// under that.
    pub(crate) fn render(mut self, notes: &[String]) -> String {
        if let Some(labels) = self.table.column_mut(0) {
            labels.set_padding((2, 1));
        }
        let mut out = self.title;
        out.push('\n');
        for line in self.table.lines() {
            out += line.trim_end();
            out.push('\n');
        }
        for note in notes {
            out += note;
            out.push('\n');
        }
        out
    }
}

/// `suffix` unless `count` is 1.
pub(crate) fn plural(count: impl TryInto<u64>, suffix: &str) -> &str {
    if count.try_into().is_ok_and(|count| count == 1) {
        ""
    } else {
        suffix
    }
}

/// `count` and `noun`, which takes `suffix` unless `count` is 1:
/// `1 process`, `3 processes`.
pub(crate) fn counted(count: usize, noun: &str, suffix: &str) -> String {
    format!("{count} {noun}{}", plural(count, suffix))
}

/// Where a fleet's connections come from, for a report's title:
/// `from 3 source addresses in 1 process`.
pub(crate) fn fleet_title(sources: usize, processes: usize) -> String {
    format!(
        "from {} in {}",
        counted(sources, "source address", "es"),
        counted(processes, "process", "es")
    )
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

impl Report for EchoReport {
    fn to_json(&self) -> Value {
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

    fn table(&self) -> String {
        let wall = self.cpu.wall.as_secs_f64().max(1e-9);
        let mut table = HumanTable::new(format!(
            "tether-load echo  {}  {} conns x {} in flight, {} B {}, {:.2} s",
            self.target,
            self.opened,
            self.inflight,
            self.size,
            if self.text { "text" } else { "binary" },
            wall
        ));
        table.row(
            "messages",
            format!(
                "{:>12}   {:>12.0} msg/s",
                self.messages,
                self.messages as f64 / wall
            ),
        );
        table.row(
            "payload",
            format!(
                "{:>9.2} MB   {:>12.2} MB/s each way",
                self.bytes as f64 / 1e6,
                self.bytes as f64 / wall / 1e6
            ),
        );
        table.latency("latency", &self.latency);
        table.row(
            "errors",
            format!(
                "verify {}, connect {}, connection {}",
                self.verify_errors,
                total(&self.connect_errors),
                total(&self.connection_errors)
            ),
        );
        if let Some(first) = &self.first_verify_error {
            table.row("", format!("first mismatch: {first}"));
        }
        table.errors("connect", &self.connect_errors);
        table.errors("connection", &self.connection_errors);
        self.cpu.add_rows(&mut table);
        table.render(&[])
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
}

impl Report for IdleReport {
    fn to_json(&self) -> Value {
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

    fn table(&self) -> String {
        let mut table = HumanTable::new(format!(
            "tether-load idle  {}  {} conns {}",
            self.target,
            self.conns,
            fleet_title(self.sources, self.processes),
        ));
        table.row(
            "opened",
            format!(
                "{:>12}   failed {}",
                self.opened,
                total(&self.connect_errors)
            ),
        );
        table.row(
            "handshakes",
            format!(
                "{:>12.0}/s  in {:.2} s",
                self.handshake_rate(),
                self.open_wall.as_secs_f64()
            ),
        );
        table.latency("hs latency", &self.handshake);
        if let Some(memory) = self.memory {
            let mut rss = format!("{} before, {} open", mib(memory.before), mib(memory.open));
            if let Some(closed) = memory.closed {
                rss += &format!(", {} after close", mib(closed));
            }
            table.row("server RSS", rss);
            if let Some(per) = memory.per_connection(self.opened) {
                table.row(
                    "RSS per conn",
                    format!("{per:>12.0} B   ({:.2} KiB)", per / 1024.0),
                );
            }
        }
        table.row(
            "held",
            format!(
                "{:>10.2} s   pongs {}, dropped {}",
                self.hold.as_secs_f64(),
                self.pongs,
                total(&self.dropped)
            ),
        );
        table.row(
            "closed",
            format!(
                "{:>12}   clean, {} unclean",
                self.closed_clean,
                total(&self.closed_unclean)
            ),
        );
        table.errors("connect", &self.connect_errors);
        table.errors("connection", &self.dropped);
        table.errors("close", &self.closed_unclean);
        table.render(&[])
    }
}

/// How many errors there were, of every kind.
pub(crate) fn total(errors: &ErrorCounts) -> u64 {
    errors.values().sum()
}

fn errors_json(connect: &ErrorCounts, connection: &ErrorCounts) -> Value {
    json!({ "connect": connect, "connection": connection })
}

/// A latency histogram's percentiles, in microseconds, for a JSON report.
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

/// A duration in nanoseconds, in the unit that suits it.
fn nanos(ns: u64) -> String {
    match ns {
        0..1_000 => format!("{ns} ns"),
        1_000..1_000_000 => format!("{:.0} us", ns as f64 / 1e3),
        1_000_000..1_000_000_000 => format!("{:.2} ms", ns as f64 / 1e6),
        _ => format!("{:.2} s", ns as f64 / 1e9),
    }
}

/// Bytes in MiB, for people.
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
    fn echo_table_shows_every_row() {
        let mut latency = latency_histogram();
        latency.record(12_000).unwrap();
        let report = EchoReport {
            target: "ws://127.0.0.1:9001/".into(),
            conns: 2,
            opened: 2,
            size: 16,
            inflight: 4,
            text: false,
            messages: 123_456,
            bytes: 1_975_296,
            latency,
            verify_errors: 1,
            connect_errors: ErrorCounts::from([("refused".to_owned(), 2)]),
            connection_errors: ErrorCounts::new(),
            first_verify_error: Some("connection 0, message 5: wrong payload".into()),
            cpu: Cpu {
                wall: Duration::from_secs(2),
                own: Duration::from_millis(1900),
                cores: 1,
                server: Some(Duration::from_secs(1)),
            },
        };
        let table = report.table();
        let lines: Vec<&str> = table.lines().collect();
        assert!(
            lines[0].starts_with("tether-load echo  ws://127.0.0.1:9001/  2 conns x 4 in flight")
        );
        let rows = [
            ("messages", "123456          61728 msg/s"),
            ("payload", "1.98 MB           0.99 MB/s each way"),
            ("latency", "p50 12 us  p99 12 us  p99.9 12 us  max 12 us"),
            ("errors", "verify 1, connect 2, connection 0"),
            ("", "first mismatch: connection 0, message 5: wrong payload"),
            ("", "2 x connect: refused"),
            (
                "cpu",
                "tether-load 1.90 s in 2.00 s wall (95% of 1 core), server 1.00 s (0.50 cores)",
            ),
            ("WARNING", "tether-load used >= 90% of its cores"),
        ];
        assert_eq!(lines.len(), 1 + rows.len(), "{table}");
        for (line, (label, value)) in lines[1..].iter().zip(rows) {
            assert!(line.trim_start().starts_with(label), "{line:?} in\n{table}");
            assert!(line.contains(value), "{line:?} in\n{table}");
        }
    }

    #[test]
    fn titles_count_in_words() {
        assert_eq!(fleet_title(1, 1), "from 1 source address in 1 process");
        assert_eq!(fleet_title(3, 2), "from 3 source addresses in 2 processes");
        assert_eq!(counted(0, "channel", "s"), "0 channels");
    }

    #[test]
    fn formats_durations() {
        assert_eq!(nanos(999), "999 ns");
        assert_eq!(nanos(312_400), "312 us");
        assert_eq!(nanos(1_204_000), "1.20 ms");
        assert_eq!(nanos(2_500_000_000), "2.50 s");
    }
}
