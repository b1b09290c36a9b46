//! Counters exposed at `/metrics` in the Prometheus text format (0.0.4),
//! kept and written by `prometheus-client`.
//!
//! Counters and gauges are atomics; the latency histograms take a short
//! lock per publication (not per delivery). Gauges the node knows only
//! when asked (connections, subscriptions, channels, draining) are set when
//! the page is rendered.

use std::time::{Duration, Instant};

use bytes::Bytes;
use prometheus_client::{
    encoding::{EncodeLabelSet, prometheus_text},
    metrics::{counter::Counter, family::Family, gauge::Gauge, histogram::Histogram},
    registry::Registry,
};

/// The exposition's `Content-Type`.
pub(crate) const CONTENT_TYPE: &str = prometheus_text::CONTENT_TYPE;

/// Upper bounds of the publish latency buckets, in seconds: from a
/// memory-broker append (tens of µs) to a Redis round trip under load (ms)
/// and a stalled one (s). Anything slower lands in `+Inf` only.
const PUBLISH_LATENCY_BOUNDS: [f64; 16] = [
    0.000_05, 0.000_1, 0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5,
    1.0, 2.5, 5.0,
];

/// What `tether_publish_latency_seconds` measures.
const PUBLISH_LATENCY_HELP: &str = "Time from handing a publication (API or client) to the broker until the broker acknowledged it: appended to history and queued for fan-out (memory) or the publish script's reply (Redis). Successful publishes only";

/// What `tether_fanout_seconds` measures.
const FANOUT_HELP: &str = "Time from a publication reaching this node (from the broker) until its push was handed to the socket of the last local subscriber that took it (written, or queued behind earlier writes). Publications with local subscribers only";

/// Statuses a handshake refusal can have; anything else counts as 500.
const REFUSAL_STATUSES: [u16; 8] = [400, 401, 403, 405, 426, 431, 503, 500];

/// Upper bounds of the proxy call buckets, in seconds: a backend on the
/// same host (sub-ms) to the default 1 s timeout and past it.
const PROXY_LATENCY_BOUNDS: [f64; 14] = [
    0.000_25, 0.000_5, 0.001, 0.002_5, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
];

/// The label of the proxy metrics.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProxyHook {
    hook: &'static str,
}

/// The labels of `tether_proxy_errors_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct ProxyFailure {
    hook: &'static str,
    kind: &'static str,
}

/// The label of `tether_handshake_refusals_total`.
#[derive(Debug, Clone, PartialEq, Eq, Hash, EncodeLabelSet)]
struct Refusal {
    status: u16,
}

/// The node's metrics, registered once.
#[derive(Debug)]
pub(crate) struct Metrics {
    registry: Registry,
    connections: Gauge,
    subscriptions: Gauge,
    channels: Gauge,
    draining: Gauge,
    pub(crate) connections_total: Counter,
    pub(crate) messages_in: Counter,
    pub(crate) messages_out: Counter,
    pub(crate) bytes_in: Counter,
    pub(crate) bytes_out: Counter,
    pub(crate) publications: Counter,
    pub(crate) slow_disconnects: Counter,
    /// permessage-deflate: pushes compressed (once per encoding, however
    /// many subscribers get them), the payload bytes of compressed pushes
    /// queued to clients, and the bytes they stood for.
    pub(crate) deflate_compressions: Counter,
    pub(crate) deflate_bytes_out: Counter,
    pub(crate) deflate_bytes_out_uncompressed: Counter,
    /// How long successful publishes waited for the broker, in seconds
    /// (see [`PUBLISH_LATENCY_HELP`]).
    pub(crate) publish_latency: Histogram,
    /// See [`FANOUT_HELP`] and [`Metrics::timed_push`].
    fanout: Histogram,
    refusals: Family<Refusal, Counter>,
    proxy_requests: Family<ProxyHook, Counter>,
    proxy_errors: Family<ProxyFailure, Counter>,
    proxy_latency: Family<ProxyHook, Histogram, fn() -> Histogram>,
}

/// A push's bytes, shared by every subscriber it is queued to. Dropped
/// when the last copy is: once every subscriber's connection has written
/// it or copied it into its write buffer on the way to the socket (or gave
/// up on it). The fan-out's time is taken then, with no cost per delivery.
struct TimedPush {
    bytes: Bytes,
    made: Instant,
    fanout: Histogram,
}

impl AsRef<[u8]> for TimedPush {
    fn as_ref(&self) -> &[u8] {
        &self.bytes
    }
}

impl Drop for TimedPush {
    fn drop(&mut self) {
        self.fanout.observe(self.made.elapsed().as_secs_f64());
    }
}

/// Gauges the node knows at render time.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Gauges {
    pub(crate) connections: usize,
    pub(crate) subscriptions: usize,
    pub(crate) channels: usize,
    pub(crate) draining: bool,
}

impl Metrics {
    /// `push` as bytes that record `tether_fanout_seconds` when their last
    /// copy is dropped.
    pub(crate) fn timed_push(&self, push: Bytes) -> Bytes {
        Bytes::from_owner(TimedPush {
            bytes: push,
            made: Instant::now(),
            fanout: self.fanout.clone(),
        })
    }

    /// Counts a refused handshake.
    pub(crate) fn refused(&self, status: u16) {
        let status = if REFUSAL_STATUSES.contains(&status) {
            status
        } else {
            500
        };
        self.refusals.get_or_create(&Refusal { status }).inc();
    }

    /// Counts a proxy call to `hook` that took `took` and failed with an
    /// error of `failed` kind, if it did.
    pub(crate) fn proxy_call(
        &self,
        hook: &'static str,
        took: Duration,
        failed: Option<&'static str>,
    ) {
        self.proxy_requests.get_or_create(&ProxyHook { hook }).inc();
        self.proxy_latency
            .get_or_create(&ProxyHook { hook })
            .observe(took.as_secs_f64());
        if let Some(kind) = failed {
            self.proxy_errors
                .get_or_create(&ProxyFailure { hook, kind })
                .inc();
        }
    }

    /// The text exposition.
    pub(crate) fn render(&self, gauges: Gauges) -> String {
        let gauge = |count: usize| i64::try_from(count).unwrap_or(i64::MAX);
        self.connections.set(gauge(gauges.connections));
        self.subscriptions.set(gauge(gauges.subscriptions));
        self.channels.set(gauge(gauges.channels));
        self.draining.set(i64::from(gauges.draining));
        let mut out = String::new();
        // Writing into a String cannot fail.
        let _ = prometheus_text::encode(&mut out, &self.registry);
        out
    }
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let mut gauge = |name: &str, help: &str| {
            let gauge = Gauge::default();
            registry.register(format!("tether_{name}"), help, gauge.clone());
            gauge
        };
        let connections = gauge("connections", "Open client connections");
        let subscriptions = gauge("subscriptions", "Channel subscriptions of local clients");
        let channels = gauge("channels", "Channels with local subscribers");
        let draining = gauge("draining", "1 while the node drains");
        // Counters get their `_total` suffix from the encoder.
        let mut counter = |name: &str, help: &str| {
            let counter = Counter::default();
            registry.register(format!("tether_{name}"), help, counter.clone());
            counter
        };
        let connections_total = counter("connections", "Client connections accepted");
        let messages_in = counter("messages_in", "Protocol commands received");
        let messages_out = counter("messages_out", "Pushes and replies queued to clients");
        let bytes_in = counter("bytes_in", "Bytes of commands received");
        let bytes_out = counter("bytes_out", "Bytes queued to clients");
        let publications = counter("publications", "Publications accepted");
        let slow_disconnects = counter(
            "slow_disconnects",
            "Clients disconnected for falling behind",
        );
        let deflate_compressions = counter(
            "deflate_compressions",
            "Pushes compressed with permessage-deflate (once per parameter set, however many subscribers)",
        );
        let deflate_bytes_out = counter(
            "deflate_bytes_out",
            "Payload bytes of compressed pushes queued to clients",
        );
        let deflate_bytes_out_uncompressed = counter(
            "deflate_bytes_out_uncompressed",
            "Uncompressed size of the compressed pushes queued to clients",
        );
        let refusals = Family::<Refusal, Counter>::default();
        for status in REFUSAL_STATUSES {
            // Every status is listed from the start, at 0.
            let _ = refusals.get_or_create(&Refusal { status });
        }
        registry.register(
            "tether_handshake_refusals",
            "Handshakes refused, by HTTP status",
            refusals.clone(),
        );
        let publish_latency = Histogram::new(PUBLISH_LATENCY_BOUNDS);
        registry.register(
            "tether_publish_latency_seconds",
            PUBLISH_LATENCY_HELP,
            publish_latency.clone(),
        );
        let fanout = Histogram::new(PUBLISH_LATENCY_BOUNDS);
        registry.register("tether_fanout_seconds", FANOUT_HELP, fanout.clone());
        let proxy_requests = Family::<ProxyHook, Counter>::default();
        registry.register(
            "tether_proxy_requests",
            "Calls to the application's backend (proxy hooks), by hook",
            proxy_requests.clone(),
        );
        let proxy_errors = Family::<ProxyFailure, Counter>::default();
        registry.register(
            "tether_proxy_errors",
            "Proxy calls that gave no usable answer, by hook and kind: timeout, connection, status (not 200), too_large, malformed",
            proxy_errors.clone(),
        );
        let proxy_latency: Family<ProxyHook, Histogram, fn() -> Histogram> =
            Family::new_with_constructor(|| Histogram::new(PROXY_LATENCY_BOUNDS));
        registry.register(
            "tether_proxy_duration_seconds",
            "Time of proxy calls, answered or not, by hook",
            proxy_latency.clone(),
        );
        Self {
            registry,
            connections,
            subscriptions,
            channels,
            draining,
            connections_total,
            messages_in,
            messages_out,
            bytes_in,
            bytes_out,
            publications,
            slow_disconnects,
            deflate_compressions,
            deflate_bytes_out,
            deflate_bytes_out_uncompressed,
            publish_latency,
            fanout,
            refusals,
            proxy_requests,
            proxy_errors,
            proxy_latency,
        }
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    /// `(name with labels, value)` of every sample line.
    fn samples(metrics: &Metrics) -> Vec<(String, f64)> {
        let gauges = Gauges {
            connections: 3,
            subscriptions: 5,
            channels: 2,
            draining: false,
        };
        metrics
            .render(gauges)
            .lines()
            .filter(|line| !line.starts_with('#'))
            .map(|line| {
                let (key, value) = line.rsplit_once(' ').unwrap();
                (key.to_owned(), value.parse().unwrap())
            })
            .collect()
    }

    /// The publish latency's `(le, cumulative count)` pairs, sum and count.
    fn latency(metrics: &Metrics) -> (Vec<(f64, u64)>, f64, u64) {
        let name = "tether_publish_latency_seconds";
        let (mut buckets, mut sum, mut count) = (Vec::new(), f64::NAN, u64::MAX);
        for (key, value) in samples(metrics) {
            if let Some(le) = key.strip_prefix(&format!("{name}_bucket{{le=\"")) {
                let le = le.strip_suffix("\"}").unwrap();
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                buckets.push((le, value as u64));
            } else if key == format!("{name}_sum") {
                sum = value;
            } else if key == format!("{name}_count") {
                count = value as u64;
            }
        }
        (buckets, sum, count)
    }

    fn observe(metrics: &Metrics, duration: Duration) {
        metrics.publish_latency.observe(duration.as_secs_f64());
    }

    #[test]
    fn a_push_is_timed_when_its_last_copy_is_dropped() {
        let metrics = Metrics::default();
        let count = |metrics: &Metrics| {
            samples(metrics)
                .into_iter()
                .find(|(key, _)| key == "tether_fanout_seconds_count")
                .map(|(_, value)| value)
        };
        let push = metrics.timed_push(Bytes::from_static(b"{\"push\":{}}"));
        let copies = [push.clone(), push.slice(1..5)];
        assert_eq!(&push[..], b"{\"push\":{}}");
        drop(push);
        drop(copies[0].clone());
        assert_eq!(count(&metrics), Some(0.0));
        drop(copies);
        assert_eq!(count(&metrics), Some(1.0));
    }

    #[test]
    fn the_exposition_keeps_its_names() {
        let metrics = Metrics::default();
        metrics.messages_in.inc_by(7);
        metrics.refused(403);
        metrics.refused(418);
        let samples = samples(&metrics);
        let value = |name: &str| {
            samples
                .iter()
                .find(|(key, _)| key == name)
                .unwrap_or_else(|| panic!("{name} in {samples:?}"))
                .1
        };
        assert_eq!(value("tether_connections"), 3.0);
        assert_eq!(value("tether_subscriptions"), 5.0);
        assert_eq!(value("tether_channels"), 2.0);
        assert_eq!(value("tether_draining"), 0.0);
        assert_eq!(value("tether_messages_in_total"), 7.0);
        assert_eq!(value("tether_connections_total"), 0.0);
        assert_eq!(value("tether_deflate_bytes_out_uncompressed_total"), 0.0);
        assert_eq!(
            value("tether_handshake_refusals_total{status=\"403\"}"),
            1.0
        );
        assert_eq!(
            value("tether_handshake_refusals_total{status=\"500\"}"),
            1.0,
            "an unlisted status counts as 500"
        );
        assert_eq!(
            value("tether_handshake_refusals_total{status=\"431\"}"),
            0.0,
            "listed before any refusal"
        );
    }

    #[test]
    fn an_observation_counts_in_the_first_bucket_that_holds_it_and_all_above() {
        let metrics = Metrics::default();
        for micros in [0, 50, 51, 1_000, 1_001, 5_000_000, 5_000_001, 60_000_000] {
            observe(&metrics, Duration::from_micros(micros));
        }
        let (buckets, sum, count) = latency(&metrics);
        let expected = [
            (0.00005, 2), // 0 and exactly 50 µs: `le` includes the bound
            (0.0001, 3),
            (0.00025, 3),
            (0.0005, 3),
            (0.001, 4),
            (0.0025, 5),
            (0.005, 5),
            (0.01, 5),
            (0.025, 5),
            (0.05, 5),
            (0.1, 5),
            (0.25, 5),
            (0.5, 5),
            (1.0, 5),
            (2.5, 5),
            (5.0, 6),
            (f64::INFINITY, 8),
        ];
        assert_eq!(buckets, expected);
        assert_eq!(count, 8);
        let exact = (50 + 51 + 1_000 + 1_001 + 5_000_000 + 5_000_001 + 60_000_000) as f64 / 1e6;
        assert!((sum - exact).abs() < 1e-9, "{sum} vs {exact}");
    }

    #[test]
    fn a_nanosecond_past_a_bound_is_in_the_next_bucket() {
        let metrics = Metrics::default();
        observe(&metrics, Duration::from_nanos(50_001));
        let (buckets, _, _) = latency(&metrics);
        assert_eq!(buckets[0], (0.00005, 0));
        assert_eq!(buckets[1], (0.0001, 1));
    }

    #[test]
    fn an_empty_histogram_renders_zeroes() {
        let (buckets, sum, count) = latency(&Metrics::default());
        assert_eq!(buckets.len(), PUBLISH_LATENCY_BOUNDS.len() + 1);
        assert!(buckets.iter().all(|(_, count)| *count == 0));
        assert_eq!((sum, count), (0.0, 0));
    }
}
