//! Counters exposed at `/metrics` in the Prometheus text format.

mod histogram;

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
};

use histogram::DurationHistogram;

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
    /// permessage-deflate: pushes compressed (once per encoding, however
    /// many subscribers get them), the payload bytes of compressed pushes
    /// queued to clients, and the bytes they stood for.
    pub(crate) deflate_compressions: AtomicU64,
    pub(crate) deflate_bytes_out: AtomicU64,
    pub(crate) deflate_bytes_out_uncompressed: AtomicU64,
    /// How long successful publishes waited for the broker (see
    /// [`PUBLISH_LATENCY_HELP`]).
    pub(crate) publish_latency: DurationHistogram,
    /// Refused handshakes by HTTP status.
    refusals: [AtomicU64; REFUSAL_STATUSES.len()],
}

/// What `tether_publish_latency_seconds` measures.
const PUBLISH_LATENCY_HELP: &str = "Time from handing a publication (API or client) to the broker until the broker acknowledged it: appended to history and queued for fan-out (memory) or the publish script's reply (Redis). Successful publishes only.";

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
            "deflate_compressions_total",
            "counter",
            "Pushes compressed with permessage-deflate (once per parameter set, however many subscribers).",
            load(&self.deflate_compressions),
        );
        metric(
            "deflate_bytes_out_total",
            "counter",
            "Payload bytes of compressed pushes queued to clients.",
            load(&self.deflate_bytes_out),
        );
        metric(
            "deflate_bytes_out_uncompressed_total",
            "counter",
            "Uncompressed size of the compressed pushes queued to clients.",
            load(&self.deflate_bytes_out_uncompressed),
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
        self.publish_latency.render(
            &mut out,
            "tether_publish_latency_seconds",
            PUBLISH_LATENCY_HELP,
        );
        out
    }
}
