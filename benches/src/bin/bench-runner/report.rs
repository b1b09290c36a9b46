//! The Markdown written to `benches/RESULTS.md`: medians with min–max,
//! tetherd's ratio to each peer, per-scenario details and machine notes.

use std::fmt::Write as _;

use crate::{
    machine::Machine,
    measure::{Metric, Sample, Settings},
    scenario::{Load, SERVERS, Scenario},
};

/// Messages at least this large are reported by bytes per second.
const LARGE_MESSAGE: usize = 64 * 1024;

/// Everything a results page is made of.
#[derive(Debug)]
pub(crate) struct Inputs<'a> {
    pub(crate) command: &'a str,
    pub(crate) note: Option<&'a str>,
    pub(crate) rounds: usize,
    pub(crate) duration: f64,
    pub(crate) hold: f64,
    pub(crate) settings: &'a Settings,
    pub(crate) machine: &'a Machine,
    pub(crate) load_after: &'a str,
    pub(crate) scenarios: &'a [Scenario],
    /// Indexes into [`SERVERS`].
    pub(crate) servers: &'a [usize],
    pub(crate) samples: &'a [Sample],
}

/// One column of the summary: a metric of a scenario.
struct Column {
    scenario: usize,
    metric: Metric,
    header: String,
}

/// Median, least and greatest of a set of runs.
#[derive(Debug, Clone, Copy)]
struct Spread {
    median: f64,
    min: f64,
    max: f64,
    runs: usize,
}

impl Spread {
    fn of(mut values: Vec<f64>) -> Option<Self> {
        if values.is_empty() {
            return None;
        }
        values.sort_by(f64::total_cmp);
        let middle = values.len() / 2;
        let median = if values.len() % 2 == 1 {
            values[middle]
        } else {
            (values[middle - 1] + values[middle]) / 2.0
        };
        Some(Self {
            median,
            min: values[0],
            max: values[values.len() - 1],
            runs: values.len(),
        })
    }

    fn cell(self, metric: Metric) -> String {
        if self.runs == 1 {
            return format(metric, self.median);
        }
        format!(
            "{} ({}–{})",
            format(metric, self.median),
            format(metric, self.min),
            format(metric, self.max)
        )
    }
}

pub(crate) fn render(inputs: &Inputs<'_>) -> String {
    let mut out = String::new();
    let machine = inputs.machine;
    let _ = writeln!(out, "# Side-by-side echo benchmarks\n");
    let _ = writeln!(
        out,
        "Written by `benches/run.sh {}` on {} ({} round{}; how it measures: [README](README.md)). \
         Each cell is the median of the rounds with the least and greatest value in brackets.\n",
        inputs.command,
        machine.date,
        inputs.rounds,
        if inputs.rounds == 1 { "" } else { "s" },
    );
    if let Some(note) = inputs.note {
        let _ = writeln!(out, "**Conditions:** {note}\n");
    }
    let columns = columns(inputs.scenarios);
    summary(&mut out, inputs, &columns);
    ratios(&mut out, inputs, &columns);
    details(&mut out, inputs);
    warnings(&mut out, inputs);
    let _ = writeln!(out, "## Machine\n");
    let _ = writeln!(
        out,
        "- CPU: {} ({} cores)",
        machine.cpu_model, machine.cores
    );
    let _ = writeln!(out, "- kernel: {}", machine.kernel);
    let _ = writeln!(
        out,
        "- {}; release profile with `codegen-units = 4`, `debug = 1`, no LTO, for every server",
        machine.rustc
    );
    let _ = writeln!(out, "- crates: {}", machine.crates.join(", "));
    let _ = writeln!(
        out,
        "- server pinned to core {}, load generator to core {}; echo runs measure {} s, idle runs hold {} s",
        inputs.settings.server_core, inputs.settings.load_core, inputs.duration, inputs.hold
    );
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min): {} at the start, {} at the end",
        machine.load_before, inputs.load_after
    );
    out
}

fn columns(scenarios: &[Scenario]) -> Vec<Column> {
    let mut columns = Vec::new();
    for (index, scenario) in scenarios.iter().enumerate() {
        let metrics: &[(Metric, &str)] = match scenario.load {
            Load::Echo { size, .. } if size >= LARGE_MESSAGE => &[
                (Metric::MegabytesPerSecond, "payload/s"),
                (Metric::ServerCpuEach, "server CPU/msg"),
            ],
            Load::Echo { .. } => &[
                (Metric::MessagesPerSecond, "msg/s"),
                (Metric::ServerCpuEach, "server CPU/msg"),
            ],
            Load::Handshake => &[
                (Metric::HandshakesPerSecond, "handshakes/s"),
                (Metric::ServerCpuEach, "server CPU/handshake"),
            ],
            Load::Idle { .. } => &[(Metric::RssPerConnection, "RSS/conn")],
        };
        for &(metric, label) in metrics {
            columns.push(Column {
                scenario: index,
                metric,
                header: format!("{}: {label}", scenario.title),
            });
        }
    }
    columns
}

fn spread(inputs: &Inputs<'_>, scenario: usize, server: usize, metric: Metric) -> Option<Spread> {
    let values = inputs
        .samples
        .iter()
        .filter(|sample| sample.scenario == scenario && sample.server == server)
        .filter_map(|sample| sample.result.as_ref().ok())
        .filter_map(|measured| measured.values.get(&metric).copied())
        .collect();
    Spread::of(values)
}

fn header_row(out: &mut String, first: &str, headers: impl Iterator<Item = String>) {
    let headers: Vec<String> = headers.collect();
    let _ = writeln!(out, "| {first} | {} |", headers.join(" | "));
    let _ = writeln!(out, "|---|{}", "---|".repeat(headers.len()));
}

fn summary(out: &mut String, inputs: &Inputs<'_>, columns: &[Column]) {
    let _ = writeln!(out, "## Summary\n");
    header_row(
        out,
        "server",
        columns.iter().map(|column| column.header.clone()),
    );
    for &server in inputs.servers {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                spread(inputs, column.scenario, server, column.metric)
                    .map_or_else(|| "—".into(), |spread| spread.cell(column.metric))
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", SERVERS[server].name, cells.join(" | "));
    }
    out.push('\n');
}

fn ratios(out: &mut String, inputs: &Inputs<'_>, columns: &[Column]) {
    const TETHERD: usize = 0;
    if !inputs.servers.contains(&TETHERD) || inputs.servers.len() < 2 {
        return;
    }
    let _ = writeln!(
        out,
        "## tetherd ÷ peer\n\nRatios of medians. Above 1 is better for rates; below 1 is better for CPU per \
         message and RSS per connection (marked ↓).\n"
    );
    header_row(
        out,
        "tetherd ÷",
        columns.iter().map(|column| {
            let lower_is_better = matches!(
                column.metric,
                Metric::ServerCpuEach | Metric::RssPerConnection
            );
            format!(
                "{}{}",
                column.header,
                if lower_is_better { " ↓" } else { "" }
            )
        }),
    );
    for &peer in inputs.servers.iter().filter(|&&server| server != TETHERD) {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                let tetherd = spread(inputs, column.scenario, TETHERD, column.metric);
                let other = spread(inputs, column.scenario, peer, column.metric);
                match (tetherd, other) {
                    (Some(tetherd), Some(other)) if other.median > 0.0 => {
                        format!("{:.2}×", tetherd.median / other.median)
                    }
                    _ => "—".into(),
                }
            })
            .collect();
        let _ = writeln!(out, "| {} | {} |", SERVERS[peer].name, cells.join(" | "));
    }
    out.push('\n');
}

fn details(out: &mut String, inputs: &Inputs<'_>) {
    let _ = writeln!(out, "## Per scenario\n");
    for (index, scenario) in inputs.scenarios.iter().enumerate() {
        let metrics: &[(Metric, &str)] = match scenario.load {
            Load::Echo { .. } => &[
                (Metric::MessagesPerSecond, "msg/s"),
                (Metric::MegabytesPerSecond, "payload/s each way"),
                (Metric::ServerCpuEach, "server CPU/msg"),
                (Metric::LatencyP99, "p99 latency"),
                (Metric::ServerCpu, "server CPU"),
                (Metric::LoadCpu, "load generator CPU"),
            ],
            Load::Handshake => &[
                (Metric::HandshakesPerSecond, "handshakes/s"),
                (Metric::ServerCpuEach, "server CPU/handshake"),
                (Metric::LatencyP99, "p99 handshake latency"),
                (Metric::ServerCpu, "server CPU"),
                (Metric::LoadCpu, "load generator CPU"),
            ],
            Load::Idle { .. } => &[
                (Metric::RssPerConnection, "server RSS/conn"),
                (Metric::OpenRate, "connections opened/s"),
            ],
        };
        let what = match scenario.load {
            Load::Echo {
                conns,
                inflight,
                size,
            } => {
                format!(
                    "echo, {conns} connections × {inflight} messages in flight, {size} B binary"
                )
            }
            Load::Idle { conns } => format!("{conns} idle connections"),
            Load::Handshake => "connect, upgrade, close; 128 in flight".into(),
        };
        let _ = writeln!(out, "### {} ({what})\n", scenario.title);
        header_row(
            out,
            "server",
            metrics
                .iter()
                .map(|(_, label)| (*label).to_string())
                .chain(["runs ok".to_string()]),
        );
        for &server in inputs.servers {
            if !scenario.applies_to(&SERVERS[server]) {
                continue;
            }
            let mut cells: Vec<String> = metrics
                .iter()
                .map(|&(metric, _)| {
                    spread(inputs, index, server, metric)
                        .map_or_else(|| "—".into(), |spread| spread.cell(metric))
                })
                .collect();
            let (ok, total) = inputs
                .samples
                .iter()
                .filter(|sample| sample.scenario == index && sample.server == server)
                .fold((0, 0), |(ok, total), sample| {
                    (ok + usize::from(sample.result.is_ok()), total + 1)
                });
            cells.push(format!("{ok}/{total}"));
            let _ = writeln!(out, "| {} | {} |", SERVERS[server].name, cells.join(" | "));
        }
        out.push('\n');
    }
}

fn warnings(out: &mut String, inputs: &Inputs<'_>) {
    let mut lines = Vec::new();
    for sample in inputs.samples {
        let run = format!(
            "round {}, {}, {}",
            sample.round + 1,
            inputs.scenarios[sample.scenario].name,
            SERVERS[sample.server].name
        );
        match &sample.result {
            Ok(measured) => lines.extend(
                measured
                    .warnings
                    .iter()
                    .map(|warning| format!("- {run}: {warning}")),
            ),
            Err(error) => lines.push(format!("- {run}: failed: {error}")),
        }
    }
    let _ = writeln!(out, "## Warnings\n");
    if lines.is_empty() {
        let _ = writeln!(
            out,
            "None: every run verified every echo and no connection failed.\n"
        );
    } else {
        let _ = writeln!(out, "{}\n", lines.join("\n"));
    }
}

/// A value of `metric` in the unit that suits it.
fn format(metric: Metric, value: f64) -> String {
    match metric {
        Metric::MessagesPerSecond | Metric::HandshakesPerSecond | Metric::OpenRate => match value {
            1e6.. => format!("{:.2} M", value / 1e6),
            1e5.. => format!("{:.0} k", value / 1e3),
            1e3.. => format!("{:.1} k", value / 1e3),
            _ => format!("{value:.0}"),
        },
        Metric::MegabytesPerSecond if value >= 1000.0 => format!("{:.2} GB/s", value / 1000.0),
        Metric::MegabytesPerSecond => format!("{value:.0} MB/s"),
        Metric::ServerCpuEach | Metric::LatencyP99 => match value {
            1000.0.. => format!("{:.2} ms", value / 1000.0),
            100.0.. => format!("{value:.0} µs"),
            _ => format!("{value:.2} µs"),
        },
        Metric::ServerCpu | Metric::LoadCpu => format!("{:.0}%", value * 100.0),
        Metric::RssPerConnection => format!("{value:.0} B"),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn median_of_odd_and_even_counts() {
        let odd = Spread::of(vec![3.0, 1.0, 2.0]).unwrap();
        assert_eq!((odd.median, odd.min, odd.max, odd.runs), (2.0, 1.0, 3.0, 3));
        let even = Spread::of(vec![4.0, 1.0, 2.0, 3.0]).unwrap();
        assert_eq!(even.median, 2.5);
        assert!(Spread::of(Vec::new()).is_none());
    }

    #[test]
    fn formats_in_fitting_units() {
        assert_eq!(format(Metric::MessagesPerSecond, 1_070_000.0), "1.07 M");
        assert_eq!(format(Metric::MessagesPerSecond, 620_400.0), "620 k");
        assert_eq!(format(Metric::MegabytesPerSecond, 2_950.0), "2.95 GB/s");
        assert_eq!(format(Metric::ServerCpuEach, 1.618), "1.62 µs");
        assert_eq!(format(Metric::RssPerConnection, 5_897.2), "5897 B");
    }
}
