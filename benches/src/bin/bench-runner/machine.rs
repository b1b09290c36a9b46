//! What the results table says about the machine it was measured on.

use std::{fs, process::Command};

use tether_load_os as os;

/// The machine and toolchain, read at the start of a run.
#[derive(Debug)]
pub(crate) struct Machine {
    pub(crate) cpu_model: String,
    pub(crate) cores: usize,
    pub(crate) kernel: String,
    pub(crate) rustc: String,
    /// UTC date and time.
    pub(crate) date: String,
    pub(crate) load_before: String,
    /// `name version` of the peer crates (and tokio) from `Cargo.lock`.
    pub(crate) crates: Vec<String>,
}

impl Machine {
    pub(crate) fn describe() -> Self {
        let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
        let cpu_model = cpuinfo
            .lines()
            .find_map(|line| line.strip_prefix("model name"))
            .and_then(|rest| rest.split_once(':'))
            .map_or_else(|| "unknown".into(), |(_, model)| model.trim().to_string());
        let cores = os::cores();
        Self {
            cpu_model,
            cores,
            kernel: first_line(fs::read_to_string("/proc/sys/kernel/osrelease").ok()),
            rustc: output_of("rustc", &["--version"]),
            date: output_of("date", &["-u", "+%Y-%m-%d %H:%M UTC"]),
            load_before: load_average(),
            crates: locked_versions(),
        }
    }
}

/// The 1, 5 and 15 minute load averages.
pub(crate) fn load_average() -> String {
    let text = fs::read_to_string("/proc/loadavg").unwrap_or_default();
    text.split_whitespace()
        .take(3)
        .collect::<Vec<_>>()
        .join(" ")
}

fn first_line(text: Option<String>) -> String {
    text.and_then(|text| text.lines().next().map(str::to_string))
        .unwrap_or_else(|| "unknown".into())
}

fn output_of(program: &str, args: &[&str]) -> String {
    let output = Command::new(program).args(args).output().ok();
    first_line(output.map(|output| String::from_utf8_lossy(&output.stdout).into_owned()))
}

/// Versions of the crates under test, as `Cargo.lock` pins them.
fn locked_versions() -> Vec<String> {
    const CRATES: [&str; 4] = [
        "tokio-tungstenite",
        "fastwebsockets",
        "tokio-websockets",
        "tokio",
    ];
    let lock =
        fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/Cargo.lock")).unwrap_or_default();
    let mut lines = lock.lines();
    let mut found = Vec::new();
    while let Some(line) = lines.next() {
        let Some(name) = line
            .strip_prefix("name = \"")
            .and_then(|rest| rest.strip_suffix('"'))
        else {
            continue;
        };
        if !CRATES.contains(&name) {
            continue;
        }
        if let Some(version) = lines
            .next()
            .and_then(|line| line.strip_prefix("version = \""))
            .and_then(|rest| rest.strip_suffix('"'))
        {
            found.push(format!("{name} {version}"));
        }
    }
    found
}
