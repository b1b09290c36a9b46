//! The Markdown written to `benches/RESULTS.md`: medians with min–max,
//! tetherd's ratio to each peer (the echo server's to the echo peers, the
//! gateway's to uWebSockets.js), how two runtime threads scale,
//! per-scenario details and machine notes.

use std::fmt::Write as _;

use tether_benches::Spread;

use crate::{
    floor::Floor,
    machine::Machine,
    measure::{Metric, Sample, Settings},
    scenario::{IdleClient, LARGE_MESSAGE, Load, Publisher, SERVERS, Scenario},
};

/// Issue #6's target: two runtime threads on two cores give at least this
/// many times one thread's rate on one core.
const SCALING_TARGET: f64 = 1.7;

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
    pub(crate) floor: &'a Result<Floor, String>,
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

/// `median (min–max)`, or the one value of a single run.
fn spread_cell(spread: Spread, metric: Metric) -> String {
    if spread.runs == 1 {
        return format(metric, spread.median);
    }
    format!(
        "{} ({}–{})",
        format(metric, spread.median),
        format(metric, spread.min),
        format(metric, spread.max)
    )
}

pub(crate) fn render(inputs: &Inputs<'_>) -> String {
    let mut out = String::new();
    let machine = inputs.machine;
    let _ = writeln!(out, "# Side-by-side benchmarks\n");
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
    scaling(&mut out, inputs);
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
        "- server pinned to core {}, load generator to core {}; echo and fan-out runs measure {} s, idle runs hold {} s",
        inputs.settings.server_core, inputs.settings.load_core, inputs.duration, inputs.hold
    );
    let _ = writeln!(out, "{}", floor_line(inputs.floor));
    let _ = writeln!(
        out,
        "- load average (1, 5, 15 min): {} at the start, {} at the end",
        machine.load_before, inputs.load_after
    );
    out
}

/// The kernel's cost of one broadcast delivery, for the Machine section.
fn floor_line(floor: &Result<Floor, String>) -> String {
    match floor {
        Ok(floor) => format!(
            "- loopback TCP write floor: {:.2} µs ({:.2}–{:.2}) of CPU per {}-byte write to one of {} sockets \
             (median of {} rounds, min–max), i.e. at most {} writes/s on one core: the kernel's cost of one \
             broadcast delivery (`loopback-floor`, on the server's core; \
             [README](README.md#gateway-broadcast-one-publication-to-15000-subscribers))",
            floor.median_us,
            floor.min_us,
            floor.max_us,
            floor.size,
            with_thousands(floor.conns),
            floor.rounds,
            format(Metric::MessagesPerSecond, 1e6 / floor.median_us),
        ),
        Err(error) => format!("- loopback TCP write floor: not measured ({error})"),
    }
}

/// `9000` as `9,000`.
fn with_thousands(count: usize) -> String {
    let digits = count.to_string();
    let mut out = String::new();
    for (index, digit) in digits.chars().enumerate() {
        if index > 0 && (digits.len() - index).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
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
            Load::Broadcast { .. } => &[
                (Metric::DeliveriesPerSecond, "deliveries/s"),
                (Metric::ServerCpuEach, "server CPU/delivery"),
                (Metric::LastSubscriberP99, "p99 to last subscriber"),
            ],
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

/// A table cell: the spread of `metric`, or a dash when nothing measured it.
fn cell(inputs: &Inputs<'_>, scenario: usize, server: usize, metric: Metric) -> String {
    spread(inputs, scenario, server, metric)
        .map_or_else(|| "—".into(), |spread| spread_cell(spread, metric))
}

/// A Markdown table's header: `first`, then `headers`, and the line under
/// them.
fn header_row(out: &mut String, first: &str, headers: impl Iterator<Item = String>) {
    let headers: Vec<String> = headers.collect();
    row(out, first, &headers);
    let _ = writeln!(out, "|---|{}", "---|".repeat(headers.len()));
}

/// A Markdown table row: `first`, then `cells`. Cells are not padded to
/// their column's width, so that each row reads on its own in a diff.
fn row(out: &mut String, first: &str, cells: &[String]) {
    let _ = writeln!(out, "| {first} | {} |", cells.join(" | "));
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
            .map(|column| cell(inputs, column.scenario, server, column.metric))
            .collect();
        row(out, SERVERS[server].name, &cells);
    }
    out.push('\n');
}

fn ratios(out: &mut String, inputs: &Inputs<'_>, columns: &[Column]) {
    let is_tetherd = |server: usize| {
        inputs
            .scenarios
            .iter()
            .any(|scenario| scenario.tetherd() == server)
    };
    let peers: Vec<usize> = inputs
        .servers
        .iter()
        .copied()
        .filter(|&server| !is_tetherd(server) && SERVERS[server].threads == 1)
        .collect();
    let measured_tetherd = inputs
        .scenarios
        .iter()
        .any(|scenario| inputs.servers.contains(&scenario.tetherd()));
    if !measured_tetherd || peers.is_empty() {
        return;
    }
    let _ = writeln!(
        out,
        "## tetherd ÷ peer\n\nRatios of medians: `tetherd` to the echo peers, `tetherd-gateway` to \
         uWebSockets.js. Above 1 is better for rates; below 1 is better for CPU per message, \
         latency and RSS per connection (marked ↓).\n"
    );
    header_row(
        out,
        "tetherd ÷",
        columns.iter().map(|column| {
            let lower_is_better = matches!(
                column.metric,
                Metric::ServerCpuEach
                    | Metric::RssPerConnection
                    | Metric::LatencyP99
                    | Metric::LastSubscriberP99
            );
            format!(
                "{}{}",
                column.header,
                if lower_is_better { " ↓" } else { "" }
            )
        }),
    );
    for peer in peers {
        let cells: Vec<String> = columns
            .iter()
            .map(|column| {
                let scenario = &inputs.scenarios[column.scenario];
                if !scenario.applies_to(&SERVERS[peer]) {
                    return "—".into();
                }
                let tetherd = spread(inputs, column.scenario, scenario.tetherd(), column.metric);
                let other = spread(inputs, column.scenario, peer, column.metric);
                match (tetherd, other) {
                    (Some(tetherd), Some(other)) if other.median > 0.0 => {
                        format!("{:.2}×", tetherd.median / other.median)
                    }
                    _ => "—".into(),
                }
            })
            .collect();
        row(out, SERVERS[peer].name, &cells);
    }
    out.push('\n');
}

/// One thread against two by server CPU per message (or delivery): the
/// load generator shares the second core with the two-thread server, so
/// its rate cannot show how it scales.
fn scaling(out: &mut String, inputs: &Inputs<'_>) {
    let measured = |index: usize, scenario: &Scenario| {
        let two = scenario.tetherd_two_threads();
        inputs.servers.contains(&scenario.tetherd())
            && inputs.servers.contains(&two)
            && scenario.applies_to(&SERVERS[two])
            && inputs.samples.iter().any(|sample| sample.scenario == index)
    };
    if !inputs
        .scenarios
        .iter()
        .enumerate()
        .any(|(index, scenario)| measured(index, scenario))
    {
        return;
    }
    let _ = writeln!(
        out,
        "## Two runtime threads\n\n`tetherd-2t` and `tetherd-gateway-2t` run with `--threads 2` on cores {} \
         and {}, the second shared with the load generator, so their rates do not show how they scale; \
         their server CPU per message (or delivery) does. Scaling: 2 × server CPU each with 1 thread ÷ \
         server CPU each with 2 threads, the rate two busy cores would give next to one. Target: ≥ \
         {SCALING_TARGET}.\n",
        inputs.settings.server_core, inputs.settings.load_core,
    );
    header_row(
        out,
        "scenario",
        [
            "1 thread: rate",
            "1 thread: server CPU each",
            "2 threads: rate",
            "2 threads: server CPU each",
            "2 threads: server CPU",
            "scaling",
            "target met",
        ]
        .into_iter()
        .map(str::to_string),
    );
    for (index, scenario) in inputs.scenarios.iter().enumerate() {
        if !measured(index, scenario) {
            continue;
        }
        let (one, two) = (scenario.tetherd(), scenario.tetherd_two_threads());
        let rate = match scenario.load {
            Load::Broadcast { .. } => Metric::DeliveriesPerSecond,
            _ => Metric::MessagesPerSecond,
        };
        let cpu_each = |server| spread(inputs, index, server, Metric::ServerCpuEach);
        let (scaling, met) = match (cpu_each(one), cpu_each(two)) {
            (Some(one_thread), Some(two_threads)) if two_threads.median > 0.0 => {
                let scaling = SERVERS[two].threads as f64 * one_thread.median / two_threads.median;
                let met = if scaling >= SCALING_TARGET {
                    "yes"
                } else {
                    "no"
                };
                (format!("{scaling:.2}×"), met)
            }
            _ => ("—".into(), "—"),
        };
        let cells = [
            cell(inputs, index, one, rate),
            cell(inputs, index, one, Metric::ServerCpuEach),
            cell(inputs, index, two, rate),
            cell(inputs, index, two, Metric::ServerCpuEach),
            cell(inputs, index, two, Metric::ServerCpu),
            scaling,
            met.to_string(),
        ];
        row(out, &scenario.title, &cells);
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
            Load::Broadcast { .. } => &[
                (Metric::DeliveriesPerSecond, "deliveries/s"),
                (Metric::PublicationsPerSecond, "publications/s"),
                (Metric::ServerCpuEach, "server CPU/delivery"),
                (Metric::LatencyP50, "p50 to subscriber"),
                (Metric::LatencyP99, "p99 to subscriber"),
                (Metric::LastSubscriberP50, "p50 to last subscriber"),
                (Metric::LastSubscriberP99, "p99 to last subscriber"),
                (Metric::ServerCpu, "server CPU"),
                (Metric::LoadCpu, "load generator CPU"),
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
            Load::Idle {
                conns,
                client: IdleClient::TetherLoad,
            } => format!("{conns} idle connections opened by `tether-load idle`"),
            Load::Idle {
                conns,
                client: IdleClient::Node,
            } => format!(
                "{conns} idle connections opened by Node's WebSocket client (`peers/idle-client.cjs`)"
            ),
            Load::Handshake => "connect, upgrade, close; 128 in flight".into(),
            Load::Broadcast {
                subscribers,
                rate,
                publisher,
            } => {
                let via = match publisher {
                    Publisher::Api(1) => "`POST /api/publish` on one keep-alive connection".into(),
                    Publisher::Api(connections) => format!(
                        "`POST /api/publish` on {connections} keep-alive connections in turn"
                    ),
                    Publisher::WebSocket => {
                        "a client's `publish` command over one WebSocket".into()
                    }
                };
                format!(
                    "{subscribers} subscribers of one channel; {rate} publications/s through \
                     {via}, each sent once the connection's last was answered"
                )
            }
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
                .map(|&(metric, _)| cell(inputs, index, server, metric))
                .collect();
            let (ok, total) = inputs
                .samples
                .iter()
                .filter(|sample| sample.scenario == index && sample.server == server)
                .fold((0, 0), |(ok, total), sample| {
                    (ok + usize::from(sample.result.is_ok()), total + 1)
                });
            cells.push(format!("{ok}/{total}"));
            row(out, SERVERS[server].name, &cells);
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
            "None: every run verified every echo or delivery and no connection failed.\n"
        );
    } else {
        let _ = writeln!(out, "{}\n", lines.join("\n"));
    }
}

/// A value of `metric` in the unit that suits it.
fn format(metric: Metric, value: f64) -> String {
    match metric {
        Metric::MessagesPerSecond
        | Metric::HandshakesPerSecond
        | Metric::OpenRate
        | Metric::DeliveriesPerSecond => match value {
            1e6.. => format!("{:.2} M", value / 1e6),
            1e5.. => format!("{:.0} k", value / 1e3),
            1e3.. => format!("{:.1} k", value / 1e3),
            _ => format!("{value:.0}"),
        },
        Metric::MegabytesPerSecond if value >= 1000.0 => format!("{:.2} GB/s", value / 1000.0),
        Metric::MegabytesPerSecond => format!("{value:.0} MB/s"),
        Metric::PublicationsPerSecond => format!("{value:.1}/s"),
        Metric::ServerCpuEach
        | Metric::LatencyP50
        | Metric::LatencyP99
        | Metric::LastSubscriberP50
        | Metric::LastSubscriberP99 => match value {
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
    use crate::scenario::{
        TETHERD, TETHERD_GATEWAY, TETHERD_GATEWAY_TWO_THREADS, TETHERD_TWO_THREADS,
    };

    #[test]
    fn formats_in_fitting_units() {
        assert_eq!(format(Metric::MessagesPerSecond, 1_070_000.0), "1.07 M");
        assert_eq!(format(Metric::MessagesPerSecond, 620_400.0), "620 k");
        assert_eq!(format(Metric::MegabytesPerSecond, 2_950.0), "2.95 GB/s");
        assert_eq!(format(Metric::ServerCpuEach, 1.618), "1.62 µs");
        assert_eq!(format(Metric::RssPerConnection, 5_897.2), "5897 B");
    }

    /// One round of echo-16 and echo-1k against tetherd, tetherd-2t and
    /// tokio-tungstenite (index 2), with the given server CPU per message.
    fn page(cpu_each: [[f64; 3]; 2]) -> String {
        rendered(
            &["echo-16", "echo-1k"],
            &[TETHERD, TETHERD_TWO_THREADS, 2],
            |scenario, server| {
                let cpu = cpu_each[scenario][server];
                let mut measured = crate::measure::Measured::default();
                measured.values.insert(Metric::ServerCpuEach, cpu);
                measured.values.insert(Metric::MessagesPerSecond, 1e6 / cpu);
                measured.values.insert(Metric::ServerCpu, 1.0);
                measured
            },
        )
    }

    /// One round of the scenarios `names` against `servers`; `measured`
    /// gives each run's figures by (scenario, server) position.
    fn rendered(
        names: &[&str],
        servers: &[usize],
        measured: impl Fn(usize, usize) -> crate::measure::Measured,
    ) -> String {
        let scenarios: Vec<Scenario> = crate::scenario::all(1000, 1000)
            .into_iter()
            .filter(|scenario| names.contains(&scenario.name))
            .collect();
        let mut samples = Vec::new();
        for scenario in 0..scenarios.len() {
            for (position, &server) in servers.iter().enumerate() {
                samples.push(Sample {
                    round: 0,
                    scenario,
                    server,
                    result: Ok(measured(scenario, position)),
                });
            }
        }
        let machine = Machine {
            cpu_model: "test".into(),
            cores: 2,
            kernel: "test".into(),
            rustc: "test".into(),
            date: "test".into(),
            load_before: "0".into(),
            crates: Vec::new(),
        };
        let settings = Settings {
            bin_dir: std::path::PathBuf::new(),
            duration: 1.0,
            hold: 1.0,
            server_core: 0,
            load_core: 1,
        };
        render(&Inputs {
            command: "",
            note: None,
            rounds: 1,
            duration: 1.0,
            hold: 1.0,
            settings: &settings,
            machine: &machine,
            floor: &Ok(Floor::example()),
            load_after: "0",
            scenarios: &scenarios,
            servers,
            samples: &samples,
        })
    }

    /// The lines of the section that `heading` opens.
    fn section<'a>(page: &'a str, heading: &str) -> Vec<&'a str> {
        page.split("\n## ")
            .find(|section| section.starts_with(heading))
            .unwrap_or_else(|| panic!("no section {heading} in:\n{page}"))
            .lines()
            .collect()
    }

    #[test]
    fn two_threads_scale_by_server_cpu_per_message() {
        let page = page([[1.0, 1.1, 2.0], [2.0, 2.5, 3.0]]);
        let scaling = section(&page, "Two runtime threads");
        assert!(
            scaling.contains(
                &"| 100×8 16 B | 1.00 M | 1.00 µs | 909 k | 1.10 µs | 100% | 1.82× | yes |"
            ),
            "{scaling:#?}"
        );
        assert!(
            scaling.contains(
                &"| 100×8 1 KiB | 500 k | 2.00 µs | 400 k | 2.50 µs | 100% | 1.60× | no |"
            ),
            "{scaling:#?}"
        );
    }

    #[test]
    fn gateway_two_threads_scale_by_server_cpu_per_delivery() {
        let page = rendered(
            &["fanout-1", "fanout-50"],
            &[TETHERD_GATEWAY, TETHERD_GATEWAY_TWO_THREADS],
            |_, position| {
                let cpu = [1.0, 1.25][position];
                let mut measured = crate::measure::Measured::default();
                measured.values.insert(Metric::ServerCpuEach, cpu);
                measured.values.insert(Metric::DeliveriesPerSecond, 7e5);
                measured.values.insert(Metric::ServerCpu, 0.7 / cpu);
                measured
            },
        );
        let scaling = section(&page, "Two runtime threads");
        let rows: Vec<&&str> = scaling
            .iter()
            .filter(|line| line.starts_with("| fan-out"))
            .collect();
        assert_eq!(
            rows,
            [&"| fan-out 1k×50/s | 700 k | 1.00 µs | 700 k | 1.25 µs | 56% | 1.60× | no |"],
            "only the sustained load is measured with two threads"
        );
    }

    #[test]
    fn machine_section_states_the_write_floor() {
        let page = page([[1.0, 1.1, 2.0], [2.0, 2.5, 3.0]]);
        let machine = section(&page, "Machine");
        let line = machine
            .iter()
            .find(|line| line.starts_with("- loopback TCP write floor:"))
            .unwrap_or_else(|| panic!("no floor line in {machine:#?}"));
        assert!(
            line.contains("6.40 µs (6.30–6.80) of CPU per 30-byte write to one of 9,000 sockets"),
            "{line}"
        );
        assert!(line.contains("at most 156 k writes/s"), "{line}");
        assert_eq!(with_thousands(15_000_000), "15,000,000");
        assert_eq!(with_thousands(999), "999");
    }

    #[test]
    fn two_threads_are_no_peer() {
        let page = page([[1.0, 1.1, 2.0], [2.0, 2.5, 3.0]]);
        let ratios = section(&page, "tetherd ÷ peer");
        let rows: Vec<&str> = ratios
            .iter()
            .filter_map(|line| line.strip_prefix("| "))
            .filter_map(|line| line.split(" |").next())
            .collect();
        assert_eq!(rows, ["tetherd ÷", "tokio-tungstenite"]);
        assert!(
            section(&page, "Summary")
                .iter()
                .any(|line| line.starts_with("| tetherd-2t |"))
        );
    }

    #[test]
    fn the_gateway_is_compared_with_uws_and_the_echo_server_with_echo_peers() {
        let uws = SERVERS
            .iter()
            .position(|server| server.name == "uws.js-gateway")
            .unwrap();
        let page = rendered(
            &["echo-16", "fanout-50"],
            &[TETHERD, 2, TETHERD_GATEWAY, uws],
            |_, position| {
                let mut measured = crate::measure::Measured::default();
                // tetherd, tokio-tungstenite, tetherd-gateway, uws.js-gateway
                let rate = [2.0, 1.0, 3.0, 4.0][position] * 1e5;
                measured.values.insert(Metric::MessagesPerSecond, rate);
                measured.values.insert(Metric::DeliveriesPerSecond, rate);
                measured
            },
        );
        let ratios = section(&page, "tetherd ÷ peer");
        let row = |name: &str| {
            ratios
                .iter()
                .find(|line| line.starts_with(&format!("| {name} |")))
                .copied()
                .unwrap_or_else(|| panic!("no {name} row in {ratios:#?}"))
        };
        assert!(
            row("tokio-tungstenite").starts_with("| tokio-tungstenite | 2.00× | — |"),
            "{ratios:#?}"
        );
        assert!(row("uws.js-gateway").contains(" 0.75× |"), "{ratios:#?}");
        assert!(
            row("uws.js-gateway").starts_with("| uws.js-gateway | — |"),
            "{ratios:#?}"
        );
        assert!(
            !ratios
                .iter()
                .any(|line| line.starts_with("| tetherd-gateway |"))
        );
    }
}
