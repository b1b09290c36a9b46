//! The loopback TCP write floor: `loopback-floor` pinned to the server's
//! core, once per run. A broadcast delivery costs at least one such write,
//! so RESULTS.md states it next to the machine it was measured on.

use std::time::Duration;

use serde_json::Value;

use crate::measure::{Settings, pinned, run_to_json};

/// Connected pairs: 18,000 descriptors, within one process's 20,000.
const CONNS: usize = 9_000;
/// Bytes per write: a small WebSocket text frame.
const SIZE: usize = 30;
const ROUNDS: usize = 5;
/// Opening 9,000 pairs and 5 rounds take about a second.
const LIMIT: Duration = Duration::from_secs(60);

/// CPU time of one write, in microseconds: the median of the rounds and
/// their least and greatest.
#[derive(Debug, Clone, Copy, PartialEq)]
pub(crate) struct Floor {
    pub(crate) conns: usize,
    pub(crate) size: usize,
    pub(crate) rounds: usize,
    pub(crate) median_us: f64,
    pub(crate) min_us: f64,
    pub(crate) max_us: f64,
}

#[cfg(test)]
impl Floor {
    /// What a run on the machine of 2026-11-24 measured, for tests.
    pub(crate) fn example() -> Self {
        Self {
            conns: 9000,
            size: 30,
            rounds: 5,
            median_us: 6.4,
            min_us: 6.3,
            max_us: 6.8,
        }
    }
}

/// Runs `loopback-floor` on the server's core.
pub(crate) fn measure(settings: &Settings) -> Result<Floor, String> {
    let mut command = pinned(settings, &[settings.server_core], "loopback-floor");
    command
        .args(["--conns", &CONNS.to_string()])
        .args(["--size", &SIZE.to_string()])
        .args(["--rounds", &ROUNDS.to_string()])
        .arg("--json");
    parse(&run_to_json(command, "loopback-floor", LIMIT)?)
}

fn parse(report: &Value) -> Result<Floor, String> {
    let number = |value: &Value| {
        value
            .as_f64()
            .ok_or_else(|| format!("unreadable loopback-floor report: {report}"))
    };
    let count = |value: &Value| {
        value
            .as_u64()
            .map(|count| count as usize)
            .ok_or_else(|| format!("unreadable loopback-floor report: {report}"))
    };
    let cpu = &report["cpu_us_per_write"];
    Ok(Floor {
        conns: count(&report["conns"])?,
        size: count(&report["size"])?,
        rounds: count(&report["rounds"])?,
        median_us: number(&cpu["median"])?,
        min_us: number(&cpu["min"])?,
        max_us: number(&cpu["max"])?,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_json_report() {
        let report = serde_json::json!({
            "conns": 9000, "size": 30, "rounds": 5,
            "cpu_us_per_write": {"median": 6.4, "min": 6.3, "max": 6.8},
            "wall_us_per_write": {"median": 6.5, "min": 6.3, "max": 6.9},
            "writes_per_s": 156_000.0,
        });
        assert_eq!(parse(&report), Ok(Floor::example()));
        assert!(parse(&serde_json::json!({"conns": 9000})).is_err());
    }
}
