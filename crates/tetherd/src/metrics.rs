//! Counters exposed at `/metrics` in the Prometheus text format.

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

/// Monotonic counters; gauges are computed when rendering.
#[derive(Debug, Default)]
pub(crate) struct Metrics {
    pub(crate) connections_total: AtomicU64,
    pub(crate) messages_in: AtomicU64,
    pub(crate) messages_out: AtomicU64,
    pub(crate) bytes_in: AtomicU64,
    pub(crate) bytes_out: AtomicU64,
    pub(crate) publications: AtomicU64,
    pub(crate) slow_disconnects: AtomicU64,
    /// Sum and count of publish latencies (API call to broker ack), in µs.
    pub(crate) publish_micros_sum: AtomicU64,
    pub(crate) publish_count: AtomicU64,
    /// Refused handshakes by HTTP status.
    refusals: [AtomicU64; REFUSAL_STATUSES.len()],
}

/// Statuses a handshake refusal can have; anything else counts as 500.
const REFUSAL_STATUSES: [u16; 8] = [400, 401, 403, 405, 426, 431, 503, 500];

/// Gauges the node knows at render time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    pub(crate) connections: usize,
    pub(crate) subscriptions: usize,
    pub(crate) channels: usize,
    pub(crate) draining: bool,
}

impl Metrics {
    /// Counts a refused handshake.
    pub(crate) fn refused(&self, status: u16) {
        let slot = REFUSAL_STATUSES
            .iter()
            .position(|&s| s == status)
            .unwrap_or(REFUSAL_STATUSES.len() - 1);
        self.refusals[slot].fetch_add(1, Ordering::Relaxed);
    }

    /// The text exposition.
    pub(crate) fn render(&self, gauges: Gauges) -> String {
        let mut out = String::new();
        let mut metric = |name: &str, kind: &str, help: &str, value: u64| {
            let _ = writeln!(
                out,
                "# HELP tether_{name} {help}\n# TYPE tether_{name} {kind}\ntether_{name} {value}"
            );
        };
        let load = |counter: &AtomicU64| counter.load(Ordering::Relaxed);
        metric(
            "connections",
            "gauge",
            "Open client connections.",
            gauges.connections as u64,
        );
        metric(
            "subscriptions",
            "gauge",
            "Channel subscriptions of local clients.",
            gauges.subscriptions as u64,
        );
        metric(
            "channels",
            "gauge",
            "Channels with local subscribers.",
            gauges.channels as u64,
        );
        metric(
            "draining",
            "gauge",
            "1 while the node drains.",
            u64::from(gauges.draining),
        );
        metric(
            "connections_total",
            "counter",
            "Client connections accepted.",
            load(&self.connections_total),
        );
        metric(
            "messages_in_total",
            "counter",
            "Protocol commands received.",
            load(&self.messages_in),
        );
        metric(
            "messages_out_total",
            "counter",
            "Pushes and replies queued to clients.",
            load(&self.messages_out),
        );
        metric(
            "bytes_in_total",
            "counter",
            "Bytes of commands received.",
            load(&self.bytes_in),
        );
        metric(
            "bytes_out_total",
            "counter",
            "Bytes queued to clients.",
            load(&self.bytes_out),
        );
        metric(
            "publications_total",
            "counter",
            "Publications accepted.",
            load(&self.publications),
        );
        metric(
            "slow_disconnects_total",
            "counter",
            "Clients disconnected for falling behind.",
            load(&self.slow_disconnects),
        );
        metric(
            "publish_latency_microseconds_sum",
            "counter",
            "Total publish latency.",
            load(&self.publish_micros_sum),
        );
        metric(
            "publish_latency_microseconds_count",
            "counter",
            "Publishes timed.",
            load(&self.publish_count),
        );
        let _ = writeln!(
            out,
            "# HELP tether_handshake_refusals_total Handshakes refused, by HTTP status."
        );
        let _ = writeln!(out, "# TYPE tether_handshake_refusals_total counter");
        for (status, counter) in REFUSAL_STATUSES.iter().zip(&self.refusals) {
            let _ = writeln!(
                out,
                "tether_handshake_refusals_total{{status=\"{status}\"}} {}",
                load(counter)
            );
        }
        out
    }
}
