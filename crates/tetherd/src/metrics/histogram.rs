//! A Prometheus histogram of durations with fixed buckets, updated with
//! atomics only (no lock on the publish path).

use std::{
    fmt::Write,
    sync::atomic::{AtomicU64, Ordering},
    time::Duration,
};

/// Upper bounds of the buckets, in microseconds: from a memory-broker
/// append (tens of µs) to a Redis round trip under load (ms) and a stalled
/// one (s). Anything slower lands in `+Inf` only.
const BOUNDS_MICROS: [u64; 16] = [
    50, 100, 250, 500, 1_000, 2_500, 5_000, 10_000, 25_000, 50_000, 100_000, 250_000, 500_000,
    1_000_000, 2_500_000, 5_000_000,
];

/// Observations per bucket (not cumulative) plus their sum.
#[derive(Debug, Default)]
pub(crate) struct DurationHistogram {
    /// `counts[i]` holds observations in `(BOUNDS[i-1], BOUNDS[i]]`; the last
    /// slot those above every bound.
    counts: [AtomicU64; BOUNDS_MICROS.len() + 1],
    sum_nanos: AtomicU64,
}

impl DurationHistogram {
    /// Records one observation.
    pub(crate) fn observe(&self, duration: Duration) {
        let nanos = duration.as_nanos();
        let slot = BOUNDS_MICROS.partition_point(|&bound| u128::from(bound) * 1_000 < nanos);
        self.counts[slot].fetch_add(1, Ordering::Relaxed);
        let nanos = u64::try_from(nanos).unwrap_or(u64::MAX);
        self.sum_nanos.fetch_add(nanos, Ordering::Relaxed);
    }

    /// Appends the exposition of `name` (cumulative `_bucket` lines,
    /// `_sum` and `_count`, in seconds). `_count` is the `+Inf` bucket, so
    /// the two agree even while observations race with rendering.
    pub(crate) fn render(&self, out: &mut String, name: &str, help: &str) {
        let _ = writeln!(out, "# HELP {name} {help}\n# TYPE {name} histogram");
        let mut cumulative = 0;
        for (bound, count) in BOUNDS_MICROS.iter().zip(&self.counts) {
            cumulative += count.load(Ordering::Relaxed);
            let le = *bound as f64 / 1e6;
            let _ = writeln!(out, "{name}_bucket{{le=\"{le}\"}} {cumulative}");
        }
        cumulative += self.counts[BOUNDS_MICROS.len()].load(Ordering::Relaxed);
        let sum = self.sum_nanos.load(Ordering::Relaxed) as f64 / 1e9;
        let _ = writeln!(
            out,
            "{name}_bucket{{le=\"+Inf\"}} {cumulative}\n{name}_sum {sum}\n{name}_count {cumulative}"
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The `(le, cumulative count)` pairs and the sum and count rendered.
    fn rendered(histogram: &DurationHistogram) -> (Vec<(String, u64)>, f64, u64) {
        let mut out = String::new();
        histogram.render(&mut out, "t", "help");
        let mut buckets = Vec::new();
        let (mut sum, mut count) = (f64::NAN, u64::MAX);
        for line in out.lines().filter(|line| !line.starts_with('#')) {
            let (key, value) = line.rsplit_once(' ').unwrap();
            if let Some(le) = key.strip_prefix("t_bucket{le=\"") {
                let le = le.strip_suffix("\"}").unwrap();
                buckets.push((le.to_owned(), value.parse().unwrap()));
            } else if key == "t_sum" {
                sum = value.parse().unwrap();
            } else {
                assert_eq!(key, "t_count");
                count = value.parse().unwrap();
            }
        }
        (buckets, sum, count)
    }

    #[test]
    fn an_observation_counts_in_the_first_bucket_that_holds_it_and_all_above() {
        let histogram = DurationHistogram::default();
        for micros in [0, 50, 51, 1_000, 1_001, 5_000_000, 5_000_001, 60_000_000] {
            histogram.observe(Duration::from_micros(micros));
        }
        let (buckets, sum, count) = rendered(&histogram);
        let expected: Vec<(String, u64)> = [
            ("0.00005", 2), // 0 and exactly 50 µs: `le` includes the bound
            ("0.0001", 3),
            ("0.00025", 3),
            ("0.0005", 3),
            ("0.001", 4),
            ("0.0025", 5),
            ("0.005", 5),
            ("0.01", 5),
            ("0.025", 5),
            ("0.05", 5),
            ("0.1", 5),
            ("0.25", 5),
            ("0.5", 5),
            ("1", 5),
            ("2.5", 5),
            ("5", 6),
            ("+Inf", 8),
        ]
        .into_iter()
        .map(|(le, count)| (le.to_owned(), count))
        .collect();
        assert_eq!(buckets, expected);
        assert_eq!(count, 8);
        let exact = (50 + 51 + 1_000 + 1_001 + 5_000_000 + 5_000_001 + 60_000_000) as f64 / 1e6;
        assert!((sum - exact).abs() < 1e-9, "{sum} vs {exact}");
    }

    #[test]
    fn a_nanosecond_past_a_bound_is_in_the_next_bucket() {
        let histogram = DurationHistogram::default();
        histogram.observe(Duration::from_nanos(50_001));
        let (buckets, _, _) = rendered(&histogram);
        assert_eq!(buckets[0], ("0.00005".to_owned(), 0));
        assert_eq!(buckets[1], ("0.0001".to_owned(), 1));
    }

    #[test]
    fn an_empty_histogram_renders_zeroes() {
        let (buckets, sum, count) = rendered(&DurationHistogram::default());
        assert_eq!(buckets.len(), BOUNDS_MICROS.len() + 1);
        assert!(buckets.iter().all(|(_, count)| *count == 0));
        assert_eq!((sum, count), (0.0, 0));
    }
}
